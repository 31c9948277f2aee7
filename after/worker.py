"""The worker: follows the feed, holds what is due soon, runs it, writes every transition.

One thread (the loop, in :meth:`Worker.run`) makes every decision, so the worker's state needs
no locks. Each turn it reads the clock once, takes what is in its inbox, decides with the pure
rules of :mod:`after.decide`, writes it all in one ``_bulk_docs`` (:mod:`after.writes`) and
launches the runs that write started. Every write carries ``_rev``: a conflict means someone
else changed the task, so it is re-read and decided again. The other threads only post to
the inbox or set flags:

- the changes follower posts each changed task of this worker's name; the poller, what the
  ``due`` view holds (the feed's safety net);
- the timer posts a task id when its held occurrence falls due;
- the job threads (:mod:`after.runner`) post each finished run;
- the peers' thread (:mod:`after.peers`) writes the heartbeat and posts whether a possibly
  dead owner is dead; run records are written by the recorder's thread;
- signal handlers only set flags (and wake the loop).

Leases: each process's heartbeat (in ``<db>_workers``) is valid for ``lease`` seconds. A task
held or run by a process whose heartbeat has expired is taken over by another process of the
same name: a held task is simply claimed, a running one is recorded as ``interrupted`` and run
again (at least once).
"""

# Longer than 500 lines, for now: the loop, the flush and what each event does to what this
# process holds (the lead window's fences, job-thread reservation, a cluster's read-backs).
# The pure decisions are in decide.py, memory in holding.py, threads in runner.py; moving
# the cluster confirmations and the shutdown out is the next step (issue 12).
from __future__ import annotations

import logging
import queue
import threading
from datetime import datetime

from . import decide as d
from . import task as rules
from .config import Settings, runs_db, workers_db
from .dates import from_ms, to_ms
from .decide import Kind, Write
from .gates import Calendars, Slots
from .holding import CLAIM, FENCE, RUN, Holding
from .jobs import JobError, JobRegistry
from .peers import Peers
from .polling import Poller
from .redact import redact_text
from .runner import Held, Recorder, Runner, next_deadline, timed_out
from .store import StoreError, Unavailable, describe_error, winner
from .timer import Timer
from .writes import Sent, Writer

log = logging.getLogger("after.worker")

LOOP_TIMEOUT = 5.0  # seconds the loop's own requests may take


