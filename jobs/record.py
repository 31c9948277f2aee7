"""A job that leaves a trace of every run, so tests can count runs across processes."""

import json
import os
from datetime import UTC, datetime


def record(task, path, *args):
    """Append one JSON line {id, date, attempt, occurrence, args, pid, at} to the file at
    path."""
    line = json.dumps({
        "id": task.id,
        "date": task.date.isoformat(),
        "attempt": task.attempt,
        "occurrence": getattr(task, "occurrence", None),
        "args": list(args),
        "pid": os.getpid(),
        "at": datetime.now(UTC).isoformat(),
    }) + "\n"
    # One write() on an O_APPEND descriptor: lines from concurrent processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return line.strip()
