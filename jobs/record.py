"""A job that leaves a trace of every run, so tests can count runs across processes."""

import json
import multiprocessing
import os
from datetime import UTC, datetime


def _worker_pid() -> tuple[int, int | None]:
    """The pid of the worker process running the job, and of the child process it runs in
    when the run is isolated (None in a job thread)."""
    parent = multiprocessing.parent_process()
    return (parent.pid, os.getpid()) if parent is not None else (os.getpid(), None)


def record(task, path, *args):
    """Append one JSON line {id, date, attempt, occurrence, args, pid, child, at} to the file
    at path: ``pid`` is the worker process's, ``child`` the isolated run's own process (or
    null)."""
    pid, child = _worker_pid()
    line = json.dumps({
        "id": task.id,
        "date": task.date.isoformat(),
        "attempt": task.attempt,
        "occurrence": getattr(task, "occurrence", None),
        "args": list(args),
        "pid": pid,
        "child": child,
        "at": datetime.now(UTC).isoformat(),
    }) + "\n"
    # One write() on an O_APPEND descriptor: lines from concurrent processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return line.strip()
