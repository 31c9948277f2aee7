"""Runs in a child process of their own (``"isolation": "process"``), rq-style.

The job thread that launches an isolated run starts a child process, hands it what the job
needs, and waits for its :class:`~after.jobs.Reply`, for the child's death, or for the run's
``timeout``. A child past its timeout is killed with every process its job started (the
child is their subreaper, so they stay under it whatever their session:
:mod:`after.worker.proctree`) and its process group, and the job thread is free at once. A child
that dies without answering (``os._exit``, a signal, a crash in C code) fails the run with
:func:`after.rules.task.ended_its_process`; the worker process carries on.

Start method: ``forkserver``. The worker is multi-threaded (the loop, the feed, the timer,
the peers, the job threads, the recorder), so ``fork`` would copy it mid-flight: locks
another thread held (logging, the HTTP client's pool, the store) stay locked forever in the
child, and the child would inherit every descriptor, among them the pid file's ``flock``
(a worker killed while its child ran on would look alive to ``after start``) and the
worker's signal handlers. ``spawn`` is safe but starts an interpreter and imports the
scheduler for each run. The fork server is started once per worker process, at its first
isolated run, as a fresh interpreter (an exec, with none of the worker's descriptors but
its own pipes, and the default signal handlers) that imports this module ahead
(:data:`PRELOAD`); each run is a ``fork`` of that single-threaded server: about 10 ms, 10
to 35 ms in a worker on a loaded 2-core machine, against 0.1 ms in a thread
(docs/performance.rst). ``set_forkserver_preload`` is process-wide: a program that embeds a
worker and uses the fork server itself gets this module preloaded in its children too.

In the child, which first makes itself a session (and process group) of its own: a Ctrl+C in
the worker's terminal and the SIGTERM of ``after stop`` do not reach it (a graceful stop
lets it finish within the grace, as a job thread would), and a timeout kills the whole
group. The job is resolved by name from the jobs folder through a
:class:`~after.jobs.JobRegistry` of its own, under the same rules as in the worker (a
registered job is imported from the module that registered it in the worker, a name the
worker imported, never one a document gave). It receives the same
:class:`~after.jobs.TaskContext`. A thread watches the worker: if the worker dies (SIGKILL),
the child kills every process under it and its group, so that the run the lease gives to
another process is not run twice at once.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from multiprocessing import spawn
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from after.jobs import MODULE_PREFIX, JobRegistry, Reply, TaskContext, call
from after.process import setup_logging  # loaded in the fork server, not in each child
from after.rules import task as rules
from after.worker import proctree

log = logging.getLogger("after.worker")

#: Seconds a child that has answered may take to exit (threads of its job that do not end)
#: before it is killed.
EXIT_GRACE = 1.0
#: What the fork server imports once, so that a child starts with it loaded.
PRELOAD = ["after.worker.isolation"]

#: The name of every child process of an isolated run begins with this.
NAME_PREFIX = "after-job-"

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


def _prepare(data: dict, prepare=spawn.prepare) -> None:
    """multiprocessing's preparation of a new child, but for ours without running the
    worker's ``__main__`` again: a script that starts a worker (without an ``if __name__ ==
    "__main__"`` guard) would start one in each child. Jobs never need it: they come from the
    jobs folder. (In effect in the fork server and its children, which import this module
    ahead; other children are prepared as multiprocessing does.)"""
    if str(data.get("name", "")).startswith(NAME_PREFIX):
        data = {k: v for k, v in data.items()
                if k not in ("init_main_from_path", "init_main_from_name")}
    prepare(data)


spawn.prepare = _prepare
# Process.start and a process's exit code read its sentinel; multiprocessing reads every
# child's from any thread that starts another (its cleanup of ended children): two readers
# at once lose an exit code. Starts and exit-code reads of this module go one at a time.
_lock = threading.Lock()


class Child:
    """One isolated run, as its job thread sees it; :meth:`kill` may come from any thread."""

    def __init__(self) -> None:
        self.process: multiprocessing.process.BaseProcess | None = None
        self.ended = False
        self.killed: str | None = None  # why it was killed, if it was

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def terminate(self) -> None:
        """SIGTERM the child (its job's ``task.canceled`` is set; see _child)."""
        pid = self.pid
        if pid is None or self.ended:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self, why: str) -> None:
        """SIGKILL the child, every process its job started (whatever their session: the
        child is their subreaper, :mod:`after.worker.proctree`) and its process group."""
        self.killed = self.killed or why
        pid = self.pid
        if pid is None or self.ended:
            return
        proctree.kill_tree(pid)


class NotBegun(Exception):
    """The child came to the job at or past the run's ``not_after``: it did not call it."""


#: What a child answers instead of a Reply when it does not begin the job.
NOT_BEGUN = "not begun"


