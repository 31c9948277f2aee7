"""The worker: follows the feed, holds what is due soon, runs it, writes every transition.

One thread, the loop (:meth:`Worker.run`), owns the process's state (:class:`State`) and makes
every decision; the other threads do I/O and post what they found to its inbox:

- the changes follower posts each changed task of this worker's name, the poller what the
  ``due`` view holds (the feed's safety net);
- the timer posts a key when it falls due: a held task's occurrence, a run to show;
- the job threads (:mod:`~after.worker.runner`) post each run's end;
- the writer's threads (:mod:`~after.worker.writer`) post the answers to the task writes;
- the peers' thread (:mod:`~after.worker.peers`) posts each read of the registry (who is
  alive, the partitions' leases, the pause) and the answers to the lease writes;
- signal handlers only set flags (and wake the loop).

Each turn reads the clock once, takes what is in the inbox (timers first), decides with the
pure rules of :mod:`~after.worker.decide` and carries out what they return: holds on the
timer, launches, writes handed to the writer. A task is this process's to run while its
partition is (:mod:`~after.worker.partitions`): nothing is written between the timer and the
job; the run's end is the one write of a short run (a long one is also shown ``running``).
When more is due than the job threads can take, the rest waits in a line (priority, then
date) and starts as threads free up; nothing is handed back for want of room.

Leases: a process trusts its partitions while its heartbeats land within a lease
(:meth:`Peers.sure_until`). Past that (frozen by SIGSTOP, starved, cut off), another process
may have found it dead and be taking its partitions: it lets go of every partition and every
run not begun, holds off for a lease, and takes partitions again by writing their leases.
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import datetime

from .. import oplog
from .. import task as rules
from ..config import Settings, runs_db, workers_db
from ..dates import format_date, from_ms, to_ms
from ..jobs import JobError, JobRegistry
from ..retention import Retainer
from ..store import Unavailable
from . import check, intents
from . import decide as d
from . import partitions as parts
from . import runs as r
from .gates import Gates
from .peers import Peers, Registry
from .polling import Poller
from .reads import Reads
from .runner import Recorder, Runner, next_deadline, timed_out
from .state import Held, Run, State, rank
from .timer import Timer
from .writer import Writer

log = logging.getLogger("after.worker")

__all__ = ["Settings", "Unavailable", "Worker"]

LOOP_TIMEOUT = 5.0  # seconds the loop's own requests may take (a stop's last writes)
WRITE_TIMEOUT = 30.0  # the writer's: a batch waits for a busy server rather than fail
POLL_TIMEOUT = 60.0  # the poller's (its thread waits while the server builds the index)
# timer keys: (RUN, id) a held task's instant, (ARM, id) its run made ready ARM_AHEAD
# seconds before, (SHOW, token) a run to show running, (GATE, id) a capped task tried again
RUN, ARM, SHOW, GATE = "run", "arm", "show", "gate"
ARM_AHEAD = 2.0
SMOOTHING = 0.2  # weight of the newest run in the running mean of run durations
QUEUE_FOR = 0.5  # seconds of work the job threads' queue may hold, at the runs' mean length


class Worker:
    def __init__(self, store, name: str, registry: JobRegistry,
                 settings: Settings | None = None):
        self.store = store.with_timeout(LOOP_TIMEOUT)
        self.name, self.registry = name, registry
        self.settings = settings = settings or Settings()
        self.peers = Peers(store.with_timeout(min(LOOP_TIMEOUT, settings.lease / 2)), name,
                           lease=settings.lease, margin=settings.heartbeat)
        self.id, self.host, self.pid = self.peers.id, self.peers.host, self.peers.pid
        self.me = r.Identity(name, self.id, self.host, self.pid)
        self.state = State()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.fired: queue.SimpleQueue = queue.SimpleQueue()  # the timer's: first each turn
        self.timer: Timer = Timer(self._fired, clock=self.peers.clock)
        self.lease_until = float("-inf")  # published for the job threads (monotonic)
        self.runner = Runner(settings.pool, self.inbox.put, registry, clock=self.peers.clock,
                             mono=self.peers.mono, lease=lambda: self.lease_until)
        self.recorder = Recorder(store, runs_db(store.db), keep=settings.keep_runs,
                                 batch=settings.batch)
        self.writer = Writer(store.with_timeout(WRITE_TIMEOUT, retries=2), self.inbox.put,
                             batch=settings.batch, concurrency=settings.write_concurrency,
                             attempts=settings.write_attempts, backoff=settings.write_backoff,
                             backoff_max=settings.write_backoff_max)
        self.stop_requested, self.stop_now = threading.Event(), threading.Event()
        self.poller = Poller(store.with_timeout(POLL_TIMEOUT), name, settings, self.inbox.put,
                             self.stop_requested, idle=self._idle)
        self.reads = Reads(store.with_timeout(WRITE_TIMEOUT, retries=1), self.inbox.put,
                           runs=runs_db(store.db))
        self.intents = Writer(store.with_timeout(WRITE_TIMEOUT, retries=2), self.inbox.put,
                              batch=settings.batch, attempts=settings.write_attempts,
                              backoff=settings.write_backoff,
                              backoff_max=settings.write_backoff_max, db=runs_db(store.db))
        self.retainer = Retainer.of(self, store)  # finished tasks kept no longer (a thread)
        self.gates = Gates(self.store, workers_db(store.db), self.me, settings.lease,
                           known_dead=lambda p: p in self.state.dead,
                           holder_of=self._holder_of)
        self.follower = None
        self.jobs: dict[str, object] = {}  # resolved job functions (or their JobError)
        self.mean_run: float | None = None  # seconds a run lasts, as measured
        self.ready = threading.Event()
        self.listeners: list = []  # callables(event, **info), e.g. metrics

    # -- what other threads may read ---------------------------------------------------------

    @property
    def counts(self) -> dict:
        return self.state.published.get("counts", self.state.counts)

    @property
    def held(self) -> dict:
        """The tasks held on the timer or running, by id (a test's view; the loop's own)."""
        return {**self.state.held, **self.state.runs}

    @property
    def pending(self) -> list:
        return [w for writes in self.state.outbox.values() for w in writes] + \
            list(self.state.inflight.values())

    def load(self) -> tuple[int, int]:
        """(tasks held on the timer, runs going); safe from another thread."""
        published = self.state.published
        return published.get("held", 0), published.get("running", 0)

    def status(self) -> dict:
        return dict(self.state.published) or {"held": 0, "running": 0, "counts": {}}

    def request_stop(self) -> None:
        """Graceful stop; a second call stops at once. Safe in a signal handler."""
        if self.stop_requested.is_set():
            self.stop_now.set()
        self.stop_requested.set()
        self.poller.now.set()
        self.inbox.put(("wake", None))

    def emit(self, event: str, **info) -> None:
        for listener in self.listeners:
            try:
                listener(event, **info)
            except Exception:
                log.exception("listener failed on %s", event)

    def _idle(self) -> bool:
        """Nothing to decide, write or run (read from the poller's thread)."""
        return self.inbox.empty() and self.fired.empty() and not self.writer.inflight \
            and not self.runner.active

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        """Run until asked to stop; returns the exit code (0 after a graceful stop)."""
        from .stop import shutdown

        log.info("worker %s starting (process %s, jobs in %s)", self.name, self.id,
                 self.registry.root)
        registry = self.peers.beat(self._publish(), force=True,
                                   landed=lambda sent, lapses: self.inbox.put(
                                       ("beat", (sent, lapses))))
        if registry is not None:
            self.inbox.put(("registry", registry))
        since = self.store.update_seq()
        for thread in (self.timer, self.recorder, self.writer, self.intents, self.reads):
            thread.start()
        self.peers.start(self.settings.heartbeat, lambda: self.state.published,
                         self.inbox.put)
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
        """One turn: wait for events (at most ``wait`` seconds), decide, carry it out.
        ``now`` replaces the turn's clock read (a test driving the loop by hand)."""
        if wait is None:
            wake = next_deadline(self._timed())
            wait = max(0.0, min(wake - self.peers.clock(), 1.0))
        events = self._drain(wait)
        clock = now
        now = clock or self.peers.now()
        for kind, value in events:  # a heartbeat that landed counts before the lease check
            if kind == "beat":
                self.state.beat_sent, self.state.lapses = value
        self._lease(self.peers.mono())
        # A burst: what falls due is launched before anything else is handled (the ends of
        # runs, their writes), as long as more keeps falling due.
        while events and events[0][0] == "fire":
            fires = [e for e in events if e[0] == "fire"]
            events = [e for e in events if e[0] != "fire"]
            self._each(fires, now)
            self._fill(now)
            if self.fired.empty():
                break
            events = self._fires() + events
            now = clock or self.peers.now()
        self._each(events, now)
        self._deadlines(now)
        self._fill(now)
        if self.peers.mono() >= self.state.next_check:
            self.state.next_check = self.peers.mono() + self.settings.self_check
            self._self_check()
        self._flush()
        if self.state.verify:  # made ready: read back first (a move leaves no trace in our feed)
            self.reads.check(self.state.verify)
            self.state.verify = {}
        self._publish()

    def _each(self, events: list, now: datetime) -> None:
        for kind, value in events:
            try:
                self._handle(kind, value, now)
            except Exception as exc:  # never crash on a document
                self._fault(kind, value, exc, now)

    def _fires(self, most: int = 2000) -> list:
        """What the timer posted, the higher priority then the earlier first."""
        events = []
        try:
            while len(events) < most:
                events.append(self.fired.get_nowait())
        except queue.Empty:
            pass
        events.sort(key=lambda e: self._rank(e[1][1]) if e[1][0] == RUN else (0, 0))
        return events

    def _drain(self, wait: float, most: int = 2000) -> list:
        events = self._fires(most)
        try:
            if not events:
                events.append(self.inbox.get(timeout=wait) if wait > 0
                              else self.inbox.get_nowait())
            while len(events) < most:
                events.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        return events

    def _fired(self, key: tuple[str, str], due_ms: int, item) -> None:
        """The timer's thread: an entry fell due; it goes ahead of the inbox (and wakes the
        loop once for a burst of them)."""
        self.fired.put(("fire", key))
        if self.fired.qsize() <= 1:
            self.inbox.put(("wake", None))

    def _on_change(self, change: dict) -> None:
        if change.get("doc") is not None:
            self.inbox.put(("change", change["doc"]))
        elif change.get("deleted"):
            self.inbox.put(("deleted", change["id"]))

    def _handle(self, kind: str, value, now: datetime) -> None:
        if kind in ("change", "recheck"):
            self._changed(value, kind == "recheck", now)
        elif kind == "fire":
            self._fire(value, now)
        elif kind == "finished":
            self._finished(*value, now=now)
        elif kind == "written":
            self._written(value, now)
        elif kind == "beat":
            self.state.beat_sent, self.state.lapses = value
        elif kind == "registry":
            self._registry(value, now)
        elif kind == "parts":
            self._parts_written(*value)
        elif kind == "orphans":
            self._orphans(*value, now=now)
        elif kind == "unbegun":
            self._unbegun(*value)
        elif kind == "peer":
            owner, alive = value
            if alive is not None:
                self.state.known[owner] = alive
            for doc in self.state.asked.pop(owner, []):
                self._changed(doc, True, now)
        elif kind == "deleted":
            self._do([d.Drop(value)], now)
        elif kind == "feed":
            self.emit("feed", connected=value)
            self.state.feed_lost = self.state.feed_lost or not value
            if value and self.state.feed_lost:
                self.poller.now.set()  # re-check everything after a reconnect

    # -- deciding ----------------------------------------------------------------------------

    def view(self) -> d.View:
        state = self.state
        known_live = frozenset(p for p, alive in state.known.items() if alive)
        known_dead = frozenset(p for p, alive in state.known.items() if not alive)
        return d.View(me=self.me, horizon_ms=int(self.settings.horizon * 1000),
                      owned=frozenset(state.owned), running=frozenset(state.runs),
                      live=state.live | known_live, dead=state.dead | known_dead,
                      job_errors=self._job_errors())

    def _job_errors(self) -> dict[str, str]:
        return {name: str(func) for name, func in self.jobs.items()
                if isinstance(func, JobError)}

    def _job(self, name: str):
        """The job's function (or the JobError resolving it raised), once per process."""
        if name not in self.jobs:
            try:
                self.jobs[name] = self.registry.resolve(name)
            except JobError as exc:
                self.jobs[name] = exc
        return self.jobs[name]

    def _changed(self, doc: dict, recheck: bool, now: datetime) -> None:
        docid = doc.get("_id")
        if not isinstance(docid, str) or docid.startswith("_design/"):
            return
        if docid in self.state.inflight or docid in self.state.outbox:
            self.state.parked[docid] = doc  # decided once the write's answer is in
            return
        if not doc.get("_deleted") and not self.state.seen.newer(doc, recheck):
            return  # an echo of our own write, or older than what we know
        job = (doc.get("job") or {}).get("name") if isinstance(doc.get("job"), dict) else None
        if isinstance(job, str) and parts.partition_of(docid) in self.state.owned:
            self._job(job)  # resolved before deciding: the decision is pure
        self._do(d.decide(doc, self.view(), now), now)

    def _do(self, actions: list, now: datetime) -> None:
        """Carry out what a decision returned."""
        state = self.state
        for action in actions:
            if isinstance(action, r.Write):
                state.outbox.setdefault(action.docid, []).append(action)
            elif isinstance(action, d.Hold):
                if state.paused:  # the name is paused: nothing held (the resume polls)
                    self._drop(action.doc["_id"])
                else:
                    self._hold(action, now)
            elif isinstance(action, d.Drop):
                self._drop(action.docid)
            elif isinstance(action, d.Keep):  # (a poll's copy of the run's own version: no)
                run = state.runs.get(action.doc["_id"])
                if run is not None and rules.rev_number(action.doc.get("_rev")) > \
                        rules.rev_number(run.doc.get("_rev")):
                    run.doc = r.carry(action.doc, run.doc, self.id)
            elif isinstance(action, d.Ask):
                if action.owner not in state.asked:
                    self.peers.ask(("confirm", action.owner))
                state.asked.setdefault(action.owner, []).append(action.doc)
            elif isinstance(action, d.Shown):
                run = self._run_of(action.token)
                if run is not None:
                    run.doc, run.visible = action.doc, True
            elif isinstance(action, d.Begin):
                run = state.detached.get(action.token)
                if run is not None:
                    self._begin_detached(run, action.doc, now)
            elif isinstance(action, d.Over):
                self._over(action)
            elif isinstance(action, d.Note):
                getattr(log, action.level)("%s", action.message)

    def _hold(self, hold: d.Hold, now: datetime) -> None:
        docid = hold.doc["_id"]
        if docid in self.state.held:  # a newer version: its run is made ready anew
            self._withdraw(self.state.held[docid])
        self.state.line.remove(docid)
        if self.state.gated.pop(docid, None) is not None:
            self.gates.forget(docid)
        held = self.state.held[docid] = Held(hold.doc, hold.spec, hold.due_ms)
        self.timer.add((RUN, docid), hold.due_ms, None)
        arm_ms = hold.due_ms - int(ARM_AHEAD * 1000)
        if arm_ms <= to_ms(now):
            self._arm(held, now)
        else:
            self.timer.add((ARM, docid), arm_ms, None)

    def _arm(self, held: Held, now: datetime, gated: bool = False) -> None:
        """Make a held task's run ready ahead of its instant (the task as its run sees it,
        the job's copy of it, its intent written: after.worker.intents), so that the instant
        itself costs a hand-over to a thread. A gated one is made ready once its gates let
        it through (``gated``); an overlap-allow run's start is written when it falls due."""
        if held.armed is not None or held.spec.overlap == rules.ALLOW and held.spec.repeat \
                or r.gated(held.spec) and not gated:
            return
        docid = held.doc["_id"]
        due = from_ms(held.due_ms)
        token = self._token()
        started = r.begin(held.doc, held.spec, due, self.id, due, token)
        run = held.armed = Run(docid, token, started, held.spec, held.due_ms)
        self.runner.prepare(run)
        run.intent = intents.intent(started, held.spec, self.me, run.token, due)
        self.state.intent_out.append(intents.write(run.intent, run.token))
        self.state.verify[docid] = held.doc.get("_rev")

    def _withdraw(self, held: Held) -> None:
        """A run made ready will not begin: its intent goes (once written)."""
        run, held.armed = held.armed, None
        if run is not None and run.intent is not None and run.intent.get("_rev") \
                and run.docid not in self.state.runs:
            self.state.intent_out.append(intents.withdraw(run.intent, run.token))

    def _token(self) -> str:
        return f"{self.id.rsplit(':', 1)[-1]}.{next(self.state.tokens)}"

    def _drop(self, docid: str) -> None:
        state = self.state
        held = state.held.pop(docid, None)
        if held is not None:
            self.timer.remove((RUN, docid))
            self.timer.remove((ARM, docid))
            self._withdraw(held)
        state.line.remove(docid)
        if state.gated.pop(docid, None) is not None:
            self.gates.forget(docid)

    def _rank(self, docid: str) -> tuple[int, int]:
        held = self.state.held.get(docid)
        return (0, 0) if held is None else rank(held.doc, held.due_ms)

    # -- running -----------------------------------------------------------------------------

    def _fire(self, key: tuple[str, str], now: datetime) -> None:
        kind, ident = key
        if kind == SHOW:  # (a detached run begins once its start is written: shown then)
            run = self._run_of(ident)
            if run is not None and not run.visible and not run.detached and run.ended is None \
                    and run.docid not in self.state.inflight:
                self.state.outbox.setdefault(run.docid, []).append(
                    r.Write(r.Kind.VISIBLE, run.doc, spec=run.spec, token=run.token))
            return
        held = self.state.held.get(ident)
        if held is None or ident in self.state.runs:
            return
        if kind == ARM:
            self._arm(held, now)
            return
        if self.away() or parts.partition_of(ident) not in self.state.owned:
            self._drop(ident)
            return
        due = from_ms(held.due_ms)
        if rules.missed(held.spec, due, now):
            self._drop(ident)
            log.warning("task %s missed its run due %s", ident, format_date(due))
            self._do([r.missed(held.doc, held.spec, due, self.me, now)], now)
            return
        if r.gated(held.spec):
            verdict = self.gates.ask(held, now)
            if verdict == "wait":  # tried again as a slot frees, or every SLOT_RETRY
                self.state.gated[ident] = held.due_ms
                self.timer.add((GATE, ident), to_ms(now) + self.gates.retry_ms, None)
                return
            self.state.gated.pop(ident, None)
            if verdict is not None:  # skipped, or an error
                self._drop(ident)
                self._do(verdict, now)
                return
        self._arm(held, now, gated=True)
        held.fired = True
        if self._ready(held):
            self.state.line.add(ident, self._rank(ident))

    def _ready(self, held: Held) -> bool:
        """May a held task that fell due go in line: its intent written (or none needed), its
        partition not being checked for a dead process's runs (after.worker.intents)?"""
        if parts.partition_of(held.doc["_id"]) in self.state.checking:
            return False
        return held.armed is None or held.armed.landed

    def room(self) -> int:
        """Runs that may be launched now: threads free, and a queue in front of them as deep
        as the pool works through in :data:`QUEUE_FOR` seconds at the runs' mean length."""
        pool = self.settings.pool
        depth = 0
        if self.mean_run is not None:
            depth = min(self.settings.batch, int(pool * QUEUE_FOR / max(self.mean_run, 1e-4)))
        return pool + depth - len(self.runner.active)

    def _fill(self, now: datetime) -> None:
        """Launch the due tasks waiting in line, while there is room."""
        state = self.state
        room = self.room()
        while room > 0 and len(state.line) and not self.away() and not state.paused:
            docid = state.line.pop()
            held = state.held.pop(docid, None)
            if held is None:
                continue
            self.timer.remove((RUN, docid))
            self.timer.remove((ARM, docid))
            self._launch(held, now)
            room -= 1

    def _launch(self, held: Held, now: datetime) -> None:
        docid = held.doc["_id"]
        if held.armed is not None:  # made ready ahead
            run = self.state.runs[docid] = held.armed
        else:
            run = self._made(held, now)
            if run is None:
                return
        self._go(run, now)
        self.timer.add((SHOW, run.token), to_ms(now) + int(self.settings.visible * 1000), None)

    def _made(self, held: Held, now: datetime) -> Run | None:
        """The run of a held task, made now (None: a detached run, begun once its start is
        written)."""
        docid, spec = held.doc["_id"], held.spec
        token = self._token()
        started = r.begin(held.doc, spec, from_ms(held.due_ms), self.id, now)
        write = r.detach(started, spec, token, from_ms(held.due_ms), now) \
            if spec.overlap == rules.ALLOW and spec.repeat is not None else None
        if write is not None:  # begun once its start (the next occurrence) is written
            self.state.detached[token] = Run(docid, token, write.doc, spec, held.due_ms,
                                             detached=True)
            self.state.outbox.setdefault(docid, []).append(write)
            return None
        run = self.state.runs[docid] = Run(docid, token, started, spec, held.due_ms)
        return run

    def _begin_detached(self, run: Run, doc: dict, now: datetime) -> None:
        from ..overlap import as_run

        run.doc = as_run(doc, run.token)
        self.runner.prepare(run)  # what the job sees: its own run
        run.doc = doc
        self._go(run, now)

    def _go(self, run: Run, now: datetime) -> None:
        self.state.tokens_of[run.token] = run.docid
        if run.spec.timeout:
            self.state.timed.add(run.token)
        lateness = self.runner.launch(run, self._job(run.spec.job), now)
        self.emit("start", job=run.spec.job, lateness=lateness)

    def _runs(self) -> list[Run]:
        return [*self.state.runs.values(), *self.state.detached.values()]

    def _timed(self) -> list[Run]:
        """The runs with a ``timeout`` (most have none: a turn need not look at the rest)."""
        return [run for token in self.state.timed if (run := self._run_of(token)) is not None]

    def _run_of(self, token: str) -> Run | None:
        docid = self.state.tokens_of.get(token)
        run = self.state.runs.get(docid) if docid is not None else None
        if run is not None and run.token == token:
            return run
        return self.state.detached.get(token)

    def _finished(self, docid: str, token: str, outcome: rules.Outcome, trace, response,
                  now: datetime) -> None:
        self.runner.ended(token)
        seconds = max(0.0, (outcome.ended - outcome.started).total_seconds())
        self.mean_run = seconds if self.mean_run is None else \
            (1 - SMOOTHING) * self.mean_run + SMOOTHING * seconds
        run = self.state.detached.get(token) or self.state.runs.get(docid)
        if run is None or run.token != token or run.timed_out:
            log.warning("task %s: a run that had timed out or was taken over ended (%s)",
                        docid, outcome.outcome)
            return
        self._end(run, (outcome, trace, response), now)

    def _end(self, run: Run, ended: tuple, now: datetime) -> None:
        """Write a run's end, once no other write of its task is in flight."""
        if run.docid in self.state.inflight or run.docid in self.state.outbox:
            run.ended = ended  # written once that write's answer is in (_written)
            return
        outcome, trace, response = ended
        run.ended = None
        if run.detached:
            write = r.end_detached(run.doc, run.spec, run.token, outcome, self.me, now,
                                   lambda owner: owner in self.state.dead, trace=trace,
                                   response=response)
        else:
            write = r.end(run.doc, run.spec, outcome, self.me, now, run.token, trace=trace,
                          response=response)
            if run.intent is not None and write.run is not None:
                write.run["_id"] = run.intent["_id"]  # written over its intent
                if run.intent.get("_rev"):
                    write.run["_rev"] = run.intent["_rev"]
        self._log_end(run, outcome, write.doc, now)
        self.state.outbox.setdefault(run.docid, []).append(write)

    def _log_end(self, run: Run, outcome: rules.Outcome, after: dict, now: datetime) -> None:
        if outcome.ok:
            log.info("done %s (job %s, attempt %d) in %.1f ms, started %.1f ms late",
                     run.docid, run.spec.job, max(1, rules.counter(run.doc.get(rules.NS),
                                                                   "attempt")),
                     outcome.duration_ms, run.lateness * 1000)
        else:  # what comes next: a retry at..., or none left (after.oplog)
            log.warning("%s", oplog.run_ended(run.doc, after, run.spec, outcome, now))

    def _forget(self, run: Run) -> None:
        """A run is over here: nothing of it stays in memory; its slot (a cap) is free."""
        state = self.state
        if state.runs.get(run.docid) is run:
            del state.runs[run.docid]
        state.detached.pop(run.token, None)
        state.tokens_of.pop(run.token, None)
        state.timed.discard(run.token)
        self.timer.remove((SHOW, run.token))
        if run.spec.concurrency is not None:
            self.gates.release(run.docid)
            for docid in self.gates.due(lambda t: t in state.gated):  # a slot may be free
                self.timer.add((GATE, docid), 0, None)

    def _over(self, over: d.Over) -> None:
        state = self.state
        run = self._run_of(over.token) if over.token is not None else None
        if run is not None:
            self._forget(run)
        for record in over.records:
            self.recorder.record(record)
        if over.outcome is not None:
            outcome = over.outcome.outcome
            state.counts["runs"] += outcome != rules.MISSED
            key = {rules.OK: "done", rules.MISSED: "missed"}.get(outcome, "failed")
            state.counts[key] += 1
            self.emit("finish", job=over.job, outcome=outcome,
                      duration=over.outcome.duration_ms / 1000)

    def _unbegun(self, docid: str, token: str) -> None:
        """A job thread came to a queued run once this process's lease may have lapsed: it
        did not begin it. The task is left to whichever process owns its partition now."""
        self.runner.ended(token)
        run = self.state.runs.get(docid)
        if run is None or run.token != token:
            return
        log.warning("task %s: its run was to begin after this process's lease may have run "
                    "out (frozen or starved?): not begun", docid)
        self._let_go(run)

    def _let_go(self, run: Run) -> None:
        """A run not begun (or cut short by a stop) will not go on here."""
        state = self.state
        self._forget(run)
        state.counts["handed_back"] += 1
        self.emit("handed_back")
        if run.visible:  # shown running: back to waiting for the next owner
            state.outbox.setdefault(run.docid, []).append(r.hand_back(run.doc))

    def _deadlines(self, now: datetime) -> None:
        for run in timed_out(self._timed(), to_ms(now), self.runner.begun):
            self.runner.kill(run.token, "timeout")  # an isolated run's child: its thread frees
            run.timed_out = True
            outcome = rules.Outcome(rules.TIMEOUT, run.started or now, now,
                                    error=rules.timeout_error(
                                        run.spec.timeout, run.token in self.runner.children))
            self._end(run, (outcome, None, None), now)

    # -- writing -----------------------------------------------------------------------------

    def _flush(self) -> None:
        """Hand the writes decided to the writer: one in flight per task at most."""
        state, batch = self.state, []
        for docid in list(state.outbox):
            if docid in state.inflight:
                continue
            writes = state.outbox[docid]
            write = writes.pop(0)
            if not writes:
                del state.outbox[docid]
            state.inflight[docid] = write
            batch.append(write)
        self.writer.send(batch)
        if state.intent_out:
            self.intents.send(state.intent_out)
            state.intent_out = []

    def _written(self, answers: list, now: datetime) -> None:
        state = self.state
        view = self.view()
        for write, answer in answers:
            if write.kind in (r.Kind.INTENT, r.Kind.UNINTENT):
                self._intent_written(write, answer)
                continue
            docid = write.docid
            if state.inflight.get(docid) is write:
                del state.inflight[docid]
            if answer.ok and write.kind is not r.Kind.RESOLVE:
                state.seen.saw(docid, rules.rev_number(write.doc.get("_rev")))
            if answer.failed is not None:
                state.counts["faults"] += 1
                self.emit("fault")
                state.seen.pop(docid, None)
                self.poller.now.set()
            try:
                self._do(d.settle(write, answer, view, now), now)
            except Exception as exc:
                self._fault("written", write.doc, exc, now)
            view = self.view()
            run = state.detached.get(write.token) if write.detached else state.runs.get(docid)
            if run is not None and run.ended is not None and docid not in state.inflight \
                    and docid not in state.outbox:
                self._end(run, run.ended, now)
            parked = state.parked.pop(docid, None)
            if parked is not None:
                self._changed(parked, False, now)
        self._give_when_shown(now)

    def _intent_written(self, write: r.Write, answer) -> None:
        """A run's intent landed (or not): the run may begin once its task falls due."""
        if write.kind is not r.Kind.INTENT or write.token is None:
            return
        docid = write.doc.get("task")
        held = self.state.held.get(docid)
        run = held.armed if held is not None else None
        if answer.conflict and answer.fresh is not None \
                and answer.fresh.get("token") == write.token:
            write.doc["_rev"] = answer.fresh["_rev"]  # ours: a lost answer, sent again
        elif not answer.ok:
            # Not written: the run goes on all the same (had its process died, it could have
            # run again with no record of this one); said, so that it is seen.
            log.warning("task %s: the intent of its run could not be written (%s): it runs "
                        "without one", docid, answer.refused or answer.failed or "conflict")
            write.doc.pop("_rev", None)
        if run is None or run.token != write.token:  # made ready anew, or let go meanwhile
            if write.doc.get("_rev"):
                self.state.intent_out.append(intents.withdraw(write.doc, write.token))
            return
        run.landed = True
        if held.fired and self._ready(held):
            self.state.line.add(docid, self._rank(docid))

    def _orphans(self, owners: list[str], found: list, now: datetime) -> None:
        """The open intents of processes found dead (after.worker.intents): each decided."""
        state = self.state
        for intent_doc, task in found:
            docid = intent_doc.get("task")
            if not isinstance(docid, str) or parts.partition_of(docid) not in state.owned:
                continue
            for write in intents.orphan(intent_doc, task, self.me, now):
                if write.kind in (r.Kind.INTENT, r.Kind.UNINTENT):
                    state.intent_out.append(write)
                else:
                    log.warning("task %s: its run may have begun on %s, which stopped: "
                                "recorded interrupted, run again", docid,
                                intent_doc.get("process"))
                    self._drop(docid)
                    state.outbox.setdefault(write.docid, []).append(write)
        for k, owner in list(state.checking.items()):
            if owner in owners:
                del state.checking[k]
        for docid, held in list(state.held.items()):  # what fell due meanwhile
            if held.fired and self._ready(held) and docid not in state.line:
                state.line.add(docid, self._rank(docid))

    # -- partitions and leases ---------------------------------------------------------------

    def away(self) -> bool:
        """Starts nothing: back from a lapse of its lease, or stopping."""
        return bool(self.state.away_until) or self.stop_requested.is_set()

    def _lease(self, mono: float) -> None:
        """Has this process's lease lapsed, or may it have, since the last turn (frozen by
        SIGSTOP or a paused VM, starved, cut off from the database)? Then it lets go of its
        partitions and the runs not begun, and holds off for a lease."""
        from .stop import lapse

        state = self.state
        if state.beat_sent is None:
            self.lease_until = float("-inf")
            return
        sure = state.beat_sent + self.settings.lease - self.settings.heartbeat
        if state.registry_read and (mono >= sure or state.lapses != state.lapses_seen):
            state.lapses_seen = state.lapses
            lapse(self, mono)
            return
        self.lease_until = sure if not state.away_until else float("-inf")
        if state.away_until and mono >= state.away_until:
            state.away_until = 0.0
            log.warning("worker %s: back in the pool after a lapse of its lease", self.name)
            self._plan(from_ms(int(self.peers.clock() * 1000)))

    def _registry(self, registry: Registry, now: datetime) -> None:
        state = self.state
        was_paused = state.paused
        state.registry_read = True
        state.live, state.dead, state.paused = registry.live, registry.dead, registry.paused
        state.parts = {k: doc for k, doc in registry.parts.items()}
        if state.paused != was_paused:
            log.warning("worker %s %s", self.name, "paused: starting nothing" if state.paused
                        else "resumed")
            if state.paused:
                for docid in list(state.held):
                    self._drop(docid)
            else:
                self.poller.now.set()
        self._lease(self.peers.mono())
        self._plan(now)

    def _plan(self, now: datetime) -> None:
        """Take the partitions this process should own and are free; give up the others."""
        state = self.state
        if state.parts_pending or self.away() or not state.registry_read:
            return
        plan = parts.plan(self.id, state.parts, state.live, state.dead,
                          state.owned | state.giving)
        for k in plan.give:
            if k in state.owned:
                state.owned.discard(k)
                state.giving.add(k)
                for docid in [i for i in state.held if parts.partition_of(i) == k]:
                    self._drop(docid)
                for run in state.runs.values():  # shown running: the next owner leaves it
                    if parts.partition_of(run.docid) == k and not run.visible \
                            and run.ended is None:
                        self._fire((SHOW, run.token), now)
        docs = [parts.part_doc(self.name, k, self.id, format_date(now), state.parts.get(k))
                for k in plan.take]
        if not docs:
            self._start_polling()  # nothing to take: what it owns is what it gets
        docs += self._ready_to_give(now)
        if docs:
            state.parts_pending = True
            self.peers.ask(("parts", docs))

    def _ready_to_give(self, now: datetime) -> list[dict]:
        """The lease documents, free, of the partitions given up whose runs are all shown."""
        state = self.state
        ready = [k for k in state.giving
                 if not any(parts.partition_of(run.docid) == k and not run.visible
                            for run in state.runs.values())]
        return [parts.part_doc(self.name, k, None, format_date(now), state.parts.get(k))
                for k in sorted(ready)]

    def _give_when_shown(self, now: datetime) -> None:
        if self.state.giving and not self.state.parts_pending:
            for run in list(self.state.runs.values()):
                if parts.partition_of(run.docid) in self.state.giving and not run.visible:
                    self._fire((SHOW, run.token), now)
            docs = self._ready_to_give(now)
            if docs:
                self.state.parts_pending = True
                self.peers.ask(("parts", docs))

    def _parts_written(self, docs: list[dict], answers: list[dict]) -> None:
        state = self.state
        state.parts_pending = False
        took = []
        dead = []
        for doc, answer in zip(docs, answers, strict=False):
            k = doc["partition"]
            was = (state.parts.get(k) or {}).get("owner")
            if "error" in answer:
                continue
            if answer.get("accepted"):  # a 202: not proof that no other process took it
                state.parts.pop(k, None)
                continue
            doc["_rev"] = answer.get("rev", doc.get("_rev"))
            state.parts[k] = doc
            if doc.get("owner") == self.id and not self.away():
                state.owned.add(k)
                took.append(k)
                if isinstance(was, str) and was != self.id:  # a dead process's: its runs?
                    state.checking[k] = was
                    dead.append(was)
            elif doc.get("owner") is None:
                state.giving.discard(k)
        self._start_polling()
        if took:
            state.counts["partitions"] = len(state.owned)
            log.info("worker %s took %d partition(s) (%d of %d owned)", self.name, len(took),
                     len(state.owned), parts.PARTITIONS)
            self.poller.now.set()  # their tasks: from the due view
        if dead:
            self.reads.orphans(sorted(set(dead)))

    def _start_polling(self) -> None:
        """The poller's first round (a scan of the newest changes, then the due view) once
        this process knows its partitions: what it finds is decided with them."""
        if not self.state.polling:
            self.state.polling = True
            self.poller.start()

    def _holder_of(self, docid: str) -> str | None:
        """The process that holds ``docid``: the owner of its partition, as last read."""
        owner = (self.state.parts.get(parts.partition_of(docid)) or {}).get("owner")
        return owner if isinstance(owner, str) else None

    # -- keeping honest ----------------------------------------------------------------------

    def _self_check(self) -> None:
        """Held tasks with no timer entry, runs with no job thread (see after.worker.check):
        forgotten, and decided again from the database."""
        state = self.state
        runs = {run.token: run.docid for run in self._runs() if run.ended is None}
        held, lost, state.suspects = check.stuck(
            state.held, runs, lambda docid: (RUN, docid) in self.timer,
            set(state.line.waiting) | set(state.gated), self.runner.active,
            set(state.inflight) | set(state.outbox), state.suspects)
        for docid in held:
            log.warning("self-check: task %s is held by this process with no timer entry: "
                        "deciding again", docid)
            self._drop(docid)
            state.seen.pop(docid, None)
        for token in lost:
            run = self._run_of(token)
            if run is not None:
                log.warning("self-check: task %s is running under this process with no job "
                            "thread: deciding again", run.docid)
                self._let_go(run)
                state.seen.pop(run.docid, None)
        if held or lost:
            state.counts["corrected"] += len(held) + len(lost)
            self.emit("corrected", count=len(held) + len(lost))
            self.poller.now.set()

    def _fault(self, kind: str, value, exc: Exception, now: datetime) -> None:
        """A failure of this code while handling one task is that task's alone."""
        from .stop import fault

        fault(self, kind, value, exc, now)

    def _publish(self) -> dict:
        """What other threads may read of the state: replaced whole, once a turn."""
        state = self.state
        running = len(state.runs) + len(state.detached)
        state.published = {
            "held": len(state.held), "running": running, "counts": dict(state.counts),
            "stopping": self.stop_requested.is_set(), "paused": state.paused,
            "partitions": len(state.owned)}
        return state.published
