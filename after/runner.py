"""Running jobs and recording runs, off the worker's loop.

- :class:`Runner`: the pool of job threads. The loop launches a run; its thread calls the
  job (or, for an isolated run, waits on the child process that calls it: see
  :mod:`after.isolation`) and posts ``("finished", (docid, token, outcome, trace,
  response))`` to the inbox; or, when the thread comes to a run after this process's lease
  may have run out (it was queued, and the process frozen), posts ``("unbegun", (docid,
  token))`` without calling the job: the loop hands the task back.
- :class:`Recorder`: writes run records to ``<db>_runs`` and prunes the old ones, on a
  thread of its own, so a slow or unreachable database never holds up a decision.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from . import isolation
from . import task as rules
from .dates import from_ms, to_ms, utcnow
from .jobs import HTTP_JOBS, JobRegistry, TaskContext, call
from .store import StoreError, Unavailable, describe_error

log = logging.getLogger("after.worker")

__all__ = ["HTTP_JOBS", "Held", "Recorder", "Runner", "Seen", "next_deadline", "timed_out",
           "unbegun"]

PRUNE_EVERY = 10
SEEN_LIMIT = 100_000  # task revisions remembered to ignore stale feed events
RUNS_KEPT = 10_000  # run records kept in memory while the database cannot be reached


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
    # A start written ahead of the due instant (the lead window): the job begins when the
    # timer fires, with no write in between.
    fenced: bool = False
    unconfirmed: bool = False  # its start was accepted (202), not yet read back
    # Its start was written while this process surely held its lease until then (monotonic
    # seconds, Peers.sure_until): begun later, it is read back first
    sure_until: float = float("-inf")
    context: TaskContext | None = None  # what the job receives, made ahead of the launch

    @property
    def waiting_to_launch(self) -> bool:
        """Fenced (its start is written) and its job not begun."""
        return self.fenced and self.started is None


class Seen(OrderedDict):
    """The newest revision number seen or written of each task (a bounded LRU)."""

    def newer(self, doc: dict, recheck: bool = False) -> bool:
        """Remember ``doc``'s revision; False for one older than what this process saw or
        wrote, or the same one unless ``recheck``."""
        docid, number = doc["_id"], rules.rev_number(doc.get("_rev"))
        known = self.get(docid, 0)
        if number < known or (number == known and not recheck):
            return False
        self.saw(docid, number)
        return True

    def saw(self, docid: str, number: int) -> None:
        self[docid] = max(number, self.pop(docid, 0))
        if len(self) > SEEN_LIMIT:
            self.popitem(last=False)


class Runner:
    """Job threads; ``active`` holds the tokens of the runs they are on, ``children`` the
    child processes of the isolated ones."""

    def __init__(self, size: int, post: Callable[[tuple], None],
                 registry: JobRegistry | None = None, clock: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic):
        self.pool = ThreadPoolExecutor(size, thread_name_prefix="after-job")
        self.post = post
        self.registry = registry  # where an isolated run's child finds its job
        self.clock = clock  # epoch seconds, the worker's (the server's time as it knows it)
        self.mono = mono  # the clock of Held.sure_until
        self.active: set[str] = set()
        self.children: dict[str, isolation.Child] = {}
        # A run is queued until a job thread begins it (runs started ahead of their instant
        # may outnumber the threads): its future, and once begun, when (epoch ms).
        self.futures: dict[str, Future] = {}
        self.begun: dict[str, int] = {}

    @staticmethod
    def prepare(held: Held) -> None:
        """Make what the job receives now (a deep copy of the document), not at launch."""
        attempt = rules.counter(rules.meta(dict(held.doc)), "attempt") or 1
        held.context = TaskContext(held.doc, held.spec.date, attempt, held.spec.occurrence_id)

    def launch(self, held: Held, func, now: datetime, sure_until: float) -> float:
        """Run ``held``'s job (``func``, or the JobError resolving it raised); returns how
        late it starts, in seconds. In a child process when :func:`after.task.isolated`
        says so. A thread that comes to it at or after ``sure_until`` (monotonic) does not
        begin it (see _execute)."""
        held.started = now
        if held.spec.timeout:  # an estimate until a thread begins the run (timed_out)
            held.deadline_ms = to_ms(now) + int(held.spec.timeout * 1000)
        if held.context is None:
            self.prepare(held)
        context, held.context = held.context, None
        held.lateness = (now - from_ms(held.due_ms)).total_seconds()
        isolated = self.registry is not None and rules.isolated(held.doc, held.spec)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("running %s (job %s, attempt %d%s, %.1f ms late)", held.doc["_id"],
                      held.spec.job, context.attempt, ", isolated" if isolated else "",
                      held.lateness * 1000)
        self.active.add(held.token)
        child = isolation.Child() if isolated else None
        if child is not None:
            self.children[held.token] = child
        future = self.pool.submit(self._execute, held.doc["_id"], held.token, held.spec,
                                  context, func, child, sure_until)
        if future is not None:
            self.futures[held.token] = future
        return held.lateness

    def ended(self, token: str) -> None:
        self.active.discard(token)
        self.children.pop(token, None)
        self.futures.pop(token, None)
        self.begun.pop(token, None)

    def longest(self, now: datetime) -> float:
        """Seconds the oldest run a job thread is on has been going (0 when none)."""
        begun = self.begun.copy()  # (job threads add to it)
        return max(0.0, (to_ms(now) - min(begun.values())) / 1000) if begun else 0.0

    def withdraw(self, token: str) -> bool:
        """Take back a run still queued for a job thread (every thread taken: hung jobs,
        most likely): True when it will not begin."""
        future = self.futures.get(token)
        if future is None or token in self.begun or not future.cancel():
            return False
        self.ended(token)
        return True

    def _execute(self, docid: str, token: str, spec: rules.Spec, context: TaskContext,
                 func, child: isolation.Child | None = None,
                 sure_until: float = float("inf")) -> None:
        """On a pool thread: run the job (in ``child`` if given), post how it ended. Its
        timeout counts from here, not from the launch (it may have been queued). A run
        queued past ``sure_until`` (the process was frozen or starved while it waited) may
        have been taken over meanwhile: it is not begun, and the loop hands it back."""
        if self.mono() >= sure_until:
            self.post(("unbegun", (docid, token)))
            return
        self.begun[token] = int(self.clock() * 1000)
        deadline = time.monotonic() + spec.timeout if spec.timeout else None
        started = utcnow()
        if child is None:
            reply = call(func, context, spec.arguments)
        else:
            try:
                reply = isolation.run(child, self.registry, func, context, spec.arguments,
                                      deadline)
            except Exception as exc:  # no child process could be started
                reply = call(exc, context, spec.arguments)
        ended = utcnow()
        if reply is None:  # killed at its deadline
            outcome = rules.Outcome(rules.TIMEOUT, started, ended,
                                    error=rules.timeout_error(spec.timeout or 0, True))
        elif reply.ok:
            outcome = rules.Outcome(rules.OK, started, ended, result=reply.result)
        else:
            outcome = rules.Outcome(rules.FAILED, started, ended, error=reply.error)
        trace, response = (reply.trace, reply.response) if reply is not None else (None, None)
        self.post(("finished", (docid, token, outcome, trace, response)))

    def kill(self, token: str | None, why: str) -> None:
        """Kill the child process of an isolated run (nothing for a thread run)."""
        child = self.children.get(token) if token else None
        if child is not None:
            child.kill(why)

    def shutdown(self) -> None:
        """No new runs; the children of isolated runs still going are killed (their runs
        were recorded interrupted and handed back)."""
        for child in list(self.children.values()):
            if child is not None:
                child.kill("the worker stopped")
        self.pool.shutdown(wait=False, cancel_futures=True)


def timed_out(held: dict[str, Held], now_ms: int, begun: dict[str, int]) -> list[Held]:
    """The runs past their ``timeout`` at ``now_ms`` (each is reported once), counted from
    when a job thread began each (``begun``); one still queued has not begun its time."""
    late = []
    for h in held.values():
        if not (h.running and h.token and h.deadline_ms):
            continue
        timeout_ms = int((h.spec.timeout or 0) * 1000)
        at = begun.get(h.token)
        if at is None:
            h.deadline_ms = max(h.deadline_ms, now_ms + timeout_ms)
            continue
        h.deadline_ms = at + timeout_ms
        if now_ms >= h.deadline_ms:
            h.deadline_ms = None
            late.append(h)
    return late


def unbegun(held: dict[str, Held], now_ms: int, begun: dict[str, int], grace_ms: int
            ) -> list[Held]:
    """The runs launched at least ``grace_ms`` ago that no job thread has begun yet."""
    return [h for h in held.values()
            if h.running and h.token and h.started is not None and h.token not in begun
            and now_ms - to_ms(h.started) >= grace_ms]


def next_deadline(held: dict[str, Held]) -> float:
    """The earliest run deadline, in epoch seconds (inf when none)."""
    deadlines = [h.deadline_ms for h in held.values() if h.deadline_ms and h.token]
    return min(deadlines) / 1000 if deadlines else float("inf")


class Recorder:
    """Writes run records and prunes each task's old ones, on its own thread."""

    def __init__(self, store, db: str, *, keep: int, batch: int):
        self.store, self.db, self.keep, self.batch = store, db, keep, batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._backlog: list[dict] = []
        self._thread = threading.Thread(target=self._run, name="after-runs", daemon=True)

    def start(self) -> Recorder:
        self._thread.start()
        return self

    def record(self, run: dict) -> None:
        self._queue.put(run)

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout``), then stop."""
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        else:
            self._drain()
            self._write()

    def _drain(self, wait: float | None = None) -> bool:
        """Move what is queued to the backlog; False once told to stop."""
        try:
            item = self._queue.get(timeout=wait) if wait else self._queue.get_nowait()
            while True:
                if item is None:
                    return False
                self._backlog.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            return True

    def _run(self) -> None:
        going = True
        while going:
            going = self._drain(1.0 if not self._backlog else 2.0)
            if self._backlog:
                self._write()

    def _write(self) -> None:
        runs, self._backlog = self._backlog, []
        try:
            for start in range(0, len(runs), self.batch):
                self.store.bulk_docs(runs[start:start + self.batch], db=self.db)
        except Unavailable as exc:
            log.warning("cannot record %d run(s) yet: %s", len(runs), describe_error(exc))
            self._backlog = runs[-RUNS_KEPT:]  # bounded: the oldest go first
            return
        except (StoreError, ValueError, RecursionError) as exc:  # refused, not unreachable
            log.error("%d run record(s) refused by the database, dropped: %s", len(runs),
                      describe_error(exc))
            return
        for run in runs:
            if run["number"] > self.keep and run["number"] % PRUNE_EVERY == 0:
                self._prune(run["task"], run["number"] - self.keep)

    def _prune(self, docid: str, up_to: int) -> None:
        """Keep the newest ``keep`` run records of a task: delete those numbered up to
        ``up_to`` (checked every PRUNE_EVERY runs, so a task has at most that many extra)."""
        try:
            old, _ = self.store.find({"task": docid, "number": {"$lte": up_to}}, db=self.db,
                                     limit=1000, fields=["_id", "_rev"])
            if old:
                self.store.bulk_docs([{**d, "_deleted": True} for d in old], db=self.db)
        except StoreError as exc:
            log.warning("cannot prune the runs of %s: %s", docid, describe_error(exc))