def run(child: Child, registry: JobRegistry, func: Callable | Exception, context: TaskContext,
        arguments: Any, deadline: float | None = None,
        not_after: float | None = None) -> Reply | None:
    """Run the job of ``context`` in a child process; its Reply, or a failed one when the
    child ended without answering. None: it was still running at ``deadline`` (a
    ``time.monotonic()`` instant) and was killed. ``func`` is what the worker resolved
    (an exception: the job cannot run, and no child is started).

    ``not_after`` (a ``time.monotonic()`` instant, the same clock in every process of the
    machine): the child calls the job only before it, and raises :class:`NotBegun`
    otherwise. The worker checks its lease before it starts a child, but a worker frozen
    (SIGSTOP) between that check and the child's start would otherwise begin, after the thaw,
    a run another process may have taken over and run meanwhile; the child is not frozen
    with it, and checks last."""
    if isinstance(func, Exception):
        return call(func, context, arguments)
    reader, writer = _context.Pipe(duplex=False)
    child.process = _context.Process(
        target=_child, name=f"{NAME_PREFIX}{context.job}", args=(
            writer, registry.spec, context.job, _module_of(func), dict(context.doc),
            context.date, context.attempt, arguments, _logging(), context.occurrence,
            not_after))
    try:
        with _lock:
            child.process.start()
    finally:
        writer.close()
    try:
        reply = _await(child, reader, deadline)
        if reply == NOT_BEGUN:
            raise NotBegun(context.id)
        return reply
    finally:
        reader.close()
        child.ended = True
        child.process.close()


def _await(child: Child, reader: Connection, deadline: float | None) -> Reply | None:
    process = child.process
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not wait([reader, process.sentinel], left) and child.killed is None:
        child.kill("timeout")
    reply = None
    if reader.poll():
        try:
            reply = reader.recv()
        except (EOFError, OSError):  # it died without a word
            reply = None
    if reply is not None:
        wait([process.sentinel], EXIT_GRACE)
    else:
        wait([process.sentinel])
    with _lock:
        code = process.exitcode
    if code is None:  # answered, but threads of its job still hold it up
        child.kill("answered")
        wait([process.sentinel])
        with _lock:
            code = process.exitcode
    if reply is not None:
        return reply
    if child.killed == "timeout":
        return None
    if child.killed is not None:
        return Reply(False, error=f"interrupted: its process was killed ({child.killed})")
    return Reply(False, error=rules.ended_its_process(code))


def _module_of(func: Callable) -> str | None:
    """The module to import in the child for a job the worker has registered (``@job`` in a
    module it imported itself); None for a jobs-folder job (the registry loads it)."""
    module = getattr(func, "__module__", None)
    if not isinstance(module, str) or module.startswith(f"{MODULE_PREFIX}.") \
            or module in ("__main__", "__mp_main__"):
        return None
    return module


def _logging() -> tuple[int, list[str], bool]:
    """The worker's logging, for the child: level, log files, and whether to stderr."""
    root = logging.getLogger()
    files = [h.baseFilename for h in root.handlers if isinstance(h, logging.FileHandler)]
    stderr = any(type(h) is logging.StreamHandler for h in root.handlers)
    return root.level, files, stderr


# -- in the child ------------------------------------------------------------------------------


def _child(answer: Connection, folder: tuple | str, name: str, module: str | None, doc: dict,
           date: datetime, attempt: int, arguments: Any, logs: tuple,
           occurrence: str | None = None, not_after: float | None = None) -> None:
    os.setsid()  # a session and process group of its own (see the module's docstring)
    proctree.adopt_orphans()  # every process its job starts stays under it, to be killed
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_orphaned, args=(parent,), name="after-orphaned",
                         daemon=True).start()
    _setup_logging(*logs)
    try:
        if module is not None:
            importlib.import_module(module)
        func: Callable | Exception = JobRegistry.of(folder).resolve(name)
    except Exception as exc:  # JobError: the module went away, or fails to import now
        func = exc
    context = TaskContext(doc, date, attempt, occurrence)
    # a cancel written while it runs: the worker sends SIGTERM, the job sees task.canceled
    signal.signal(signal.SIGTERM, _canceler(context))
    if (not_after is not None and time.monotonic() >= not_after) \
            or (parent is not None and not parent.is_alive()):
        # the worker was held up past its lease (see run), or killed while this child
        # started (on a loaded machine, before the watch on it could end this one): the
        # run is another process's now
        with contextlib.suppress(OSError):
            answer.send(NOT_BEGUN)
        answer.close()
        return
    reply = call(func, context, arguments)
    try:
        answer.send(reply)
    except Exception as exc:  # what it returned cannot be sent (to_result made it JSON)
        answer.send(Reply(False, error=f"the job's answer could not be sent back: "
                                       f"{type(exc).__name__}: {exc}"))
    answer.close()


def _canceler(context: TaskContext) -> Callable:
    """The child's SIGTERM handler: sets the job's ``task.canceled``."""
    def cancel(signum, frame) -> None:
        context.canceled.set()
    return cancel


def _orphaned(parent) -> None:
    """The worker died: end this run and every process its job started too."""
    parent.join()
    proctree.kill_descendants(os.getpid())
    os.killpg(0, signal.SIGKILL)


def _setup_logging(level: int, files: list[str], stderr: bool) -> None:
    """Log as the worker does: to its log file, to stderr if it does."""
    setup_logging(Path(files[0]) if files else None, stderr=stderr, level=level)

