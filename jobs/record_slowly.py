"""A job that leaves a trace of its run, then takes its time: for overlap and priority tests
(which runs started, and in what order, while runs outlast their period)."""

import json
import os
import time
from datetime import UTC, datetime


def record_slowly(task, path, seconds):
    """Append one JSON line {id, date, attempt, args, pid, at} to the file at path (as the
    record job does), then sleep ``seconds``."""
    line = json.dumps({
        "id": task.id,
        "date": task.date.isoformat(),
        "attempt": task.attempt,
        "args": [seconds],
        "pid": os.getpid(),
        "at": datetime.now(UTC).isoformat(),
    }) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    time.sleep(float(seconds))
    return line.strip()
