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

This module is the loop, the flush and the process's life; what each event does is in
:mod:`after.reactions`, with its helpers: :mod:`after.slots` (job threads),
:mod:`after.confirm` (a cluster's read-backs), :mod:`after.faults` (one task's failure
confined to it); the stop is :mod:`after.stopping`.

Leases: each process's heartbeat (in ``<db>_workers``) is valid for ``lease`` seconds. A task
held or run by a process whose heartbeat has expired is taken over by another process of the
same name: a held task is simply claimed, a running one is recorded as ``interrupted`` and run
again (at least once). A process cannot tell that it was frozen (SIGSTOP, a paused VM) past
its lease, so it trusts a start of its own only within the lease of the heartbeat it had
sent before that start (:meth:`Peers.sure_until`): one answered or begun later is handed
back, never begun; and a process back from a lapse of its lease lets go of what it held
and holds off for a lease (:meth:`Worker._lapsed`), for the others may go on taking its
tasks over on the word that it was dead.
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import datetime

from . import decide as d
from . import gates, priorities
from . import task as rules
from .config import Settings, runs_db, workers_db
from .confirm import Confirm
from .dates import to_ms
from .decide import Kind, Write
from .holding import RUN, Holding
from .jobs import JobRegistry
from .peers import Peers
from .polling import Poller
from .reactions import Reactions
from .retention import Retainer
from .runner import Held, Recorder, Runner, next_deadline
from .slots import QUEUED_GRACE, Slots
from .stopping import shutdown
from .store import StoreError, Unavailable, describe_error
from .timer import Timer
from .writes import Sent, Writer

log = logging.getLogger("after.worker")

LOOP_TIMEOUT = 5.0  # seconds the loop's own requests may take
POLL_TIMEOUT = 60.0  # the poller's (its thread waits while the server builds the index)


