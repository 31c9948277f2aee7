"""A job whose processes try to outlive its run (issue 24 item 10), for the isolation tests
of every layer, and what those tests need to read its pids and clean up after a failure."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

#: The job ``escapes``: processes that leave the run's process group and ignore SIGTERM.
ESCAPES = '''
import os, subprocess, sys, time

STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "time.sleep(60)")
DAEMON = ("import subprocess, sys; print(subprocess.Popen([sys.executable, '-c', %r], "
          "start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"
          ".pid, flush=True)" % STUBBORN)


def escapes(task, path):
    """A grandchild in a session of its own that ignores SIGTERM, and a daemon: started by a
    process that exits at once (a double fork), in a session of its own too. Writes the
    three pids (its own first), then hangs."""
    grandchild = subprocess.Popen([sys.executable, "-c", STUBBORN], start_new_session=True)
    daemon = int(subprocess.run([sys.executable, "-c", DAEMON], capture_output=True,
                                text=True, check=True).stdout)
    with open(path + ".tmp", "w") as out:
        out.write(f"{os.getpid()} {grandchild.pid} {daemon}")
    os.rename(path + ".tmp", path)
    time.sleep(60)
'''


def pids_of(path: Path, within: float = 20) -> list[int]:
    deadline = time.monotonic() + within
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return [int(pid) for pid in path.read_text().split()]


def cleanup(path: Path) -> None:
    """Kill what a failed test left running (the test's own processes, by the pids the job
    wrote to ``path``)."""
    for pid in pids_of(path, 0) if path.exists() else ():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
