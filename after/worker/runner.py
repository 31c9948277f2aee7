"""Running jobs and recording runs, off the worker's loop.

- :class:`Runner`: the pool of job threads. The loop launches a run; its thread calls the
  job (or, for an isolated run, waits on the child process that calls it: see
  :mod:`after.worker.isolation`) and posts ``("finished", (docid, token, outcome, trace,
  response))`` to the inbox; or, when the thread comes to a run after this process's lease
  may have run out (it was queued, and the process frozen), posts ``("unbegun", (docid,
  token))`` without calling the job: the loop lets the run go.
- :class:`Recorder`: writes run records to ``<db>_runs`` and prunes the old ones, on a
  thread of its own, so a slow or unreachable database never holds up a decision.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime

from after.couch.store import StoreError, Unavailable, describe_error
from after.jobs import JobRegistry, TaskContext, call
from after.rules import task as rules
from after.rules.dates import from_ms, to_ms, utcnow
from after.rules.redact import redact_text
from after.worker import isolation
from after.worker.intents import INTENDED

log = logging.getLogger("after.worker")

__all__ = ["Recorder", "Runner", "next_deadline", "timed_out"]

PRUNE_EVERY = 10
RUNS_KEPT = 10_000  # run records kept in memory while the database cannot be reached


class Queued:
    """A job handed to :class:`JobThreads`, not begun yet: :meth:`cancel` takes it back."""

    __slots__ = ("fn", "args", "_pool")

    def __init__(self, pool: JobThreads, fn: Callable, args: tuple):
        self.fn, self.args, self._pool = fn, args, pool

    def cancel(self) -> bool:
        """True when no thread will begin it (taken back before one did)."""
        return self._pool._claim(self)


class JobThreads:
    """``size`` job threads taking jobs from one queue, in order: what a
    :class:`~concurrent.futures.ThreadPoolExecutor` does here, without a Future (a condition
    and its locks) for each job. The runner needs no result back (a job thread posts its
    run's end to the loop) and one thing more: a job still queued can be taken back. A job
    is claimed once, by a thread that begins it or by :meth:`Queued.cancel`, whichever
    comes first (a ``dict.pop``: one of them gets it). A burst of 1,000 due runs of a job
    that does nothing, in one process, from their instant to their ends taken by the loop:
    41 us a run with the executor, 26 with these threads (``Runner.cancels`` keeping the
    context, whose event is made only when asked for, is part of it)."""

    def __init__(self, size: int, name: str = "after-job"):
        self.size, self.name = max(1, size), name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queued: dict[int, Queued] = {}  # not claimed yet, by id
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable, *args) -> Queued:
        if self._closed:  # (as the executor: a run launched then would wait for ever)
            raise RuntimeError("the job threads are shut down")
        if not self._threads:  # (started with the first job)
            self._threads = [threading.Thread(target=self._run, name=f"{self.name}_{n}",
                                              daemon=True) for n in range(self.size)]
            for thread in self._threads:
                thread.start()
        item = Queued(self, fn, args)
        self._queued[id(item)] = item
        self._queue.put(item)
        return item

    def _claim(self, item: Queued) -> bool:
        return self._queued.pop(id(item), None) is not None

    def shutdown(self, wait: bool = False, cancel_futures: bool = True) -> None:
        """No new jobs; those not begun are dropped (``cancel_futures``)."""
        self._closed = True
        if cancel_futures:
            self._queued.clear()
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if not self._claim(item):
                continue  # taken back
            try:
                item.fn(*item.args)
            except BaseException:  # (the runner's own guard says more; this thread lives on)
                log.exception("unexpected error on a job thread")
            del item


class Runner:
    """Job threads; ``active`` holds the tokens of the runs they are on or have queued,
    ``children`` the child processes of the isolated ones."""

    def __init__(self, size: int, post: Callable[[tuple], None],
                 registry: JobRegistry | None = None, clock: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic,
                 lease: Callable[[], float] = lambda: float("inf")):
        self.pool = JobThreads(size)
        self.size = size
        self.post = post
        self.registry = registry  # where an isolated run's child finds its job
        self.clock = clock  # epoch seconds, the worker's (the server's time as it knows it)
        self.mono = mono
        self.lease = lease  # until when (mono) this process surely holds its lease, now
        self.active: set[str] = set()
        self.children: dict[str, isolation.Child] = {}
        # A run is queued until a job thread begins it: its future, and once begun, when
        # (epoch ms).
        self.futures: dict[str, Queued] = {}
        self.begun: dict[str, int] = {}
        # each run's context, whose ``task.canceled`` a cancel sets (the event is made then,
        # or when the job asks for it: most runs never need one, and a burst's launches made
        # one each, a quarter of the cost of a launch)
        self.cancels: dict[str, TaskContext] = {}

    @staticmethod
    def prepare(run) -> None:
        """Make what the job receives now (a deep copy of the document), not at launch."""
        attempt = rules.counter(rules.meta(dict(run.doc)), "attempt") or 1
        run.context = TaskContext(run.doc, run.spec.date, attempt, run.spec.occurrence_id)

    def launch(self, run, func, now: datetime) -> float:
        """Run ``run``'s job (``func``, or the JobError resolving it raised); returns how
        late it starts, in seconds. In a child process when :func:`after.rules.task.isolated`
        says so. A thread that comes to it once this process's lease may have lapsed does
        not begin it (see _execute)."""
        run.started = now
        if run.spec.timeout:  # an estimate until a thread begins the run (timed_out)
            run.deadline_ms = to_ms(now) + int(run.spec.timeout * 1000)
        if run.context is None:
            self.prepare(run)
        context, run.context = run.context, None
        self.cancels[run.token] = context
        run.lateness = (now - from_ms(run.due_ms)).total_seconds()
        isolated = self.registry is not None and rules.isolated(run.doc, run.spec)
        self.active.add(run.token)
        child = isolation.Child() if isolated else None
        if child is not None:
            self.children[run.token] = child
        detached = bool(getattr(run, "detached", False))
        future = self.pool.submit(self._execute, run.docid, run.token, run.spec, context, func,
                                  child, detached)
        if future is not None:
            self.futures[run.token] = future
        return run.lateness

    def ended(self, token: str) -> None:
        self.cancels.pop(token, None)
        self.active.discard(token)
        self.children.pop(token, None)
        self.futures.pop(token, None)
        self.begun.pop(token, None)

    def queued(self) -> int:
        """Runs launched that no thread has begun yet."""
        return max(0, len(self.active) - len(self.begun))

    def longest(self, now: datetime) -> float:
        """Seconds the oldest run a job thread is on has been going (0 when none)."""
        begun = self.begun.copy()  # (job threads add to it)
        return max(0.0, (to_ms(now) - min(begun.values())) / 1000) if begun else 0.0

    def withdraw(self, token: str) -> bool:
        """Take back a run still queued for a job thread: True when it will not begin."""
        future = self.futures.get(token)
        if future is None or token in self.begun or not future.cancel():
            return False
        self.ended(token)
        return True

    def _execute(self, docid: str, token: str, spec: rules.Spec, context: TaskContext,
                 func, child: isolation.Child | None = None, detached: bool = False) -> None:
        """On a pool thread: :meth:`_begin`, and whatever it raises said to the loop as the
        run's end (failed): a pool thread's exception stays in its future, unseen, and a run
        the loop never hears of holds its task for ever (a clock read that raised on this
        thread did: one task in about 65 drains of 2,000, until after.couch.clock was
        mended)."""
        try:
            self._begin(docid, token, spec, context, func, child, detached)
        except BaseException as exc:
            log.exception("task %s: unexpected error on the job thread of its run", docid)
            now = utcnow()
            error = redact_text(f"the worker could not carry out the run: "
                                f"{type(exc).__name__}: {exc}")
            self.post(("finished", (docid, token, rules.Outcome(rules.FAILED, now, now,
                                                                error=error), None, None)))

    def _begin(self, docid: str, token: str, spec: rules.Spec, context: TaskContext,
               func, child: isolation.Child | None = None, detached: bool = False) -> None:
        """Run the job (in ``child`` if given), post how it ended. Its
        timeout counts from here, not from the launch (it may have been queued). A run
        queued past this process's lease (the process was frozen or starved while it
        waited) may have been taken over meanwhile: it is not begun (an overlap-allow run,
        apart from its task, is begun all the same). An isolated run's child checks the
        lease again as it comes to the job (:func:`after.worker.isolation.run`)."""
        real = time.monotonic()  # the machine's clock, which the child process reads too
        until = float("inf") if detached else self.lease()
        left = until - self.mono()
        if left <= 0:
            self.post(("unbegun", (docid, token)))
            return
        self.begun[token] = int(self.clock() * 1000)
        deadline = time.monotonic() + spec.timeout if spec.timeout else None
        started = utcnow()
        if child is None:
            reply = call(func, context, spec.arguments)
        else:
            # the child checks the lease last: this thread may be held up (the process
            # frozen) between the check above and the child's start
            not_after = real + left if left != float("inf") else None
            try:
                reply = isolation.run(child, self.registry, func, context, spec.arguments,
                                      deadline, not_after)
            except isolation.NotBegun:
                self.post(("unbegun", (docid, token)))
                return
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

    def cancel(self, token: str) -> None:
        """Tell a run its task was canceled: its ``task.canceled`` is set (an isolated run's
        child gets SIGTERM, which sets its own)."""
        context = self.cancels.get(token)
        if context is not None:
            context.canceled.set()
        child = self.children.get(token)
        if child is not None:
            child.terminate()

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


def timed_out(runs, now_ms: int, begun: dict[str, int]) -> list:
    """The runs past their ``timeout`` at ``now_ms`` (each is reported once), counted from
    when a job thread began each (``begun``); one still queued has not begun its time."""
    late = []
    for run in runs:
        if not (run.token and run.deadline_ms):
            continue
        timeout_ms = int((run.spec.timeout or 0) * 1000)
        at = begun.get(run.token)
        if at is None:
            run.deadline_ms = max(run.deadline_ms, now_ms + timeout_ms)
            continue
        run.deadline_ms = at + timeout_ms
        if now_ms >= run.deadline_ms:
            run.deadline_ms = None
            late.append(run)
    return late


def next_deadline(runs) -> float:
    """The earliest run deadline, in epoch seconds (inf when none)."""
    deadlines = [run.deadline_ms for run in runs if run.deadline_ms and run.token]
    return min(deadlines) / 1000 if deadlines else float("inf")


class Recorder:
    """Writes run records and prunes each task's old ones, on its own thread."""

    def __init__(self, store, db: str, *, keep: int, batch: int, process: str | None = None):
        self.store, self.db, self.keep, self.batch = store, db, keep, batch
        self.process = process  # the process whose records these are (see _over_conflicts)
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
        # the same record twice (a run recorded again by a later end): the later one, once
        runs = list({run.get("_id") or id(run): run for run in runs}.values())
        try:
            for start in range(0, len(runs), self.batch):
                chunk = runs[start:start + self.batch]
                results = self.store.bulk_docs(chunk, db=self.db)
                self._over_conflicts([doc for doc, result in zip(chunk, results, strict=False)
                                      if result.get("error") == "conflict"])
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

    def _over_conflicts(self, runs: list[dict]) -> None:
        """Records whose write over their intent conflicted. Over an intent still open (its
        answer came late, or was lost), written again. Over a record another process wrote
        (it took the run over, this process being found dead: recorded ``interrupted``),
        never: this one is kept beside it, marked ``late`` (the run did go on, and end:
        a run taken over ends ``interrupted``, and says when). A successor's verdict
        ``interrupted`` (on another process's run) over a record ``interrupted`` is dropped:
        the same verdict on the same run, twice (as a successor that read the run's intent
        twice records it: once taking the task over, once from the task's ``last_run``; or
        over the run's own record, its process thawed and told it was taken over). Over a
        record of the run's own end (its process, thawed, ended it before the successor's
        verdict was written), the verdict is kept beside: the run was taken over and run
        again."""
        if not runs:
            return
        current = self.store.bulk_get([doc["_id"] for doc in runs], db=self.db)
        again = []
        for doc in runs:
            found = current.get(doc["_id"])
            if found is None:
                again.append({k: v for k, v in doc.items() if k != "_rev"})
            elif found.get("outcome") == INTENDED:
                again.append({**doc, "_rev": found["_rev"]})
            elif doc.get("outcome") == found.get("outcome") == rules.INTERRUPTED \
                    and doc.get("process") != self.process:
                continue
            else:
                again.append({**{k: v for k, v in doc.items() if k != "_rev"},
                              "_id": doc["_id"] + rules.LATE_SUFFIX, "late": True})
        self.store.bulk_docs(again, db=self.db)

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
