"""What each event of the worker's inbox does to what this process holds.

:class:`Reactions` is the half of :class:`~after.worker.Worker` that answers events, one
task at a time, with the writes to make: a changed task document is decided again
(:meth:`on_change`, through the pure :func:`after.decide.decide`); a timer entry fires a
held task, a deferred claim or a start written ahead (:meth:`on_fire`); a job thread's run
ends (:meth:`on_finished`) or passes its timeout (:meth:`_deadlines`). The worker's loop
(worker.py) collects those writes, flushes them and acts on what was written.

An exception while handling one event is that event's task's fault alone (faults.py).
Everything here runs on the loop's thread: no locks, and no I/O but a cluster's read-back
(confirm.py) and a job module's first import.
"""

from __future__ import annotations

import logging
from datetime import datetime

from . import decide as d
from . import faults, gates, oplog, overlap, priorities
from . import task as rules
from .dates import from_ms, to_ms
from .decide import Write
from .holding import CLAIM, FENCE, RUN
from .jobs import JobError
from .runner import Held, timed_out, unbegun

log = logging.getLogger("after.worker")


class Reactions:
    """Mixed into :class:`~after.worker.Worker`, whose state it reads and changes."""

    def _handle(self, kind: str, value, now: datetime) -> list[Write]:
        if kind in ("change", "recheck"):
            return self.on_change(value, recheck=kind == "recheck", now=now)
        if kind == "fire":
            return self.on_fire(value, now)
        if kind == "finished":
            return self.on_finished(*value, now=now)
        if kind == "unbegun":
            return self.on_unbegun(*value)
        if kind == "peer":  # whether an owner is dead is known: decide its tasks again
            docs = self.awaiting.pop(value, [])
            return [w for doc in docs for w in self.on_change(doc, recheck=True, now=now)]
        if kind == "dead":  # a peer's lease ran out: find its tasks now, not at the next poll
            self.poll_now.set()
            return []
        if kind == "paused":  # the name was paused or resumed (after.pausing)
            log.warning("worker %s %s", self.name, "paused: claiming nothing" if value
                        else "resumed")
            self.poll_now.set()
            if not value:
                return []
            self.slots.clear()
            return self.mem.let_go()
        if kind == "deleted":
            self.mem.apply([d.Drop(value)], now)
        elif kind == "feed":
            self.emit("feed", connected=value)
            self.feed_lost = self.feed_lost or not value
            if value and self.feed_lost:
                self.poll_now.set()  # re-check everything after a reconnect
        return []

    def _unexpected(self, kind: str, value, exc: Exception, now: datetime) -> list[Write]:
        docid, doc = faults.event_task(kind, value)
        if docid is None:
            log.exception("unexpected error handling %s", kind)
            return []
        return self._fault(docid, exc, "process", now, doc)

    def _fault(self, docid: str, exc: BaseException, stage: str, now: datetime,
               doc: dict | None = None) -> list[Write]:
        """Confine a failure to its task (see faults.py)."""
        held = self.held.get(docid)
        self.mem.forget(docid)
        self.counts["faults"] += 1
        self.emit("fault")
        doc = doc if doc is not None or held is None else held.doc
        return faults.error_write(docid, exc, stage, doc, self.name, now)

    # -- deciding ----------------------------------------------------------------------------

    def view(self) -> d.View:
        return d.View(me=self.me, horizon_ms=int(self.settings.horizon * 1000),
                      held={k: h.running for k, h in self.held.items()},
                      liveness=self.peers.liveness, preferred=self.peers.preferred,
                      check_job=self._job, can_start=self.slots.take, lead_ms=self.lead_ms,
                      paused=self.away())

    def _fill_slots(self, now: datetime) -> list[Write]:
        """Start held tasks that fell due while every job thread was taken, higher priority,
        then oldest, first."""
        writes: list[Write] = []
        self.slots.count(self.runner.active, self.runner.longest(now))
        while (docid := self.slots.next_waiting()) is not None:
            wait = self.mem.queued.pop(docid, None)
            if wait is None:
                held = self.held.get(docid)
                if held is not None and held.due_ms <= to_ms(now):  # (not one held anew)
                    writes.extend(self.on_fire((RUN, docid), now))
            elif not self.away():  # due, not claimed yet: claimed and started now
                writes.extend(self._claim(wait.doc, wait.spec, wait.due, now))
        return writes

    def _claim(self, doc: dict, spec, due: datetime, now: datetime) -> list[Write]:
        """Claim (and start, when the pool has room) a task; one that must wait for room
        is queued (Holding.queued, Slots.waiting)."""
        return self.mem.apply([d.claim(doc, spec, due, self.id, now, self.lead_ms,
                                       self.slots.take)], now)

    def on_change(self, doc: dict, recheck: bool = False, now: datetime | None = None
                  ) -> list[Write]:
        """Decide about the current version of a task document. ``recheck`` (a poll) decides
        again on a version already seen: a task may have come near, a holder may have died."""
        now = now or self.peers.now()
        if doc.get("_id", "").startswith("_design/"):
            return []
        resolutions = d.resolutions(doc)
        if not doc.get("_deleted") and not self.seen.newer(doc, recheck):
            return resolutions  # an echo of our own write, or older than what we know
        held = self.held.get(doc.get("_id"))
        if held is not None and held.waiting_to_launch and doc.get("status") in (
                rules.CANCEL, rules.RESCHEDULE):
            # Inside the lead window, before the job began: the user's word wins at once.
            log.info("task %s: %s before its run began: its start is undone", doc["_id"],
                     doc["status"])
            self.mem.forget(doc["_id"])
            doc = rules.unfence(doc)
        self.mem.track(doc)
        return resolutions + self.mem.apply(d.decide(doc, self.view(), now), now)

    def _job(self, name: str):
        """The job's function, resolved once per process; raises JobError."""
        if name not in self.jobs:
            self.jobs[name] = self.registry.resolve(name)
        return self.jobs[name]

    def on_fire(self, key: tuple[str, str], now: datetime) -> list[Write]:
        kind, docid = key
        if kind == CLAIM:
            entry = self.deferred.pop(docid, None)
            if entry is None or self.seen.get(docid, 0) > rules.rev_number(entry.doc["_rev"]):
                return []  # it changed meanwhile (claimed elsewhere, most likely)
            if self.away() or self.cluster and not self.confirm.unclaimed(entry.doc):
                return []
            return self._claim(entry.doc, entry.spec, entry.due, now)
        held = self.held.get(docid)
        if held is None:
            return []
        if kind == FENCE:  # no fence without a free job thread: the due instant decides
            if held.running or rules.missed(held.spec, from_ms(held.due_ms), now) \
                    or d.gated(held.spec) or overlap.detaches(held.spec) \
                    or not self.slots.take(ahead=True):
                return []
            write = d.fence(held.doc, held.spec, held.due_ms, self.me)
            held.running, held.token = True, write.token  # until the write lands
            return [write]
        if held.waiting_to_launch:  # its start is written: begin, with no write
            if self._fence_stale(held):
                log.warning("task %s: its start was written before this process's lease may "
                            "have lapsed: handed back", docid)
                return [self._hand_back(held)]
            if held.unconfirmed:
                held.unconfirmed = False
                if not self._confirmed(held.doc, held):
                    held.running, held.token, held.fenced, held.context = \
                        False, None, False, None
                    return []
            self._launch(held, now)
            return []
        if held.running or self.away():
            return []
        if d.gated(held.spec) and (skip := gates.screen(self, held, now)) is not None:
            return skip  # an excluded day (skipped), or a calendar that does not exist
        if self.slots.free() and not gates.take(self, held, now):
            return []  # stays scheduled, waiting for a concurrency slot (after.gates)
        if not self.slots.take():
            # stays scheduled; started when a thread is free
            self.slots.wait(docid, priorities.rank(held.doc, held.due_ms))
            return []
        write = d.fire(held.doc, held.spec, held.due_ms, self.me, now)
        held.running, held.token = True, write.token  # until the write lands
        return [write]

    def _fence_stale(self, held: Held) -> bool:
        """Was its start written so long ago that this process's lease may have lapsed
        since (frozen by SIGSTOP, or starved)? Then another process may take it over on
        that lapse, even after a read back: it is handed back (see Worker._lapsed)."""
        return self.peers.mono() >= held.sure_until

    def _launch(self, held: Held, now: datetime) -> None:
        try:
            func = self._job(held.spec.job)
        except JobError as exc:  # the module went away since the claim
            func = exc
        # An overlap-allow run is apart from its task, which another process may claim
        # for its next occurrence at once: no lease of this process's to lose.
        sure = float("inf") if held.token in self.detached else held.sure_until
        self.emit("start", job=held.spec.job,
                  lateness=self.runner.launch(held, func, now, sure))

    def on_unbegun(self, docid: str, token: str) -> list[Write]:
        """A job thread came to a queued run after this process's lease may have run out
        (frozen, or starved, while the run waited for a thread): it did not begin it. The
        task is handed back: another process that took it over meanwhile keeps it (the
        write conflicts, and the task is decided again); otherwise it is claimed anew."""
        self.runner.ended(token)
        held = self.held.get(docid)
        if held is None or held.token != token:
            return []
        log.warning("task %s: its run was to begin after this process's lease may have run "
                    "out (frozen or starved?): not begun, handed back", docid)
        return [self._hand_back(held)]

    def on_finished(self, docid: str, token: str, outcome: rules.Outcome, trace: str | None,
                    response: dict | None, now: datetime | None = None) -> list[Write]:
        self.runner.ended(token)
        self.slots.ran((outcome.ended - outcome.started).total_seconds())
        held = self.detached.get(token)
        if held is not None and held.token == token:  # a run of an overlap-allow task
            return [d.end_detached(held.doc, held.spec, token, outcome, self.me,
                                   now or self.peers.now(), self._dead, trace=trace,
                                   response=response)]
        held = self.held.get(docid)
        if held is None or held.token != token:
            log.warning("task %s: a run that had timed out or was taken over ended (%s)",
                        docid, outcome.outcome)
            return []
        return [self._end(held, outcome, now or self.peers.now(), trace, response)]

    def _end(self, held: Held, outcome: rules.Outcome, now: datetime, trace=None,
             response=None) -> Write:
        held.token = None
        if outcome.ok:
            log.info("done %s (job %s, attempt %d) in %.1f ms, started %.1f ms late",
                     held.doc["_id"], held.spec.job,
                     max(1, rules.counter(held.doc.get(rules.NS), "attempt")),
                     outcome.duration_ms, held.lateness * 1000)
        write = d.end(held.doc, held.spec, outcome, self.me, now, trace=trace,
                      response=response)
        if not outcome.ok:  # what comes next: a retry at..., or none left (after.oplog)
            log.warning("%s", oplog.run_ended(held.doc, write.doc, held.spec, outcome, now))
        return write

    def _deadlines(self, now: datetime) -> list[Write]:
        writes = self._unbegun(now)
        for held in timed_out(self.held, to_ms(now), self.runner.begun):
            self.runner.kill(held.token, "timeout")  # an isolated run's child: its thread frees
            outcome = rules.Outcome(rules.TIMEOUT, held.started, now, error=rules.timeout_error(
                held.spec.timeout, held.token in self.runner.children))
            writes.append(self._end(held, outcome, now))
        for held in timed_out(self.detached, to_ms(now), self.runner.begun):  # overlap allow
            self.runner.kill(held.token, "timeout")
            outcome = rules.Outcome(rules.TIMEOUT, held.started, now, error=rules.timeout_error(
                held.spec.timeout, held.token in self.runner.children))
            writes.append(d.end_detached(held.doc, held.spec, held.token, outcome, self.me,
                                         now, self._dead))
            held.token = None
        return writes

    def _unbegun(self, now: datetime) -> list[Write]:
        """Runs started ahead of their instant go to the job threads' queue when it comes,
        whether a thread is free or not (so a burst starts at once, jobs being short). One
        that no thread has begun ``Slots.grace`` seconds later (2 s, or ``--lead``) waits
        behind jobs that hold every thread, hung perhaps: it is taken back and handed back,
        ``waiting``, so that nothing stays ``running`` with no job behind it (issue 13)."""
        grace = self.slots.grace
        writes = []
        for held in unbegun(self.held, to_ms(now), self.runner.begun, int(grace * 1000)):
            if not self.runner.withdraw(held.token):
                continue  # a thread has just begun it
            log.warning("task %s: no job thread began its run within %.1f s (every thread "
                        "taken): handed back", held.doc["_id"], grace)
            writes.append(self._hand_back(held))
        return writes

    def _hand_back(self, held: Held) -> Write:
        """A run started but not begun: the task goes back to ``waiting``."""
        self.counts["handed_back"] += 1
        self.emit("handed_back")
        self.mem.forget(held.doc["_id"])
        return Write(d.Kind.HANDBACK, rules.hand_back(rules.unfence(held.doc)))

    # -- overlap allow: runs detached from their task (after.overlap) --------------------------

    def _detach(self, held: Held, doc: dict, now: datetime) -> None:
        """The start of an overlap-allow run is written: the task waits for its next
        occurrence (claimed anew), the run goes on apart, under its token."""
        del self.held[doc["_id"]]
        self.timer.remove((RUN, doc["_id"]))
        self.timer.remove((FENCE, doc["_id"]))
        self.detached[held.token] = held
        held.doc = overlap.as_run(doc, held.token)  # what the job sees
        self.runner.prepare(held)
        held.doc = doc
        self._launch(held, now)
        self.inbox.put(("recheck", doc))

    def _dead(self, owner: str | None) -> bool:
        return bool(owner) and self.peers.liveness(owner) is d.Liveness.DEAD

    def _confirmed(self, doc: dict, held: Held | None = None) -> bool:
        """A start answered 202, or trusted no longer: run it only once every copy says it
        is ours alone; it then has the lease of this process's last heartbeat."""
        if self.confirm.started(doc):
            if held is not None:
                held.sure_until = self.peers.sure_until()
            return True
        self.seen.pop(doc["_id"], None)
        return False

    def _count(self, outcome: rules.Outcome, job: str | None) -> None:
        self.counts["runs"] += outcome.outcome != rules.MISSED
        key = {rules.OK: "done", rules.MISSED: "missed"}.get(outcome.outcome, "failed")
        self.counts[key] += 1
        self.emit("finish", job=job, outcome=outcome.outcome,
                  duration=outcome.duration_ms / 1000)