class Worker(Reactions):
    def __init__(self, store, name: str, registry: JobRegistry,
                 settings: Settings | None = None):
        self.store = store.with_timeout(LOOP_TIMEOUT)  # the loop must never wait long
        self.name, self.registry = name, registry
        self.settings = settings = settings or Settings()
        self.peers = Peers(store.with_timeout(min(LOOP_TIMEOUT, settings.lease / 2)), name,
                           lease=settings.lease, margin=settings.heartbeat)
        self.id, self.host, self.pid = self.peers.id, self.peers.host, self.peers.pid
        self.me = d.Identity(name, self.id, self.host, self.pid)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.clock = self.peers.clock  # the server's time, as well as this process knows it
        self.fired: queue.SimpleQueue = queue.SimpleQueue()  # the timer's: first each turn
        self.timer: Timer = Timer(self._fired, clock=self.clock)
        self.runner = Runner(settings.pool, self.inbox.put, registry, clock=self.clock,
                             mono=lambda: self.peers.mono())
        self.pool, self.active = self.runner.pool, self.runner.active
        self.recorder = Recorder(store, runs_db(store.db), keep=settings.keep_runs,
                                 batch=settings.batch)
        self.writer = Writer(self.store, settings)
        self.follower = None
        self.stop_requested, self.stop_now = threading.Event(), threading.Event()
        self.poller = Poller(store.with_timeout(POLL_TIMEOUT), name, settings, self.inbox.put,
                             self.stop_requested, idle=self._idle)
        self.poll_now = self.poller.now  # set: poll at once
        self.mem = Holding(self.timer, self.id, settings.claim_delay, self.peers.ask,
                           lead=settings.lead,
                           wait=lambda docid, rank: self.slots.wait(docid, rank))
        self.lead_ms = int(settings.lead * 1000)  # the lead window (on clusters too)
        # what it holds, the newest revision seen of each task, what it owns in the database
        self.held, self.seen, self.owned = self.mem.held, self.mem.seen, self.mem.owned
        self.deferred, self.awaiting = self.mem.deferred, self.mem.awaiting
        self.feed_lost = False
        self.cluster = False  # several nodes, known once run() asked
        self.jobs: dict[str, object] = {}  # resolved job functions, by name
        self.counts = {"runs": 0, "done": 0, "failed": 0, "missed": 0, "claimed": 0,
                       "faults": 0, "corrected": 0, "handed_back": 0}
        self.ready = threading.Event()
        self.listeners: list = []  # callables(event, **info), e.g. metrics
        self.next_check = 0.0
        # job threads: start only what the pool can begin soon
        self.slots = Slots(settings.pool, max(settings.lead, QUEUED_GRACE), settings.batch)
        # calendars and concurrency caps, asked when a gated occurrence falls due
        self.calendars = gates.Calendars(self.store)
        self.caps = gates.Caps(self.store, workers_db(store.db), self.id, settings.lease,
                               known_dead=lambda p: self.peers.liveness(p) is d.Liveness.DEAD)
        self.confirm = Confirm(self.store, lambda doc: self.inbox.put(("recheck", doc)),
                               self.poll_now.set)  # reading every copy back, on a cluster
        self.detached: dict[str, Held] = {}  # runs of overlap-allow tasks, by token
        # Back from a lapse of its lease (see _lapsed): holds off until then (monotonic)
        self.away_until = 0.0
        self.lapses_seen = 0
        self.retainer = Retainer.of(self, store)  # finished tasks kept no longer (a thread)

    @property
    def pending(self) -> list[Write]:
        return self.writer.pending

    def load(self) -> tuple[int, int]:
        """(tasks held on the timer, tasks running); safe to call from another thread."""
        running = sum(1 for h in list(self.held.values()) if h.running)
        return len(self.held) - running, running + len(self.detached)  # overlap-allow runs

    def status(self) -> dict:
        held, running = self.load()
        return {"held": held, "running": running, "counts": dict(self.counts),
                "stopping": self.stop_requested.is_set(), "paused": self.peers.paused}

    def _idle(self) -> bool:
        """Nothing to decide, write or wait for (read from the poller's thread)."""
        return self.inbox.empty() and self.fired.empty() and not self.writer.pending \
            and not self.runner.active and not self.mem.queued \
            and not any(h.running and not h.waiting_to_launch for h in list(self.held.values()))

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
        self.cluster = self.store.cluster_size() > 1  # see confirm.py
        if self.cluster:
            # One write request at a time on a cluster: with two in flight (and the lead
            # window), a node killed mid-burst left tasks done 6 to 16 s late in
            # tests/cluster at load 20-46. The lead window alone passes it (done at most
            # 0.11 s after their date, 3 runs of 3 at load 1-3; docs/performance.rst).
            self.writer.single()
        since = self.store.update_seq()
        self.timer.start()
        self.recorder.start()
        self.peers.start(self.settings.heartbeat, self.status, self.inbox.put)
        self.poller.start()  # its first poll at once, on its own thread
        self.retainer.start()
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
            self.retainer.stop()
            code = shutdown(self)
        return code

    def turn(self, wait: float | None = None, now: datetime | None = None) -> None:
        """One turn: wait for events (at most ``wait`` seconds), decide, write, launch.
        ``now`` replaces the turn's clock read (a test driving the loop by hand)."""
        if wait is None:
            wake = min(next_deadline(self.held), self.next_check)
            wait = max(0.0, min(wake - self.peers.now().timestamp(), 1.0))
            wait = min(wait, 0.2) if self.writer.pending else wait
            wait = min(wait, self.caps.wait()) if self.caps.waiting else wait
        events = self._drain(wait)
        # Timers first: a fenced run starts as its timer fires, before this turn's writes;
        # then the tasks to decide, higher priority and earlier date first (claimed first).
        events.sort(key=lambda event: priorities.event_order(event, self.held))
        now = now or self.peers.now()  # the one clock read of the turn
        self.slots.count(self.runner.active, self.runner.longest(now))
        writes: list[Write] = self._lapsed()
        for kind, value in events:
            try:
                writes.extend(self._handle(kind, value, now))
            except Exception as exc:  # never crash on a document
                writes.extend(self._unexpected(kind, value, exc, now))
        writes.extend(self._deadlines(now))
        writes.extend(self._fill_slots(now))
        writes.extend(gates.fill(self, now))
        self._flush(writes, now)
        self.caps.settle(lambda docid: docid in self.held and self.held[docid].running)
        self.slots.end_turn()
        if now.timestamp() >= self.next_check:
            self.next_check = now.timestamp() + self.settings.self_check
            self._self_check()

    def _lapsed(self) -> list[Write]:
        """Has this process's lease lapsed, or may it have, since the last turn (frozen by
        SIGSTOP or a paused VM, starved, cut off from the database)? Another process may have
        found it dead, taken its tasks over, and go on doing so for a moment on that word
        after this one is back. So it lets go of what it held (handed back, ``waiting``: a
        write that conflicts with any takeover) and holds off, claiming and starting
        nothing, for a lease; runs already going carry on. Then the tasks come back to it
        from the database like any others."""
        mono = self.peers.mono()
        stale = mono >= self.peers.sure_until()  # (read before the count: see Peers.beat)
        lapses = self.peers.lapses
        if not stale and lapses == self.lapses_seen:
            if self.away_until and mono >= self.away_until:
                self.away_until = 0.0
                log.warning("worker %s: back in the pool after a lapse of its lease",
                            self.name)
                self.poll_now.set()
            return []
        self.lapses_seen = lapses
        if not self.away_until:
            log.warning("worker %s: this process's lease may have lapsed (frozen, starved, or "
                        "cut off from the database): it hands back what it held and holds "
                        "off for %g s, so that nothing runs twice", self.name,
                        self.settings.lease)
        self.away_until = mono + self.settings.lease
        return self.mem.let_go()

    def away(self) -> bool:
        """Claims and starts nothing: the name is paused, or this process is back from a
        lapse of its lease (see _lapsed)."""
        return self.peers.paused or bool(self.away_until)

    def _fired(self, key: tuple[str, str], due_ms: int, item) -> None:
        """The timer's thread: a timer entry fell due. It goes ahead of everything else in
        the inbox (thousands of feed events in a burst), and wakes the loop."""
        self.fired.put(("fire", key))
        self.inbox.put(("wake", None))

    def _drain(self, wait: float, most: int = 2000) -> list:
        events = []
        try:
            while True:
                events.append(self.fired.get_nowait())
        except queue.Empty:
            pass
        try:
            if not events:
                events.append(self.inbox.get(timeout=wait) if wait > 0
                              else self.inbox.get_nowait())
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

    # -- writing -----------------------------------------------------------------------------

    def _flush(self, writes: list[Write], now: datetime | None = None, rounds: int = 5) -> None:
        """Write, then act on what was written; conflicts are re-read and decided again."""
        now = now or self.peers.now()
        writes = self.writer.ready(now.timestamp()) + writes
        for _ in range(rounds):
            if not writes:
                break
            sure = self.peers.sure_until()  # before the request
            for write in writes:
                write.sure_until = sure
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
                    writes.extend(self._written(write, now))
                except Exception as exc:  # e.g. a job that cannot be launched
                    writes.extend(self._fault(write.doc["_id"], exc, "start", now, write.doc))
            writes.extend(self._resolve_conflicts(sent.conflicted, now))
        self.writer.pending.extend(writes)  # still conflicting after several rounds

    def _written(self, write: Write, now: datetime) -> list[Write]:
        """Act on a write that landed; returns the writes it leads to."""
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
                return []
            held.doc, held.sure_until = doc, write.sure_until
            late = self.peers.mono() >= write.sure_until
            if late and not write.detached:
                # Answered after this process's lease may have lapsed (frozen between the
                # request and the answer): another process may take the task over on that
                # lapse even now, so it is handed back, never begun (see _lapsed).
                log.warning("task %s: its start was answered after this process's lease may "
                            "have lapsed: handed back", docid)
                return [self._hand_back(held)]
            if write.fence and to_ms(now) < held.due_ms and not write.detached:
                # Started ahead: the job begins when the timer fires (see on_fire). A 202
                # is confirmed then, one task at a time as each comes due, rather than here
                # for a whole batch, which would hold the loop (and every launch) up.
                held.fenced, held.unconfirmed = True, write.accepted
                self.runner.prepare(held)  # the job's copy of the task, made ahead too
                self.timer.add((RUN, docid), held.due_ms, None)
                return []
            # A 202 (or an overlap-allow start answered late): run it only if it is ours.
            if (write.accepted or late) and not self._confirmed(doc, held):
                held.running, held.token = False, None
                return []
            if write.detached:  # an overlap-allow run: out of what is held, launched now
                self._detach(held, doc, now)
                return []
            self._launch(held, now)
        elif write.kind is Kind.FINISH and write.detached:
            for run in [write.run, *(write.skipped or [])]:
                self.recorder.record(run)
            self._count(write.outcome, write.spec.job)
            self.detached.pop(write.detached, None)
        elif write.kind is Kind.FINISH:
            for run in ([write.run] if write.run is not None else []) + (write.skipped or []):
                self.recorder.record(run)
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
        elif write.kind is Kind.RESUME:
            self.inbox.put(("recheck", doc))  # claimed now if its next occurrence is near
        return []

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
                if write.detached:
                    self.detached.pop(write.detached, None)
                    return []
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
                                {w.doc["_id"] for w in self.pending} | set(self.slots.waiting)
                                | set(self.caps.waiting))
        if broken:
            self.counts["corrected"] += len(broken)
            self.emit("corrected", count=len(broken))
            self.poll_now.set()
        return len(broken)

__all__ = ["Settings", "Worker", "Unavailable"]