class Worker:
    def __init__(self, store, name: str, registry: JobRegistry,
                 settings: Settings | None = None):
        self.store = store.with_timeout(LOOP_TIMEOUT)  # the loop must never wait long
        self.name, self.registry = name, registry
        self.settings = settings = settings or Settings()
        self.peers = Peers(store.with_timeout(min(LOOP_TIMEOUT, settings.lease / 2)), name,
                           lease=settings.lease)
        self.id, self.host, self.pid = self.peers.id, self.peers.host, self.peers.pid
        self.me = d.Identity(name, self.id, self.host, self.pid)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.clock = self.peers.clock  # the server's time, as well as this process knows it
        self.timer: Timer = Timer(lambda key, due_ms, item: self.inbox.put(("fire", key)),
                                  clock=self.clock)
        self.runner = Runner(settings.pool, self.inbox.put)
        self.pool, self.active = self.runner.pool, self.runner.active
        self.recorder = Recorder(store, runs_db(store.db), keep=settings.keep_runs,
                                 batch=settings.batch)
        self.writer = Writer(self.store, settings)
        self.follower = None
        self.stop_requested, self.stop_now = threading.Event(), threading.Event()
        self.poller = Poller(self.store, name, settings, self.inbox.put, self.stop_requested,
                             idle=self._idle)
        self.poll_now = self.poller.now  # set: poll at once
        self.mem = Holding(self.timer, self.id, settings.claim_delay, self.peers.ask,
                           lead=settings.lead)
        self.lead_ms = int(settings.lead * 1000)  # 0 on a cluster (see run)
        # what it holds, the newest revision seen of each task, what it owns in the database
        self.held, self.seen, self.owned = self.mem.held, self.mem.seen, self.mem.owned
        self.deferred, self.awaiting = self.mem.deferred, self.mem.awaiting
        self.feed_lost = False
        self.cluster = False  # several nodes, known once run() asked
        self.jobs: dict[str, object] = {}  # resolved job functions, by name
        self.counts = {"runs": 0, "done": 0, "failed": 0, "missed": 0, "claimed": 0,
                       "faults": 0, "corrected": 0}
        self.ready = threading.Event()
        self.listeners: list = []  # callables(event, **info), e.g. metrics
        self.next_check = 0.0
        self.busy = 0  # job threads taken at the start of the turn
        self.reserved = 0  # starts decided this turn, not written yet
        self.slot_wait: dict[str, None] = {}  # held tasks due, waiting for a free job thread
        # calendars and concurrency caps, asked when a gated occurrence falls due
        self.calendars = Calendars(self.store)
        self.slots = Slots(self.store, workers_db(store.db), self.id, settings.lease)

    @property
    def pending(self) -> list[Write]:
        return self.writer.pending

    def load(self) -> tuple[int, int]:
        """(tasks held on the timer, tasks running); safe to call from another thread."""
        running = sum(1 for h in list(self.held.values()) if h.running)
        return len(self.held) - running, running

    def status(self) -> dict:
        held, running = self.load()
        return {"held": held, "running": running, "counts": dict(self.counts),
                "stopping": self.stop_requested.is_set()}

    def _idle(self) -> bool:
        """Nothing to decide, write or wait for (read from the poller's thread)."""
        return self.inbox.empty() and not self.writer.pending and not self.runner.active \
            and not any(h.running and not h.waiting_to_launch
                        for h in list(self.held.values()))

    def request_stop(self) -> None:
        """Graceful stop; a second call stops at once. Safe in a signal handler."""
        if self.stop_requested.is_set():
            self.stop_now.set()
        self.stop_requested.set()
        self.poll_now.set()
        self.inbox.put(("wake", None))

    def emit(self, event: str, **info) -> None:
        for listener in self.listeners:
            try:
                listener(event, **info)
            except Exception:
                log.exception("listener failed on %s", event)

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        """Run until asked to stop; returns the exit code (0 after a graceful stop)."""
        log.info("worker %s starting (process %s, jobs in %s)", self.name, self.id,
                 self.registry.root)
        self.peers.beat(self.status(), force=True)
        self.cluster = self.store.cluster_size() > 1  # see _still_unclaimed
        if self.cluster:
            # Not on a cluster yet: with starts written ahead and two write requests in
            # flight, a node killed mid-burst left tasks done 6 to 16 s late in
            # tests/cluster (3 s without); until that is understood, a cluster writes each
            # start at its due instant, one request at a time.
            log.info("on a cluster: starts are written at their due instant (no lead window)")
            self.lead_ms = self.mem.lead_ms = 0
            self.writer.single()
        since = self.store.update_seq()
        self.timer.start()
        self.recorder.start()
        self.peers.start(self.settings.heartbeat, self.status, self.inbox.put)
        self.poller.start()  # its first poll at once, on its own thread
        self.follower = self.store.follow(
            self._on_change, since=since, selector={"worker": self.name},
            heartbeat=self.settings.feed_heartbeat,
            on_state=lambda up: self.inbox.put(("feed", up))).start()
        self.ready.set()
        log.info("worker %s ready", self.name)
        try:
            while not self.stop_requested.is_set():
                try:
                    self.turn()
                except Exception:  # a bug must not take the process (and its leases) down
                    log.exception("unexpected error in the worker loop; carrying on")
                    self.stop_requested.wait(1.0)
        finally:
            code = self._shutdown()
        return code

    def _still_unclaimed(self, doc: dict) -> bool:
        """Before a deferred claim on a cluster: is ``doc`` still the only live revision on
        every copy? Another process's claim reaches this process's node late under load
        (seconds): claiming on a stale copy made a second branch, and 6 of 300 tasks ran
        twice. Otherwise the fresh revision is decided again instead."""
        try:
            current = winner(self.store.leaves(doc["_id"]))
        except StoreError as exc:
            log.warning("cannot read %s back before claiming it: %s", doc["_id"],
                        describe_error(exc))
            return False  # the next poll decides it again
        if current is not None and current["_rev"] == doc["_rev"] \
                and not current.get("_conflicts"):
            return True
        if current is not None:
            self.inbox.put(("recheck", current))
        return False

    def turn(self, wait: float | None = None, now: datetime | None = None) -> None:
        """One turn: wait for events (at most ``wait`` seconds), decide, write, launch.
        ``now`` replaces the turn's clock read (a test driving the loop by hand)."""
        if wait is None:
            wake = min(next_deadline(self.held), self.next_check)
            wait = max(0.0, min(wake - self.peers.now().timestamp(), 1.0))
            wait = min(wait, 0.2) if self.writer.pending else wait
            wait = min(wait, self.slots.wait() if self.slots.waiting else wait)
        events = self._drain(wait)
        # Timers first: a fenced run starts as its timer fires, before this turn's writes.
        events.sort(key=lambda event: event[0] != "fire")
        now = now or self.peers.now()  # the one clock read of the turn
        self._count_busy()
        writes: list[Write] = []
        for kind, value in events:
            try:
                writes.extend(self._handle(kind, value, now))
            except Exception as exc:  # never crash on a document
                writes.extend(self._unexpected(kind, value, exc, now))
        writes.extend(self._deadlines(now))
        writes.extend(self._fill_slots(now))
        writes.extend(self._fill_gates(now))
        self._flush(writes, now)
        self.slots.settle(lambda docid: docid in self.held and self.held[docid].running)
        self.reserved = 0
        if now.timestamp() >= self.next_check:
            self.next_check = now.timestamp() + self.settings.self_check
            self._self_check()

    def _drain(self, wait: float, most: int = 2000) -> list:
        events = []
        try:
            events.append(self.inbox.get(timeout=wait) if wait > 0 else self.inbox.get_nowait())
            while len(events) < most:
                events.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        return events

    def _on_change(self, change: dict) -> None:
        if change.get("doc") is not None:
            self.inbox.put(("change", change["doc"]))
        elif change.get("deleted"):
            self.inbox.put(("deleted", change["id"]))

    def _handle(self, kind: str, value, now: datetime) -> list[Write]:
        if kind in ("change", "recheck"):
            return self.on_change(value, recheck=kind == "recheck", now=now)
        if kind == "fire":
            return self.on_fire(value, now)
        if kind == "finished":
            return self.on_finished(*value, now=now)
        if kind == "peer":  # whether an owner is dead is known: decide its tasks again
            docs = self.awaiting.pop(value, [])
            return [w for doc in docs for w in self.on_change(doc, recheck=True, now=now)]
        if kind == "dead":  # a peer's lease ran out: find its tasks now, not at the next poll
            self.poll_now.set()
            return []
        if kind == "deleted":
            self.mem.apply([d.Drop(value)], now)
        elif kind == "feed":
            self.emit("feed", connected=value)
            self.feed_lost = self.feed_lost or not value
            if value and self.feed_lost:
                self.poll_now.set()  # re-check everything after a reconnect
        return []

    def _unexpected(self, kind: str, value, exc: Exception, now: datetime) -> list[Write]:
        """An exception while handling one event is that event's task's fault alone."""
        doc = value if kind in ("change", "recheck") and isinstance(value, dict) else None
        docid = {"fire": lambda: value[1], "finished": lambda: value[0]}.get(
            kind, lambda: doc.get("_id") if doc else None)()
        if not isinstance(docid, str):
            log.exception("unexpected error handling %s", kind)
            return []
        return self._fault(docid, exc, "process", now, doc)

    def _fault(self, docid: str, exc: BaseException, stage: str, now: datetime,
               doc: dict | None = None) -> list[Write]:
        """Confine a failure to its task: forget the task, log why once, and end it ``error``
        with a one-line reason (unless it is finished already, or not this worker's)."""
        held = self.held.get(docid)
        self.mem.forget(docid)
        doc = doc if doc is not None or held is None else held.doc
        self.counts["faults"] += 1
        self.emit("fault")
        detail = (str(exc).strip().splitlines() or [""])[0][:300]
        message = redact_text(f"the worker could not {stage} this task: "
                              f"{type(exc).__name__}: {detail}".rstrip(": "))
        log.error("task %s: %s", docid, message, exc_info=exc)
        if doc is None or doc.get("worker") != self.name or doc.get("status") in rules.FINISHED:
            return []
        return [Write(Kind.ERROR, rules.mark_error(doc, message, now))]

    # -- deciding ----------------------------------------------------------------------------

    def view(self) -> d.View:
        return d.View(me=self.me, horizon_ms=int(self.settings.horizon * 1000),
                      held={k: h.running for k, h in self.held.items()},
                      liveness=self.peers.liveness, preferred=self.peers.preferred,
                      check_job=self._job, can_start=self._can_start, lead_ms=self.lead_ms)

    # -- job threads: start only what the pool can start now ----------------------------------

    def _count_busy(self) -> None:
        """Job threads taken, counted once a turn (``reserved`` counts this turn's starts):
        runs going, a timed-out run's thread too until its job returns. A start still being
        written holds no thread: counting those made the write latency the limit (8 starts
        per round trip; on a loaded cluster, tasks 18 s late), while hung jobs, which do
        hold threads, are what must stop new starts."""
        self.busy = len(self.runner.active)

    def _can_start(self) -> bool:
        if self.busy + self.reserved >= self.settings.pool:
            return False
        self.reserved += 1
        return True

    def _fill_slots(self, now: datetime) -> list[Write]:
        """Start held tasks that fell due while every job thread was taken, oldest first."""
        writes: list[Write] = []
        self._count_busy()
        while self.slot_wait and self.busy + self.reserved < self.settings.pool:
            docid = next(iter(self.slot_wait))
            del self.slot_wait[docid]
            writes.extend(self.on_fire((RUN, docid), now))
        return writes

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
            if self.cluster and not self._still_unclaimed(entry.doc):
                return []
            return [d.claim(entry.doc, entry.spec, entry.due, self.id, now, self.lead_ms,
                            self._can_start)]
        held = self.held.get(docid)
        if held is None:
            return []
        if kind == FENCE:  # no fence without a free job thread: the due instant decides
            if held.running or rules.missed(held.spec, from_ms(held.due_ms), now) \
                    or d.gated(held.spec) or not self._can_start():
                return []
            write = d.fence(held.doc, held.spec, held.due_ms, self.me)
            held.running, held.token = True, write.token  # until the write lands
            return [write]
        if held.waiting_to_launch:  # its start is written: begin, with no write
            if held.unconfirmed:
                held.unconfirmed = False
                if not self._confirmed(held.doc):
                    held.running, held.token, held.fenced, held.context = \
                        False, None, False, None
                    return []
            self._launch(held, now)
            return []
        if held.running:
            return []
        if d.gated(held.spec) and (skip := self._screen(held, now)) is not None:
            return skip  # an excluded day (skipped), or a calendar that does not exist
        if self.busy + self.reserved >= self.settings.pool:
            self.slot_wait[docid] = None  # stays scheduled; started when a thread is free
            return []
        if held.spec.concurrency is not None and not self.slots.take(
                docid, held.spec.concurrency.key, held.spec.concurrency.limit, held.due_ms,
                now):
            return []  # stays scheduled; tried again by _fill_gates (after.gates)
        self.busy += 1  # (counted by _count_busy from now on: held.running below)
        write = d.fire(held.doc, held.spec, held.due_ms, self.me, now)
        held.running, held.token = True, write.token  # until the write lands
        return [write]

    def _screen(self, held: Held, now: datetime) -> list[Write] | None:
        """The calendars of a held occurrence that fell due (see :func:`after.decide.screen`)."""
        exclusion = held.spec.repeat.exclude if held.spec.repeat is not None else None
        names = exclusion.calendars if exclusion is not None else ()
        write = d.screen(held.doc, held.spec, self.calendars.get(names), self.me, now)
        if write is None:
            return None
        if write.kind is Kind.ERROR:
            self.mem.drop(held.doc["_id"])
        return [write]

    def _fill_gates(self, now: datetime) -> list[Write]:
        """Try again the occurrences waiting for a concurrency slot, earliest due first."""
        writes: list[Write] = []
        for docid in self.slots.due(lambda t: t in self.held and not self.held[t].running):
            writes.extend(self.on_fire((RUN, docid), now))
        return writes

    def _launch(self, held: Held, now: datetime) -> None:
        try:
            func = self._job(held.spec.job)
        except JobError as exc:  # the module went away since the claim
            func = exc
        self.emit("start", job=held.spec.job, lateness=self.runner.launch(held, func, now))

    def on_finished(self, docid: str, token: str, outcome: rules.Outcome, trace: str | None,
                    response: dict | None, now: datetime | None = None) -> list[Write]:
        self.runner.ended(token)
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
        else:
            log.warning("%s %s (job %s): %s", outcome.outcome, held.doc["_id"], held.spec.job,
                        outcome.error)
        return d.end(held.doc, held.spec, outcome, self.me, now, trace=trace,
                     response=response)

    def _deadlines(self, now: datetime) -> list[Write]:
        writes = []
        for held in timed_out(self.held, to_ms(now)):
            outcome = rules.Outcome(rules.TIMEOUT, held.started, now, error=f"timeout: the "
                                    f"run took longer than {held.spec.timeout:g}s")
            writes.append(self._end(held, outcome, now))
        return writes

    # -- writing -----------------------------------------------------------------------------

    def _flush(self, writes: list[Write], now: datetime | None = None, rounds: int = 5) -> None:
        """Write, then act on what was written; conflicts are re-read and decided again."""
        now = now or self.peers.now()
        writes = self.writer.ready(now.timestamp()) + writes
        for _ in range(rounds):
            if not writes:
                break
            sent = self.writer.send(writes, now.timestamp())
            self.counts["faults"] += sent.faults
            for _fault in range(sent.faults):
                self.emit("fault")
            for docid in sent.forget:
                self.mem.forget(docid)
                self.seen.pop(docid, None)
            if sent.forget:
                self.poll_now.set()  # decided again from what the database holds
            writes = sent.errors
            for write in sent.written:
                try:
                    self._written(write, now)
                except Exception as exc:  # e.g. a job that cannot be launched
                    writes.extend(self._fault(write.doc["_id"], exc, "start", now, write.doc))
            writes.extend(self._resolve_conflicts(sent.conflicted, now))
        self.writer.pending.extend(writes)  # still conflicting after several rounds

    def _written(self, write: Write, now: datetime) -> None:
        doc, docid = write.doc, write.doc["_id"]
        self.seen.saw(docid, rules.rev_number(doc["_rev"]))
        self.mem.track(doc)
        if write.kind is Kind.CLAIM:
            self.counts["claimed"] += 1
            self.mem.hold(doc, write.spec, d.due_of(doc[rules.NS], write.spec))
        elif write.kind in (Kind.START, Kind.CLAIMSTART):
            if write.kind is Kind.CLAIMSTART:
                self.counts["claimed"] += 1
                self.held[docid] = Held(doc=doc, spec=write.spec, due_ms=to_ms(write.due),
                                        running=True, token=write.token)
            held = self.held.get(docid)
            if held is None or held.token != write.token:
                return
            held.doc = doc
            if write.fence and to_ms(now) < held.due_ms:
                # Started ahead: the job begins when the timer fires (see on_fire). A 202
                # is confirmed then, one task at a time as each comes due, rather than here
                # for a whole batch, which would hold the loop (and every launch) up.
                held.fenced, held.unconfirmed = True, write.accepted
                self.runner.prepare(held)  # the job's copy of the task, made ahead too
                self.timer.add((RUN, docid), held.due_ms, None)
                return
            if write.accepted and not self._confirmed(doc):
                held.running, held.token = False, None
                return
            self._launch(held, now)
        elif write.kind is Kind.FINISH:
            if write.run is not None:
                self.recorder.record(write.run)
            if write.outcome is not None:
                self._count(write.outcome, write.spec.job if write.spec else None)
            if self.held.pop(docid, None) is not None:
                self.timer.remove((RUN, docid))
            if doc["status"] == rules.SCHEDULED and doc[rules.NS].get("owner") == self.id:
                self.mem.hold(doc, write.spec, d.due_of(doc[rules.NS], write.spec))
            elif doc["status"] in (rules.WAITING, rules.RESCHEDULE):
                # The next occurrence: claim it now if it is near (the feed's echo of this
                # write is a revision already seen, so it would be ignored).
                self.inbox.put(("recheck", doc))
        elif write.kind is Kind.HANDBACK:
            self.held.pop(docid, None)

    def _confirmed(self, doc: dict) -> bool:
        """A 202 (no quorum on a cluster): read every leaf of the task back before running
        it. Run only if our revision is the only live one; otherwise decide again on the
        cluster's winner (with the other leaves as its conflicts, resolved first): we run it
        again only if our revision won, and a process whose revision lost leaves it alone."""
        try:
            current = winner(self.store.leaves(doc["_id"]))
        except StoreError as exc:
            log.warning("cannot confirm the start of %s yet: %s", doc["_id"],
                        describe_error(exc))
            current = None
        if current is not None and current.get("_rev") == doc["_rev"] \
                and not current.get("_conflicts"):
            log.info("the start of %s was accepted (202) and confirmed by reading it back",
                     doc["_id"])
            return True
        log.warning("the start of %s was not confirmed by the cluster: deciding again",
                    doc["_id"])
        self.seen.pop(doc["_id"], None)
        if current is not None:  # a recheck: another branch with our revision's number
            self.inbox.put(("recheck", current))  # may be seen first
        else:
            self.poll_now.set()
        return False

    def _count(self, outcome: rules.Outcome, job: str | None) -> None:
        self.counts["runs"] += outcome.outcome != rules.MISSED
        key = {rules.OK: "done", rules.MISSED: "missed"}.get(outcome.outcome, "failed")
        self.counts[key] += 1
        self.emit("finish", job=job, outcome=outcome.outcome,
                  duration=outcome.duration_ms / 1000)

    def _resolve_conflicts(self, writes: list[Write], now: datetime) -> list[Write]:
        """Re-read the tasks whose writes conflicted and decide on what they are now."""
        if not writes:
            return []
        try:
            current = self.store.bulk_get([w.doc["_id"] for w in writes])
        except (StoreError, ValueError) as exc:
            log.warning("cannot re-read %d conflicting task(s) yet: %s", len(writes),
                        describe_error(exc))
            sent = Sent()
            self.writer.later(writes, describe_error(exc), now.timestamp(), sent, server=True)
            self.counts["faults"] += sent.faults
            for docid in sent.forget:
                self.mem.forget(docid)
                self.seen.pop(docid, None)
                self.poll_now.set()
            return []
        again: list[Write] = []
        for write in writes:
            docid = write.doc["_id"]
            try:
                again.extend(self._redecide(write, current.get(docid), now))
            except Exception as exc:
                again.extend(self._fault(docid, exc, "process", now, current.get(docid)))
        return again

    def _redecide(self, write: Write, fresh: dict | None, now: datetime) -> list[Write]:
        docid = write.doc["_id"]
        if fresh is None:  # deleted meanwhile
            self.mem.forget(docid)
            return []
        if write.kind is Kind.FINISH:
            writes = d.refinish(write, fresh, self.me, now)
            if writes == [] and write.run is not None:
                self.recorder.record(write.run)  # taken over: only the run is recorded
                self.held.pop(docid, None)
            if writes is not None:
                return writes
        held = self.held.get(docid)
        if held is not None and write.kind is Kind.START and held.token == write.token:
            held.running, held.token = False, None
        self.seen.pop(docid, None)  # decide again on the version just read
        return self.on_change(fresh, now=now)

    # -- keeping honest ----------------------------------------------------------------------

    def _self_check(self) -> int:
        # a task waiting for a free job thread is held, on purpose, with no timer entry
        broken = self.mem.check(self.runner.active,
                                {w.doc["_id"] for w in self.pending} | set(self.slot_wait)
                                | set(self.slots.waiting))
        if broken:
            self.counts["corrected"] += len(broken)
            self.emit("corrected", count=len(broken))
            self.poll_now.set()
        return len(broken)

    # -- stopping ----------------------------------------------------------------------------

    def _shutdown(self) -> int:
        log.info("worker %s stopping", self.name)
        if self.follower is not None:
            self.follower.stop(timeout=1.0)
        self.timer.stop(timeout=2)
        if self.stop_now.is_set():
            return self._stopped(130, "stopped at once: held and running tasks return when "
                                      f"the lease ({self.settings.lease:g}s) runs out")
        self._flush([Write(Kind.HANDBACK, rules.hand_back(
            rules.unfence(h.doc) if h.waiting_to_launch else h.doc))
                     for h in self.held.values() if not h.running or h.waiting_to_launch])
        deadline = self.peers.now().timestamp() + self.settings.grace
        while any(h.running and not h.waiting_to_launch for h in self.held.values()) \
                and not self.stop_now.is_set():
            now = self.peers.now()
            if now.timestamp() >= deadline:
                break
            writes = []
            for kind, value in self._drain(min(0.5, deadline - now.timestamp())):
                if kind == "finished":
                    writes.extend(self.on_finished(*value, now=now))
                elif kind == "change" and value.get("_id") in self.held:
                    held = self.held[value["_id"]]
                    if rules.rev_number(value.get("_rev")) > rules.rev_number(held.doc["_rev"]):
                        held.doc = value
            self._flush(writes + self._deadlines(now), now)
        now, leftovers = self.peers.now(), []
        for held in self.held.values():
            if held.running and held.token and not held.waiting_to_launch:
                outcome = rules.Outcome(rules.INTERRUPTED, held.started or now, now,
                                        error="interrupted: the worker stopped before the run "
                                              "ended (grace period over)")
                self.recorder.record(d.run_record(held.doc, held.spec, outcome, self.me))
                leftovers.append(Write(Kind.HANDBACK, rules.hand_back(held.doc)))
        self._flush(leftovers, now)
        return self._stopped(130 if self.stop_now.is_set() else 0)

    def _stopped(self, code: int, why: str | None = None) -> int:
        self.runner.shutdown()
        self.slots.release_all()  # its runs are over or handed back: their slots are free
        self.peers.stop(timeout=2)
        if why:
            log.warning("%s", why)
        else:
            self.recorder.stop(timeout=5)
            self.peers.leave()
        if self.writer.pending and code == 0:
            log.error("%d task update(s) could not be written before exit; their leases "
                      "will expire and another process will take them",
                      len(self.writer.pending))
        log.info("worker %s stopped", self.name)
        return code


__all__ = ["Settings", "Worker", "Unavailable"]
