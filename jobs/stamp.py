"""A job that stamps when its run began, for benchmarks: one line ``ID TIME PID`` appended to
a file (one ``write()`` on a descriptor kept open, so lines from concurrent processes never
interleave), and nothing returned. Light on purpose: the bench measures the worker, not the
job that measures it."""

import os
import time

_files: dict[str, int] = {}


def stamp(task, path, seconds=0):
    """Append ``ID TIME PID`` (``time.time()`` as the run began) to the file at ``path``,
    then take ``seconds``."""
    at = time.time()
    fd = _files.get(path)
    if fd is None:
        fd = _files[path] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{task.id} {at:.6f} {os.getpid()}\n".encode())
    if seconds:
        time.sleep(seconds)
