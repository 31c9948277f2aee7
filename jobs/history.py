"""A job that writes a Jepsen-style history of its runs: a line when a run begins, another
when it ends, so that a checker (``tests/chaos``) can tell a run cut short by the death of
its process (a start and no end) from one that went to its end."""

import json
import multiprocessing
import os
import time
import uuid
from datetime import UTC, datetime


def _pids() -> tuple[int, int | None]:
    """The worker process's pid, and the isolated run's own (None in a job thread)."""
    parent = multiprocessing.parent_process()
    return (parent.pid, os.getpid()) if parent is not None else (os.getpid(), None)


def _append(path: str, line: dict) -> None:
    """One write() on an O_APPEND descriptor: lines from concurrent processes never
    interleave (a line is far below PIPE_BUF, and a regular file's appends are atomic)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def history(task, path, seconds=0):
    """Append ``{"ev": "start", ...}`` to the file at ``path``, sleep ``seconds``, append
    ``{"ev": "end", ..., "end": ...}``. Both lines carry the run's own id (``run``), the
    task, the occurrence id, the attempt, the run number and the process (``after.owner``)
    the worker wrote into the task as its run sees it, the worker's ``pid`` and the isolated
    run's ``child`` pid (or null), and when the run began (``start``, UTC)."""
    info = task.doc.get("after") if isinstance(task.doc.get("after"), dict) else {}
    pid, child = _pids()
    line = {
        "run": uuid.uuid4().hex,
        "task": task.id,
        "occurrence": task.occurrence,
        "date": task.date.isoformat(),
        "attempt": task.attempt,
        "number": info.get("run"),
        "process": info.get("owner"),
        "pid": pid,
        "child": child,
        "start": datetime.now(UTC).isoformat(),
    }
    _append(path, {"ev": "start", **line})
    time.sleep(float(seconds))
    _append(path, {"ev": "end", **line, "end": datetime.now(UTC).isoformat()})
    return line["run"]
