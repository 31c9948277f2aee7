"""What one worker process holds in memory, and the in-memory half of each decision.

:class:`Holding` keeps the tasks held on the timer or running (:class:`~after.runner.Held`),
the deferred claims, the newest revision seen of each task, what the database says this
process owns, and the tasks waiting for a peer's liveness; :meth:`Holding.apply` does what
:func:`after.decide.decide` says to do in memory and returns the writes. It belongs to the
worker's loop: no locks, no I/O (the timer is the one shared structure, and locks itself).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from . import decide as d
from . import priorities
from . import task as rules
from .dates import to_ms
from .runner import Held, Seen
from .selfcheck import stuck
from .timer import Timer

log = logging.getLogger("after.worker")

# Timer keys: (RUN, id) fires a held task, (CLAIM, id) a deferred claim, (FENCE, id) the
# write of a held task's start ahead of its due instant (the lead window). Tuples, so that no
# task id, whatever characters it holds, can collide with another kind of key.
RUN, CLAIM, FENCE = "run", "claim", "fence"


class Holding:
    def __init__(self, timer: Timer, me: str, claim_delay: float,
                 ask: Callable[[str], None], lead: float = 0.0,
                 wait: Callable[[str, tuple], None] = lambda docid, rank: None):
        self.timer, self.me, self.claim_delay, self.ask = timer, me, claim_delay, ask
        self.wait = wait  # in line for the pool (Slots.wait)
        self.lead_ms = int(lead * 1000)
        self.held: dict[str, Held] = {}
        self.deferred: dict[str, d.Defer] = {}
        # due, not claimed: claimed and started as the pool has room (Slots.waiting)
        self.queued: dict[str, d.Wait] = {}
        self.seen = Seen()  # the newest revision seen or written of each task
        self.owned: dict[str, str] = {}  # ours in the database: id -> scheduled/running
        self.awaiting: dict[str, list[dict]] = {}  # owner -> tasks decided once it is known
        self.suspects: dict = {}  # what the last self-check found wrong

    def apply(self, actions: list[d.Action], now: datetime) -> list[d.Write]:
        """Do in memory what :func:`after.decide.decide` says; return the writes."""
        writes = []
        for action in actions:
            if isinstance(action, d.Write):
                writes.append(action)
            elif isinstance(action, d.Drop):
                self.drop(action.docid)
            elif isinstance(action, d.Hold):
                self.hold(action.doc, action.spec, action.due)
            elif isinstance(action, d.Wait):
                self.queued[action.doc["_id"]] = action
                self.wait(action.doc["_id"], priorities.rank(action.doc, to_ms(action.due)))
            elif isinstance(action, d.Defer):
                self.deferred[action.doc["_id"]] = action
                self.timer.add((CLAIM, action.doc["_id"]),
                               to_ms(now) + int(self.claim_delay * 1000), None)
            elif isinstance(action, d.Keep):
                if action.doc["_id"] in self.held:
                    self.held[action.doc["_id"]].doc = action.doc
            elif isinstance(action, d.Restart):
                log.warning("task %s is running under this process with no run behind it "
                            "(a lost answer): starting it again", action.doc["_id"])
                held = self.held.setdefault(action.doc["_id"], Held(
                    action.doc, action.spec, to_ms(action.due)))
                held.doc = action.doc
                self.timer.add((RUN, action.doc["_id"]), to_ms(now), None)
            elif isinstance(action, d.Confirm):
                if action.owner not in self.awaiting:
                    self.ask(action.owner)
                self.awaiting.setdefault(action.owner, []).append(action.doc)
        return writes

    def track(self, doc: dict) -> None:
        """Remember whether ``doc`` (a version we wrote or read) is ours to run."""
        info = rules.info(doc)
        if doc.get("status") in (rules.SCHEDULED, rules.RUNNING) \
                and info.get("owner") == self.me:
            self.owned[doc["_id"]] = doc["status"]
        else:
            self.owned.pop(doc["_id"], None)

    def hold(self, doc: dict, spec: rules.Spec, due: datetime) -> None:
        held = self.held.get(doc["_id"])
        if held is not None and held.running:
            held.doc = doc
            return
        self.held[doc["_id"]] = Held(doc=doc, spec=spec, due_ms=to_ms(due))
        self.timer.add((RUN, doc["_id"]), to_ms(due), None)
        if self.lead_ms:
            self.timer.add((FENCE, doc["_id"]), to_ms(due) - self.lead_ms, None)

    def drop(self, docid: str) -> None:
        """Forget a task held (not running) or deferred."""
        held = self.held.get(docid)
        if held is not None and not held.running:
            del self.held[docid]
            self.timer.remove((RUN, docid))
            self.timer.remove((FENCE, docid))
        if self.deferred.pop(docid, None) is not None:
            self.timer.remove((CLAIM, docid))
        self.queued.pop(docid, None)

    def forget(self, docid: str) -> None:
        """Nothing of ``docid`` stays in memory: not held, not timed, not deferred."""
        self.held.pop(docid, None)
        self.timer.remove((RUN, docid))
        self.timer.remove((FENCE, docid))
        if self.deferred.pop(docid, None) is not None:
            self.timer.remove((CLAIM, docid))
        self.queued.pop(docid, None)

    def let_go(self) -> list[d.Write]:
        """The worker name was paused: forget what is deferred, and hand back, ``waiting``,
        every task held on the timer (a fenced start whose job has not begun is undone);
        runs going carry on."""
        for docid in list(self.deferred):
            self.drop(docid)
        self.queued.clear()
        writes = []
        for docid, held in list(self.held.items()):
            if held.running and not held.waiting_to_launch:
                continue
            doc = rules.unfence(held.doc) if held.waiting_to_launch else held.doc
            self.forget(docid)
            writes.append(d.Write(d.Kind.HANDBACK, rules.hand_back(doc)))
        return writes

    def check(self, active: set[str], writing: set[str]) -> list[tuple[str, str, str]]:
        """The self-check (:func:`after.selfcheck.stuck`): forget what it finds, so that it
        is decided again from the database; returns it."""
        broken, self.suspects = stuck(self.owned, self.held,
                                      lambda docid: (RUN, docid) in self.timer, active,
                                      writing, self.suspects)
        for docid, status, why in broken:
            log.warning("self-check: task %s is %s under this process with %s: deciding "
                        "again", docid, status, why)
            self.forget(docid)
            self.owned.pop(docid, None)
            self.seen.pop(docid, None)
        return broken
