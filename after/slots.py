"""Job threads: claim and start only what the pool can start now.

A task that falls due while every job thread is taken stays ``scheduled`` (held, on purpose
with no timer entry) in :attr:`Slots.waiting` and starts when a thread frees up: higher
``priority`` first, then oldest (:mod:`after.priorities`). Hung jobs hold their threads, so
they stop new starts instead of leaving later tasks marked ``running`` with nothing behind
them (issue 13).

Counted once a turn: :meth:`Slots.count` takes the runs going (a timed-out run's thread too,
until its job returns); :meth:`Slots.take` reserves one for a start decided this turn. A
start still being written holds no thread: counting those made the write latency the limit
(8 starts per round trip; on a loaded cluster, tasks 18 s late). Belongs to the loop: no
locks.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from . import priorities


class Slots:
    def __init__(self, pool: int):
        self.pool = pool
        self.busy = 0  # job threads taken at the start of the turn
        self.reserved = 0  # starts decided this turn, not written yet
        self.waiting: dict[str, None] = {}  # held tasks due, in the order they fell due

    def count(self, active: Collection) -> None:
        self.busy = len(active)

    def free(self) -> bool:
        return self.busy + self.reserved < self.pool

    def take(self, ahead: bool = False) -> bool:
        """Reserve a thread for a start decided now, if one is free. A start written ahead
        of its due instant (``ahead``, the lead window) reserves nothing: its job begins at
        that instant, when the pool queues it like any other; it only needs a thread free
        now, so that hung jobs stop fences. (Reserving one per fence let a turn write no
        more fences than the pool has threads: 500 tasks due at one instant ran up to 1.1 s
        late, 8 per round trip, instead of 18 ms.)"""
        if ahead:
            return self.busy < self.pool
        if not self.free():
            return False
        self.reserved += 1
        return True

    def wait(self, docid: str) -> None:
        self.waiting[docid] = None

    def next_waiting(self, held: Mapping | None = None) -> str | None:
        """The task to start next, if a thread is free for it (then reserve it with
        :meth:`take`, or let it go): of those ``held``, the highest priority, then the
        earliest due (:func:`after.priorities.first`); else the one that waited longest."""
        if not self.waiting or not self.free():
            return None
        docid = priorities.first(self.waiting, held) if held is not None \
            else next(iter(self.waiting))
        del self.waiting[docid]
        return docid

    def end_turn(self) -> None:
        self.reserved = 0
