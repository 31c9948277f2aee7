"""Job threads: claim and start only what the pool can begin soon.

A task held on the timer that falls due while the pool is full stays ``scheduled`` (held,
on purpose with no timer entry) in :attr:`Slots.waiting` and starts when a thread frees up;
one found already due then is not claimed at all (``waiting``, in
:attr:`after.holding.Holding.queued`: no write, and the other processes of the name may take
it) and is claimed and started as a thread frees up. Either way higher ``priority`` first,
then oldest (:mod:`after.priorities`). Hung jobs hold their threads, so they stop new starts
instead of leaving later tasks marked ``running`` with nothing behind them (issue 13).

"Full" counts the threads, plus a queue (:attr:`Slots.depth`) as deep as the pool works
through in half of :data:`QUEUED_GRACE` (or ``--lead``), judged by how long this process's
runs have lasted: none before the first run ends, and none while any run has been going for
that long (a thread may be hung). Short jobs (a backlog of quick ones) are started a batch
per round trip rather than ``--pool`` per round trip (measured: 2,000 no-op tasks drained at
251 tasks/s on pouchdb-server with no queue); a run the queue still holds after the grace is
handed back anyway (:meth:`after.reactions.Reactions._unbegun`).

Counted once a turn: :meth:`Slots.count` takes the runs going or queued (a timed-out run's
thread too, until its job returns); :meth:`Slots.take` reserves one for a start decided this
turn. A start still being written holds no thread: counting those made the write latency the
limit (8 starts per round trip; on a loaded cluster, tasks 18 s late). Belongs to the loop:
no locks.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection

#: Seconds a run may wait in the job threads' queue before it is handed back (at least).
QUEUED_GRACE = 2.0
#: Weight of the newest run in the running mean of run durations.
SMOOTHING = 0.2


class Slots:
    def __init__(self, pool: int, grace: float = QUEUED_GRACE, most: int = 500):
        self.pool = pool
        self.grace = grace  # how long a run may wait in the queue (QUEUED_GRACE)
        self.most = most  # the deepest queue (a write batch)
        self.busy = 0  # runs going or queued at the start of the turn
        self.depth = 0  # runs that may wait in the queue, this turn
        self.reserved = 0  # starts decided this turn, not written yet
        self.mean: float | None = None  # seconds a run lasts, as measured
        # tasks due, waiting for room: id -> its rank (after.priorities.rank); the line is
        # a heap of (rank, arrival, id), an entry whose rank is no longer the id's skipped
        self.waiting: dict[str, tuple] = {}
        self.line: list[tuple] = []
        self.arrivals = itertools.count()

    def ran(self, seconds: float) -> None:
        """A run of this process ended after ``seconds``."""
        seconds = max(0.0, seconds)
        self.mean = seconds if self.mean is None else \
            (1 - SMOOTHING) * self.mean + SMOOTHING * seconds

    def count(self, active: Collection, longest: float = 0.0) -> None:
        """The runs going or queued (``active``), and how long the oldest has been going
        (``longest`` seconds)."""
        self.busy = len(active)
        self.depth = self.queue_depth(longest)

    def queue_depth(self, longest: float) -> int:
        half = self.grace / 2
        if self.mean is None or longest >= half:
            return 0
        return min(self.most, int(self.pool * half / max(self.mean, 1e-4)))

    def free(self) -> bool:
        return self.busy + self.reserved < self.pool + self.depth

    def take(self, ahead: bool = False) -> bool:
        """Reserve a thread (or a place in the queue) for a start decided now, if one is
        free. A start written ahead of its due instant (``ahead``, the lead window) reserves
        nothing: its job begins at that instant, when the pool queues it like any other; it
        only needs a thread free now, so that hung jobs stop fences. (Reserving one per fence
        let a turn write no more fences than the pool has threads: 500 tasks due at one
        instant ran up to 1.1 s late, 8 per round trip, instead of 18 ms.)"""
        if ahead:
            return self.busy < self.pool
        if not self.free():
            return False
        self.reserved += 1
        return True

    def wait(self, docid: str, rank: tuple = (0, 0)) -> None:
        """``docid`` waits for room, at ``rank`` (lower first; then first come)."""
        self.waiting[docid] = rank
        heapq.heappush(self.line, (rank, next(self.arrivals), docid))

    def clear(self) -> None:
        self.waiting.clear()
        self.line.clear()

    def next_waiting(self) -> str | None:
        """The task to start next, if there is room for it (then reserve it with
        :meth:`take`, or let it go): the lowest rank, then the first come."""
        if not self.free():
            return None
        while self.line:
            rank, _, docid = heapq.heappop(self.line)
            if self.waiting.get(docid) == rank:
                del self.waiting[docid]
                return docid
        self.waiting.clear()
        return None

    def end_turn(self) -> None:
        self.reserved = 0
