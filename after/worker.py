"""The worker: follows the feed, holds what is due soon, runs it, writes every transition.

One thread (the loop, in :meth:`Worker.run`) makes every decision, so the worker's state needs
no locks. The other threads only post events to its inbox:

- the changes follower posts each changed task of this worker's name;
- the timer posts a task id when its held occurrence falls due;
- the job pool posts each finished run;
- signal handlers only set flags (and wake the loop).

The loop takes what is in the inbox, decides what to write with the pure rules of
:mod:`after.task`, and writes it all in one ``_bulk_docs``. Every write carries ``_rev``: a
conflict means someone else changed the task, so it is re-read and decided again.

Leases: each process writes a heartbeat document (in ``<db>_workers``) every ``heartbeat``
seconds, valid for ``lease`` seconds. A task held or run by a process whose heartbeat has
expired is taken over by another process of the same name: a held task is simply claimed, a
running one is recorded as ``interrupted`` and run again (at least once).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from . import task as rules
from .dates import format_date, from_ms, parse_date, to_ms, utcnow
from .jobs import JobError, JobRegistry, TaskContext, run_job, to_result
from .peers import Peers
from .redact import redact, redact_text
from .store import ChangesFollower, StoreError, Unavailable, describe_error, winner
from .timer import Timer

log = logging.getLogger("after.worker")

SEEN_LIMIT = 100_000  # task revisions remembered to ignore stale feed events
HTTP_JOBS = ("http", "webhook")
PRUNE_EVERY = 10
DEFER = "\x00claim:"  # timer keys of deferred claims (task ids cannot hold a NUL... in practice)


@dataclass
class Settings:
    """How a worker process behaves; every field has a sensible default."""

    horizon: float = 300.0  # hold tasks due within this many seconds
    poll: float = 30.0  # re-query the due view this often (the feed's safety net)
    pool: int = 8  # job threads
    heartbeat: float = 5.0  # seconds between heartbeats
    lease: float = 30.0  # a process silent this long has lost what it held
    grace: float = 30.0  # on stop, how long running jobs may take to finish
    keep_runs: int = 100  # run records kept per task
    batch: int = 500  # most documents written in one request
    claim_delay: float = 1.0  # a task's non-preferred processes wait this long to claim it
    feed_heartbeat: float = 5.0


@dataclass
class Held:
    """A task this process holds on its timer or runs."""

    doc: dict
    spec: rules.Spec
    due_ms: int
    running: bool = False
    token: str | None = None  # identifies the current run
    started: datetime | None = None
    deadline_ms: int | None = None
    lateness: float = 0.0  # seconds from the due instant to the job's start


@dataclass
class Write:
    """A document to write, and why (decides what happens on success or conflict)."""

    kind: str  # claim | start | claimstart | finish | error | cancel | handback | park | resolve
    doc: dict
    outcome: rules.Outcome | None = None
    run: dict | None = None
    extra: dict = field(default_factory=dict)


class Worker:
    def __init__(self, store, name: str, registry: JobRegistry,
                 settings: Settings | None = None):
        self.store = store
        self.name = name
        self.registry = registry
        self.settings = settings or Settings()
        self.peers = Peers(store, name, lease=self.settings.lease)
        self.id, self.host, self.pid = self.peers.id, self.peers.host, self.peers.pid
        self.runs_db = f"{store.db}_runs"
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.held: dict[str, Held] = {}
        self.timer: Timer = Timer(self._on_timer)
        self.pool = ThreadPoolExecutor(self.settings.pool, thread_name_prefix="after-job")
        self.follower: ChangesFollower | None = None
        self.stop_requested = threading.Event()
        self.stop_now = threading.Event()
        self.pending: list[Write] = []
        self.seen: OrderedDict[str, int] = OrderedDict()
        self.deferred: dict[str, tuple[dict, rules.Spec, datetime]] = {}
        self.pending_runs: list[dict] = []
        self.next_heartbeat = 0.0
        self.poll_now = threading.Event()  # wakes the poller before its interval is over
        self.feed_lost = False
        self.jobs: dict[str, object] = {}  # resolved job functions, by name
        self.counts = {"runs": 0, "done": 0, "failed": 0, "missed": 0, "claimed": 0}
        self.ready = threading.Event()
        self.listeners: list = []  # callables(event, **info), e.g. metrics

    def load(self) -> tuple[int, int]:
        """(tasks held on the timer, tasks running); safe to call from another thread."""
        running = sum(1 for h in list(self.held.values()) if h.running)
        return len(self.held) - running, running

    # -- events from other threads -----------------------------------------------------------

    def _on_change(self, change: dict) -> None:
        doc = change.get("doc")
        if doc is not None:
            self.inbox.put(("change", doc))
        elif change.get("deleted"):
            self.inbox.put(("deleted", change["id"]))

    def _on_timer(self, key: str, due_ms: int, item) -> None:
        self.inbox.put(("fire", key))

    def _on_feed_state(self, connected: bool) -> None:
        self.inbox.put(("feed", connected))

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
        self._heartbeat(force=True)
        since = self.store.update_seq()
        self.timer.start()
        # The first poll runs at once on the poller's thread: on a large database the server
        # may take a while to index it, and what the feed brings meanwhile runs on time.
        self.poll_now.set()
        threading.Thread(target=self._poller, name="after-poll", daemon=True).start()
        self.follower = ChangesFollower(
            self.store, self._on_change, since=since, selector={"worker": self.name},
            heartbeat=self.settings.feed_heartbeat, on_state=self._on_feed_state,
        ).start()
        self.ready.set()
        log.info("worker %s ready", self.name)
        try:
            while not self.stop_requested.is_set():
                try:
                    self._turn()
                except Exception:  # a bug must not take the process (and its leases) down
                    log.exception("unexpected error in the worker loop; carrying on")
                    self.stop_requested.wait(1.0)
        finally:
            code = self._shutdown()
        return code

    def _turn(self) -> None:
        now = time.time()
        wait = max(0.0, min(self.next_heartbeat, self._next_deadline()) - now)
        if self.pending or self.pending_runs:
            wait = min(wait, 1.0)
        events = self._drain(wait)
        writes: list[Write] = []
        for kind, value in events:
            try:
                writes.extend(self._handle_event(kind, value))
            except Exception as exc:  # never crash on a document
                writes.extend(self._unexpected(kind, value, exc))
        writes.extend(self._check_deadlines())
        self._flush(writes)
        if time.time() >= self.next_heartbeat:
            self._heartbeat()

    def _drain(self, wait: float, most: int = 2000) -> list:
        events = []
        try:
            events.append(self.inbox.get(timeout=min(wait, 1.0)))
            while len(events) < most:
                events.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        return events

    def _handle_event(self, kind: str, value) -> list[Write]:
        if kind == "change":
            return self.on_change(value)
        if kind == "recheck":
            return self.on_change(value, recheck=True)
        if kind == "fire":
            return self.on_fire(value)
        if kind == "finished":
            return self.on_finished(*value)
        if kind == "deleted":
            self._drop(value)
        elif kind == "feed":
            self.emit("feed", connected=value)
            if not value:
                self.feed_lost = True
            elif self.feed_lost:
                self.poll_now.set()  # re-check everything after a reconnect
        return []

    def _unexpected(self, kind: str, value, exc: Exception) -> list[Write]:
        docid = value.get("_id") if isinstance(value, dict) else value
        log.exception("unexpected error handling %s of %r", kind, docid)
        if kind != "change" or not isinstance(value, dict) or "_id" not in value:
            return []
        self._drop(value["_id"])
        message = redact_text(f"the worker could not process this task: "
                              f"{type(exc).__name__}: {exc}")
        return [Write("error", rules.mark_error(value, message, utcnow()))]

    # -- deciding ----------------------------------------------------------------------------

    def on_change(self, doc: dict, recheck: bool = False) -> list[Write]:
        """Decide what to do about the current version of a task document.

        ``recheck`` (from a poll) decides again on a version already seen: a task that was
        beyond the horizon may have come near, a holder may have died since."""
        docid = doc.get("_id", "")
        if docid.startswith("_design/"):
            return []
        resolutions = self._resolve_revisions(doc)
        if resolutions:
            return resolutions + self.on_change(doc, recheck)
        if doc.get("_deleted"):
            self._drop(docid)
            return []
        if not self._newer(doc, recheck):
            return []  # an echo of our own write, or older than what we know
        held = self.held.get(docid)
        if doc.get("worker") != self.name:
            self._drop(docid)
            return []
        now = utcnow()
        status = doc.get("status")
        info = doc.get(rules.NS) if isinstance(doc.get(rules.NS), dict) else {}
        owner = info.get("owner")

        if status in rules.FINISHED:
            self._drop(docid)
            return []
        if status in (rules.CANCEL, rules.RESCHEDULE) and info.get("started") and owner:
            # It is running somewhere: the process running it applies this when it finishes.
            if owner == self.id or self.peers.alive(owner):
                if held is not None:
                    held.doc = doc
                return []
        if status == rules.CANCEL:
            self._drop(docid)
            return [Write("cancel", rules.cancel(doc, now))]

        try:
            spec = rules.parse(doc)
            self._job(spec.job)
        except (rules.TaskError, JobError) as exc:
            self._drop(docid)
            message = redact_text(str(exc))
            log.warning("task %s cannot run: %s", docid, message)
            return [Write("error", rules.mark_error(doc, message, now))]

        if status in (rules.WAITING, rules.RESCHEDULE):
            self._drop(docid)
            if to_ms(spec.date) <= to_ms(now) + self.settings.horizon * 1000:
                return self._claim_or_defer(doc, spec, spec.date, now)
            if status == rules.RESCHEDULE:
                return [Write("park", rules.hand_back(doc))]
            return []

        due = self._due_of(info, spec)
        if status == rules.SCHEDULED:
            if owner == self.id:
                if held is not None and held.running:
                    return []
                self._hold(doc, spec, due)
                return []
            self._drop(docid)
            if not self.peers.alive(owner):
                log.info("taking over %s from %s (lease expired)", docid, owner)
                return self._claim_or_defer(doc, spec, due, now)
            return []

        if status == rules.RUNNING:
            if owner == self.id and held is None:
                # Ours, yet nothing runs it here (a job that runs keeps its hold): a start
                # the cluster did not confirm, dropped meanwhile on another branch's change.
                self._hold(doc, spec, due)
                return []
            if owner == self.id:
                if held is not None and not held.running:  # a start the cluster did not
                    held.doc = doc                          # confirm: start it again
                    self.timer.add(docid, to_ms(now), None)
                elif held is not None:
                    held.doc = doc
                return []  # ours: it ends when its run does
            if self.peers.alive(owner):
                self._drop(docid)
                return []
            # The process running it is gone: the run was interrupted; run it again.
            self._drop(docid)
            log.warning("task %s was running on %s, which stopped: running it again",
                        docid, owner)
            started = parse_date(info.get("started", format_date(now)), "after.started")
            outcome = rules.Outcome(rules.INTERRUPTED, started, now,
                                    error=f"interrupted: worker process {owner} stopped")
            finished = rules.finish(doc, spec, outcome, now)
            if finished["status"] == rules.SCHEDULED:  # run again, here, now
                finished[rules.NS].update(owner=self.id, due=format_date(now))
            run = self._run_record(doc, spec, outcome, owner=owner)
            return [Write("finish", finished, outcome=outcome, run=run,
                          extra={"spec": spec, "takeover": True})]
        return []

    def _resolve_revisions(self, doc: dict) -> list[Write]:
        """Concurrent writes on a cluster (or replication) left conflicting revisions: keep
        the revision CouchDB picked as the winner (every node picks the same) and delete the
        others, so every process decides on the same version."""
        losers = doc.pop("_conflicts", None)
        if not losers:
            return []
        log.warning("task %s had %d conflicting revision(s): keeping %s", doc["_id"],
                    len(losers), doc.get("_rev"))
        return [Write("resolve", {"_id": doc["_id"], "_rev": rev, "_deleted": True})
                for rev in losers]

    def _newer(self, doc: dict, recheck: bool = False) -> bool:
        """Remember the newest revision seen of each task (a bounded LRU); False for one
        that is older than what this process already saw or wrote, or the same one unless
        ``recheck``."""
        docid, number = doc["_id"], rules.rev_number(doc.get("_rev"))
        known = self.seen.get(docid, 0)
        if number < known or (number == known and not recheck):
            return False
        self._saw(docid, number)
        return True

    def _saw(self, docid: str, number: int) -> None:
        self.seen[docid] = max(number, self.seen.pop(docid, 0))
        if len(self.seen) > SEEN_LIMIT:
            self.seen.popitem(last=False)

    def _due_of(self, info: dict, spec: rules.Spec) -> datetime:
        try:
            return parse_date(info["due"], "after.due")
        except (KeyError, ValueError):
            return spec.date

    def _hold(self, doc: dict, spec: rules.Spec, due: datetime) -> None:
        due_ms = to_ms(due)
        held = self.held.get(doc["_id"])
        if held is not None and held.running:
            held.doc = doc
            return
        self.held[doc["_id"]] = Held(doc=doc, spec=spec, due_ms=due_ms)
        self.timer.add(doc["_id"], due_ms, None)

    def _drop(self, docid: str) -> None:
        held = self.held.get(docid)
        if held is not None and not held.running:
            del self.held[docid]
            self.timer.remove(docid)
        if self.deferred.pop(docid, None) is not None:
            self.timer.remove(DEFER + docid)

    # Sharing: the preferred process of a task (see Peers.preferred) claims it at once; the
    # others wait ``claim_delay`` and claim it only if nobody has (it died, or is not known
    # yet). Claims stay exact through ``_rev`` either way; this only spreads the work.

    def _claim_or_defer(self, doc: dict, spec: rules.Spec, due: datetime,
                        now: datetime) -> list[Write]:
        if self.peers.preferred(doc["_id"]):
            return [self._claim(doc, spec, due, now)]
        self.deferred[doc["_id"]] = (doc, spec, due)
        self.timer.add(DEFER + doc["_id"], to_ms(now) + int(self.settings.claim_delay * 1000),
                       None)
        return []

    def _on_deferred(self, docid: str) -> list[Write]:
        entry = self.deferred.pop(docid, None)
        if entry is None:
            return []
        doc, spec, due = entry
        if self.seen.get(docid, 0) > rules.rev_number(doc.get("_rev")):
            return []  # it changed meanwhile (claimed elsewhere, most likely): nothing to do
        return [self._claim(doc, spec, due, utcnow())]

    def _claim(self, doc: dict, spec: rules.Spec, due: datetime, now: datetime) -> Write:
        """The claim of a task; one already due is claimed and started in the same write
        (``running`` at once: one revision, one round trip and one feed event fewer)."""
        claimed = rules.claim(doc, self.id, due, now)
        if due > now or rules.missed(spec, due, now):
            return Write("claim", claimed, extra={"spec": spec})
        number = int(rules.meta(dict(doc)).get("runs", 0)) + 1
        token = uuid.uuid4().hex[:8]
        return Write("claimstart", rules.start(claimed, self.id, now, number),
                     extra={"spec": spec, "token": token, "due": due})

    def on_fire(self, docid: str) -> list[Write]:
        if docid.startswith(DEFER):
            return self._on_deferred(docid[len(DEFER):])
        held = self.held.get(docid)
        if held is None or held.running:
            return []
        now = utcnow()
        due = from_ms(held.due_ms)
        if rules.missed(held.spec, due, now):
            late = (now - due).total_seconds()
            outcome = rules.Outcome(
                rules.MISSED, now, now,
                error=f"missed: would have started {late:.1f}s late "
                      f"(max_delay {held.spec.max_delay:g}s)")
            log.warning("task %s missed its run due %s", docid, format_date(due))
            held.running = True  # until the write lands
            return [Write("finish", rules.finish(held.doc, held.spec, outcome, now),
                          outcome=outcome, run=self._run_record(held.doc, held.spec, outcome),
                          extra={"spec": held.spec})]
        info = rules.meta(dict(held.doc))
        number = int(info.get("runs", 0)) + 1
        held.running = True
        held.token = uuid.uuid4().hex[:8]
        return [Write("start", rules.start(held.doc, self.id, now, number),
                      extra={"spec": held.spec, "token": held.token})]

    def _job(self, name: str):
        """The job's function (resolved once per process: the registry's lock and file checks
        are not paid per run); raises JobError."""
        func = self.jobs.get(name)
        if func is None:
            func = self.jobs[name] = self.registry.resolve(name)
        return func

    def _launch(self, held: Held) -> None:
        held.started = utcnow()
        if held.spec.timeout:
            held.deadline_ms = to_ms(held.started) + int(held.spec.timeout * 1000)
        attempt = int(rules.meta(held.doc).get("attempt", 1))
        context = TaskContext(held.doc, held.spec.date, attempt)
        held.lateness = (held.started - from_ms(held.due_ms)).total_seconds()
        log.debug("running %s (job %s, attempt %d, %.1f ms late)", held.doc["_id"],
                  held.spec.job, attempt, held.lateness * 1000)
        self.emit("start", job=held.spec.job, lateness=held.lateness)
        try:
            func = self._job(held.spec.job)
        except JobError as exc:  # the module went away since the claim
            func = exc
        self.pool.submit(self._execute, held.doc["_id"], held.token, held.spec, context, func)

    def _execute(self, docid: str, token: str, spec: rules.Spec, context: TaskContext,
                 func) -> None:
        """On a pool thread: run the job, post how it ended."""
        started = utcnow()
        response = None
        try:
            if isinstance(func, Exception):
                raise func
            value = run_job(func, context, spec.arguments)
            ended = utcnow()
            if spec.job in HTTP_JOBS and isinstance(value, dict) and "status" in value:
                # the whole response goes to the run record; the task keeps a summary
                response = redact(value)
                value = {k: value.get(k) for k in ("status", "duration_ms", "url")}
            outcome = rules.Outcome(rules.OK, started, ended, result=redact(to_result(value)))
        except BaseException as exc:  # a job may raise anything; the worker carries on
            response = getattr(exc, "response", None)
            message = redact_text(f"{type(exc).__name__}: {exc}")
            outcome = rules.Outcome(rules.FAILED, started, utcnow(), error=message)
            response = redact(response) if isinstance(response, dict) else None
            trace = redact_text(traceback.format_exc(limit=20))
            self.inbox.put(("finished", (docid, token, outcome, trace, response)))
            return
        self.inbox.put(("finished", (docid, token, outcome, None, response)))

    def on_finished(self, docid: str, token: str, outcome: rules.Outcome,
                    trace: str | None, response: dict | None) -> list[Write]:
        held = self.held.get(docid)
        if held is None or held.token != token:
            log.warning("task %s: a run that had timed out or was taken over ended (%s)",
                        docid, outcome.outcome)
            return []
        return self._finish(held, outcome, trace, response)

    def _finish(self, held: Held, outcome: rules.Outcome, trace=None, response=None):
        now = utcnow()
        held.token = None
        docid = held.doc["_id"]
        if outcome.ok:
            log.info("done %s (job %s, attempt %d) in %.1f ms, started %.1f ms late", docid,
                     held.spec.job, int(rules.meta(dict(held.doc)).get("attempt", 1)),
                     outcome.duration_ms, held.lateness * 1000)
        else:
            log.warning("%s %s (job %s): %s", outcome.outcome, docid, held.spec.job,
                        outcome.error)
        new = rules.finish(held.doc, held.spec, outcome, now)
        run = self._run_record(held.doc, held.spec, outcome, trace=trace, response=response)
        return [Write("finish", new, outcome=outcome, run=run, extra={"spec": held.spec})]

    def _next_deadline(self) -> float:
        deadlines = [h.deadline_ms for h in self.held.values() if h.deadline_ms and h.token]
        return min(deadlines) / 1000 if deadlines else float("inf")

    def _check_deadlines(self) -> list[Write]:
        writes: list[Write] = []
        now_ms = to_ms(utcnow())
        for held in list(self.held.values()):
            if held.running and held.token and held.deadline_ms and now_ms >= held.deadline_ms:
                held.deadline_ms = None
                outcome = rules.Outcome(
                    rules.TIMEOUT, held.started, utcnow(),
                    error=f"timeout: the run took longer than {held.spec.timeout:g}s")
                writes.extend(self._finish(held, outcome))
        return writes

    def _run_record(self, doc, spec, outcome: rules.Outcome, *, owner: str | None = None,
                    trace: str | None = None, response: dict | None = None) -> dict:
        info = rules.meta(dict(doc))
        number = int(info.get("run") or info.get("runs", 0) + 1)
        record = {
            "_id": f"{doc['_id']}#{number:08d}#{uuid.uuid4().hex[:6]}",
            "type": "run",
            "task": doc["_id"],
            "number": number,
            "attempt": int(info.get("attempt", 1)) or 1,
            "worker": self.name,
            "process": owner or self.id,
            "host": self.host,
            "pid": self.pid,
            "job": spec.job if spec else None,
            "scheduled": info.get("due") or doc.get("date"),
            "started": format_date(outcome.started),
            "ended": format_date(outcome.ended),
            "duration_ms": outcome.duration_ms,
            "outcome": outcome.outcome,
        }
        if outcome.ok:
            record["result"] = outcome.result
        else:
            record["error"] = {"message": outcome.error}
            if trace:
                record["error"]["traceback"] = trace
        if response is not None:
            record["response"] = response
        return record

    # -- writing -----------------------------------------------------------------------------

    def _flush(self, writes: list[Write], rounds: int = 5) -> None:
        writes = self.pending + writes
        self.pending = []
        for _ in range(rounds):
            if not writes:
                break
            writes = self._write_batch(writes)
        self.pending.extend(writes)  # still conflicting after several rounds: next turn
        if self.pending_runs:
            runs, self.pending_runs = self.pending_runs, []
            try:
                for start in range(0, len(runs), self.settings.batch):
                    self.store.bulk_docs(runs[start:start + self.settings.batch],
                                         db=self.runs_db)
            except StoreError as exc:
                log.warning("cannot record %d run(s) yet: %s", len(runs), describe_error(exc))
                self.pending_runs = runs
                return
            for run in runs:
                if run["number"] > self.settings.keep_runs and run["number"] % PRUNE_EVERY == 0:
                    self._prune_runs(run["task"], run["number"] - self.settings.keep_runs)

    def _prune_runs(self, docid: str, up_to: int) -> None:
        """Keep the newest ``keep_runs`` run records of a task: delete those numbered up to
        ``up_to`` (checked every PRUNE_EVERY runs, so a task has at most that many extra)."""
        try:
            old, _ = self.store.find({"task": docid, "number": {"$lte": up_to}},
                                     db=self.runs_db, limit=1000, fields=["_id", "_rev"])
            if old:
                self.store.bulk_docs([{**d, "_deleted": True} for d in old], db=self.runs_db)
        except StoreError as exc:
            log.warning("cannot prune the runs of %s: %s", docid, describe_error(exc))

    def _write_batch(self, writes: list[Write]) -> list[Write]:
        """Write; returns the writes to try again (re-decided after conflicts)."""
        again: list[Write] = []
        conflicted: list[Write] = []
        writes, later = unique_ids(writes)
        for write in later:
            # Two decisions on one task in the same turn (its feed change and a poll's copy):
            # one request must not carry both (pouchdb-server would branch the document).
            # The later one is decided again once the first has landed.
            (again if write.kind == "resolve" else conflicted).append(write)
        for start in range(0, len(writes), self.settings.batch):
            chunk = writes[start:start + self.settings.batch]
            try:
                results = self.store.bulk_docs([w.doc for w in chunk])
            except StoreError as exc:
                log.warning("cannot write %d task update(s) yet: %s", len(chunk),
                            describe_error(exc))
                self.pending.extend(chunk)
                continue
            for write, result in zip(chunk, results, strict=True):
                error = result.get("error")
                if write.kind == "resolve":
                    continue  # done, or someone else resolved it first
                if error is None:
                    if result.get("accepted"):
                        write.extra["accepted"] = True
                    self._written(write)
                elif error == "conflict":
                    conflicted.append(write)
                elif error == "forbidden":
                    reason = result.get("reason", "refused by the database")
                    if write.kind == "error":
                        log.error("task %s: even its error was refused: %s",
                                  write.doc["_id"], reason)
                        self._drop(write.doc["_id"])
                        continue
                    again.append(Write("error", rules.mark_error(write.doc, reason,
                                                                 utcnow())))
                else:
                    log.warning("task %s: write failed (%s), retrying", write.doc["_id"],
                                error)
                    self.pending.append(write)
        if conflicted:
            again.extend(self._resolve_conflicts(conflicted))
        return again

    def _written(self, write: Write) -> None:
        doc = write.doc
        docid = doc["_id"]
        self._saw(docid, rules.rev_number(doc["_rev"]))
        if write.kind == "claim":
            self.counts["claimed"] += 1
            spec = write.extra["spec"]
            self._hold(doc, spec, parse_date(doc[rules.NS]["due"], "after.due"))
        elif write.kind in ("start", "claimstart"):
            if write.kind == "claimstart":
                self.counts["claimed"] += 1
                self.held[docid] = Held(doc=doc, spec=write.extra["spec"],
                                        due_ms=to_ms(write.extra["due"]), running=True,
                                        token=write.extra["token"])
            held = self.held.get(docid)
            if held is None or held.token != write.extra["token"]:
                return
            held.doc = doc
            if write.extra.get("accepted") and not self._confirmed(doc):
                held.running, held.token = False, None
                return
            self._launch(held)
        elif write.kind == "finish":
            if write.run is not None:
                self.pending_runs.append(write.run)
            if write.outcome is not None:
                spec = write.extra.get("spec")
                self._count(write.outcome, spec.job if spec else None)
            held = self.held.pop(docid, None)
            if held is not None:
                self.timer.remove(docid)
            if doc["status"] == rules.SCHEDULED and doc[rules.NS].get("owner") == self.id:
                self._hold(doc, write.extra["spec"], parse_date(doc[rules.NS]["due"],
                                                                "after.due"))
            elif doc["status"] in (rules.WAITING, rules.RESCHEDULE):
                # The next occurrence: claim it now if it is near (the feed's echo of this
                # write is a revision already seen, so it would be ignored).
                self.inbox.put(("recheck", doc))
        elif write.kind == "handback":
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

    def _resolve_conflicts(self, writes: list[Write]) -> list[Write]:
        try:
            current = self.store.bulk_get([w.doc["_id"] for w in writes])
        except StoreError as exc:
            log.warning("cannot re-read %d conflicting task(s) yet: %s", len(writes),
                        describe_error(exc))
            self.pending.extend(writes)
            return []
        again: list[Write] = []
        now = utcnow()
        for write in writes:
            docid = write.doc["_id"]
            fresh = current.get(docid)
            if fresh is None:  # deleted meanwhile
                self.held.pop(docid, None)
                self.timer.remove(docid)
                continue
            if write.kind == "finish":
                again.extend(self._refinish(write, fresh, now))
                continue
            held = self.held.get(docid)
            if held is not None and write.kind == "start" and held.token == write.extra["token"]:
                held.running = False
                held.token = None
            self.seen.pop(docid, None)  # decide again on the version just read
            again.extend(self.on_change(fresh))
        return again

    def _refinish(self, write: Write, fresh: dict, now: datetime) -> list[Write]:
        """Our run ended but the task changed meanwhile: apply the outcome to the new version,
        unless another process has taken the task over (then only the run is recorded)."""
        info = fresh.get(rules.NS) if isinstance(fresh.get(rules.NS), dict) else {}
        takeover = write.extra.get("takeover")
        expected_owner = None if takeover else self.id
        if takeover and fresh.get("status") != rules.RUNNING:
            self.seen.pop(fresh["_id"], None)
            return self.on_change(fresh)
        if not takeover and info.get("owner") != expected_owner:
            if write.run is not None:
                self.pending_runs.append(write.run)
            self.held.pop(fresh["_id"], None)
            return []
        spec = write.extra["spec"]
        new = rules.finish(fresh, spec, write.outcome, now)
        if takeover and new["status"] == rules.SCHEDULED:
            new[rules.NS]["owner"] = self.id
            new[rules.NS]["due"] = format_date(now)
        return [Write("finish", new, outcome=write.outcome, run=write.run, extra=write.extra)]

    # -- the heartbeat (the lease on what this process holds) ----------------------------------

    def _heartbeat(self, force: bool = False) -> None:
        self.next_heartbeat = time.time() + self.settings.heartbeat
        held, running = self.load()
        self.peers.beat({
            "held": held,
            "running": running,
            "counts": dict(self.counts),
            "stopping": self.stop_requested.is_set(),
        }, force=force)

    # -- polling the due view ----------------------------------------------------------------

    def _query_due(self) -> tuple[list[dict], bool]:
        """This name's tasks due within the horizon, and those whose holder may be gone
        (raises StoreError); and whether a page came back full (a backlog)."""
        now_ms = to_ms(utcnow())
        horizon_ms = now_ms + int(self.settings.horizon * 1000)
        ranges = [
            (rules.WAITING, 0, horizon_ms),
            (rules.RESCHEDULE, 0, {}),
            (rules.CANCEL, 0, {}),
            (rules.SCHEDULED, 0, {}),
            (rules.RUNNING, 0, {}),
        ]
        docs, backlog = [], False
        for status, low, high in ranges:
            rows = self.store.view(
                "after", "due", startkey=[self.name, status, low],
                endkey=[self.name, status, high], include_docs=True, conflicts=True,
                limit=self.settings.batch * 4,
            )
            backlog = backlog or len(rows) >= self.settings.batch * 4
            docs.extend(row["doc"] for row in rows if row.get("doc"))
        return docs, backlog

    def _poller(self) -> None:
        """Polls, on a thread of their own: the view query can be slow (the server indexes
        what changed since the last one), and must never hold up the worker's loop. What it
        finds goes to the inbox, to be decided on the loop.

        The feed brings changes; polling is the safety net, and the way tasks created long
        ago come into the horizon."""
        interval = self.settings.poll
        while not self.stop_requested.is_set():
            self.poll_now.wait(interval)
            self.poll_now.clear()
            if self.stop_requested.is_set():
                return
            try:
                docs, backlog = self._query_due()
            except StoreError as exc:
                log.warning("cannot query due tasks: %s", describe_error(exc))
                interval = min(5.0, self.settings.poll)
                continue
            for doc in docs:
                self.inbox.put(("recheck", doc))
            interval = 0.5 if backlog else self.settings.poll  # a backlog: come back soon

    # -- stopping ----------------------------------------------------------------------------

    def _shutdown(self) -> int:
        log.info("worker %s stopping", self.name)
        if self.follower is not None:
            self.follower.stop(timeout=1.0)
        self.timer.stop(timeout=2)
        if self.stop_now.is_set():
            self.pool.shutdown(wait=False, cancel_futures=True)
            log.warning("stopped at once: held and running tasks return when the lease "
                        "(%gs) runs out", self.settings.lease)
            return 130
        # hand back what is held but not running
        back = [Write("handback", rules.hand_back(h.doc))
                for h in self.held.values() if not h.running]
        self._flush(back)
        deadline = time.time() + self.settings.grace
        while any(h.running for h in self.held.values()) and time.time() < deadline:
            if self.stop_now.is_set():
                break
            writes = []
            for kind, value in self._drain(min(0.5, max(0.0, deadline - time.time()))):
                if kind == "finished":
                    writes.extend(self.on_finished(*value))
                elif kind == "change":
                    held = self.held.get(value.get("_id"))
                    if held is not None and held.running:
                        held.doc = value if rules.rev_number(value.get("_rev")) > \
                            rules.rev_number(held.doc.get("_rev")) else held.doc
            writes.extend(self._check_deadlines())
            self._flush(writes)
        leftovers = []
        for held in self.held.values():
            if held.running and held.token:
                outcome = rules.Outcome(rules.INTERRUPTED, held.started or utcnow(), utcnow(),
                                        error="interrupted: the worker stopped before the run "
                                              "ended (grace period over)")
                self.pending_runs.append(self._run_record(held.doc, held.spec, outcome))
                leftovers.append(Write("handback", rules.hand_back(held.doc)))
        self._flush(leftovers)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.peers.leave()
        if self.pending:
            log.error("%d task update(s) could not be written before exit; their leases "
                      "will expire and another process will take them", len(self.pending))
        log.info("worker %s stopped", self.name)
        return 130 if self.stop_now.is_set() else 0


def unique_ids(writes: list[Write]) -> tuple[list[Write], list[Write]]:
    """The writes with the first of each document id, and the others."""
    first, later, ids = [], [], set()
    for write in writes:
        (later if write.doc["_id"] in ids else first).append(write)
        ids.add(write.doc["_id"])
    return first, later


__all__ = ["Settings", "Worker", "Unavailable"]
