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

from after.config import Settings, runs_db
from after.couch.retention import Retainer
from after.couch.store import Unavailable
from after.jobs import JobRegistry
from after.rules.dates import to_ms
from after.rules.jsonsafe import shared
from after.worker import carrying, leases, running, writing
from after.worker import decide as d
from after.worker import runs as r
from after.worker.gates import GateKeeper
from after.worker.peers import Peers
from after.worker.polling import Poller
from after.worker.reads import Reads
from after.worker.runner import Recorder, Runner, next_deadline
from after.worker.running import AGAIN, REREAD, RUN
from after.worker.state import State
from after.worker.stop import fault, shutdown
from after.worker.timer import Timer
from after.worker.writer import Writer

log = logging.getLogger("after.worker")

__all__ = ["Settings", "Unavailable", "Worker"]

LOOP_TIMEOUT = 5.0  # seconds the loop's own requests may take (a stop's last writes)
WRITE_TIMEOUT = 30.0  # the writer's: a batch waits for a busy server rather than fail
POLL_TIMEOUT = 60.0  # the poller's (its thread waits while the server builds the index)
FIRE_BATCH = 64  # due tasks decided between two launches of what is in line
DECIDE_BATCH = 250  # other events decided between two hand-overs of their writes and reads


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
                                 batch=settings.batch, process=self.id)
        # (the writers' batches: sent again to the next node if a node they wait on freezes)
        writes = store.with_timeout(WRITE_TIMEOUT, retries=2, hedge=True)
        self.writer = Writer(writes, self.inbox.put,
                             batch=settings.batch, concurrency=settings.write_concurrency,
                             attempts=settings.write_attempts, backoff=settings.write_backoff,
                             backoff_max=settings.write_backoff_max)
        self.stop_requested, self.stop_now = threading.Event(), threading.Event()
        self.poller = Poller(store.with_timeout(POLL_TIMEOUT), name, settings, self.inbox.put,
                             self.stop_requested, idle=self._idle)
        self.reads = Reads(store.with_timeout(WRITE_TIMEOUT, retries=1), self.inbox.put,
                           runs=runs_db(store.db))
        self.intents = Writer(writes, self.inbox.put,
                              batch=settings.batch, attempts=settings.write_attempts,
                              backoff=settings.write_backoff,
                              backoff_max=settings.write_backoff_max, db=runs_db(store.db))
        self.retainer = Retainer.of(self, store)  # finished tasks kept no longer (a thread)
        self.gates = GateKeeper.of(self, store.with_timeout(LOOP_TIMEOUT))  # (a thread)
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
        log.info("worker %s starting (process %s, jobs in %s)", self.name, self.id,
                 self.registry.root)
        registry = self.peers.beat(self._publish(), force=True,
                                   landed=lambda sent, lapses: self.inbox.put(
                                       ("beat", (sent, lapses))))
        if registry is not None:
            self.inbox.put(("registry", registry))
        since = self.store.update_seq()
        self.poller.scan_early()  # (what is due among the newest writes: read meanwhile)
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
            wake = next_deadline(running.timed(self))
            wait = max(0.0, min(wake - self.peers.clock(), 1.0))
            if self.state.to_show:  # a run to show running
                wait = max(0.0, min(wait, self.state.to_show[0][0] - self.peers.mono()))
        events = self._drain(wait)
        clock = now
        now = clock or self.peers.now()
        for kind, value in events:  # a heartbeat that landed counts before the lease check
            if kind == "beat":
                self.state.beat_sent, self.state.lapses = value
        leases.lease(self, self.peers.mono())
        # A burst: what falls due is launched before anything else is handled (the ends of
        # runs, their writes), as long as more keeps falling due.
        while events and events[0][0] == "fire":
            fires = [e for e in events if e[0] == "fire"]
            events = [e for e in events if e[0] != "fire"]
            for start in range(0, len(fires), FIRE_BATCH):  # the first jobs begin at once
                self._each(fires[start:start + FIRE_BATCH], now)
                running.fill(self, now)
            if self.fired.empty():
                break
            events = self._fires() + events
            now = clock or self.peers.now()
        # A backlog found at once (a scan, a page of the due view): its writes and reads
        # back go out a chunk at a time, so the server works while the rest is decided
        for start in range(0, len(events), DECIDE_BATCH):
            if start:
                self._send_out()
            self._each(events[start:start + DECIDE_BATCH], now)
        running.deadlines(self, now)
        running.fill(self, now)
        running.ends(self, now)
        running.show(self, now)
        if self.peers.mono() >= self.state.next_check:
            self.state.next_check = self.peers.mono() + self.settings.self_check
            running.self_check(self)
        self._send_out()
        if self.state.reread and AGAIN not in self.timer:  # (what a read back could not
            # confirm) read again a bit later: a struggling server is not pressed
            self.timer.add(AGAIN, to_ms(now) + int(REREAD * 1000), None)
        self._publish()

    def _send_out(self) -> None:
        """Hand what was decided to the writers, and the versions to read back to the
        reads' thread."""
        writing.flush(self)
        if self.state.verify:  # made ready: read back first (a move leaves no trace in our feed)
            self.reads.check(self.state.verify, leases.probes(self, self.state.verify))
            self.state.verify = {}

    def _each(self, events: list, now: datetime) -> None:
        for kind, value in events:
            try:
                self._handle(kind, value, now)
            except Exception as exc:  # never crash on a document: that task's failure alone
                fault(self, kind, value, exc, now)

    def _fires(self, most: int = 2000) -> list:
        """What the timer posted, the higher priority then the earlier first."""
        events = []
        try:
            while len(events) < most:
                events.append(self.fired.get_nowait())
        except queue.Empty:
            pass
        events.sort(key=lambda e: running.rank_of(self, e[1][1]) if e[1][0] == RUN else (0, 0))
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
            # (the feed's own thread: the document is made to share its keys with the others)
            self.inbox.put(("change", shared(change["doc"])))
        elif change.get("deleted"):
            self.inbox.put(("deleted", change["id"]))

    def _handle(self, kind: str, value, now: datetime) -> None:
        if kind in ("change", "recheck"):
            carrying.changed(self, value, kind == "recheck", now)
        elif kind == "fire":
            running.fire(self, value, now)
        elif kind == "finished":
            running.finished(self, *value, now=now)
        elif kind == "written":
            writing.written(self, value, now)
        elif kind == "beat":
            self.state.beat_sent, self.state.lapses = value
        elif kind == "registry":
            leases.registry(self, value, now)
        elif kind == "parts":
            leases.parts_written(self, *value, now=now)
        elif kind == "orphans":
            leases.orphans(self, *value, now=now)
        elif kind == "probed":
            leases.orphans(self, [], value, now=now, probed=True)
        elif kind == "unbegun":
            running.unbegun(self, *value)
        elif kind == "confirmed":
            running.confirmed(self, *value)
            carrying.confirmed(self, *value, now=now)
        elif kind == "peer":
            carrying.peer(self, *value, now=now)
        elif kind == "gated":
            running.gate_answer(self, *value, now=now)
        elif kind == "gate_retry":
            running.gate_retry(self, value)
        elif kind == "deleted":
            self.state.unconfirmed.pop(value, None)
            running.do(self, [d.Drop(value)], now)
        elif kind == "feed":
            carrying.feed(self, value)

    def away(self) -> bool:
        """Starts nothing: back from a lapse of its lease, or stopping."""
        return bool(self.state.away_until) or self.stop_requested.is_set()

    def _publish(self) -> dict:
        """What other threads may read of the state: replaced whole, once a turn."""
        state = self.state
        running = len(state.runs) + len(state.detached)
        state.published = {
            "held": len(state.held), "running": running, "counts": dict(state.counts),
            "stopping": self.stop_requested.is_set(), "paused": state.paused,
            "partitions": len(state.owned)}
        return state.published
