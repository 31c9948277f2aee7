"""Worker processes on this machine: pid files, log files, starting in the background, stopping.

Each worker process has a pid file ``AFTER_HOME/NAME.TOKEN.pid`` that it holds locked
(``flock``) while it runs, so a pid file nobody locks is stale, whatever pid it names. All the
processes of a name append to one log, ``AFTER_HOME/NAME.log``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from logging.handlers import WatchedFileHandler
from pathlib import Path

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
LOG_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(process)d %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


class ProcessError(Exception):
    """A worker process cannot be started or stopped; the message says why."""


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise ProcessError(f"{name!r} is not a worker name (letters, digits, '_', '.', '-'; "
                           "100 characters at most)")
    return name


def log_path(home: Path, name: str) -> Path:
    return home / f"{name}.log"


@dataclass(frozen=True)
class PidFile:
    path: Path
    name: str
    pid: int | None

    @property
    def running(self) -> bool:
        """True while the process that wrote it holds its lock."""
        try:
            with open(self.path) as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(handle, fcntl.LOCK_UN)
                return False
        except OSError:
            return False

    @property
    def started(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None


def pid_files(home: Path, name: str | None = None) -> list[PidFile]:
    pattern = re.compile(r"(?P<name>.+)\.[0-9a-f]{8}\.pid")
    found = []
    if not home.is_dir():
        return found
    for path in sorted(home.glob("*.pid")):
        match = pattern.fullmatch(path.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        try:
            pid = int(path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            pid = None
        found.append(PidFile(path, match["name"], pid))
    return found


def new_pid_path(home: Path, name: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    return home / f"{name}.{uuid.uuid4().hex[:8]}.pid"


class LockedPidFile:
    """The pid file of a process in the foreground: written, locked, removed at exit."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = open(path, "w")
        fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.handle.write(str(os.getpid()))
        self.handle.flush()

    def release(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self.handle.close()


def setup_logging(logfile: Path | None, *, stderr: bool, level: int = logging.INFO) -> None:
    formatter = logging.Formatter(LOG_FORMAT, DATE_FORMAT)
    formatter.converter = time.gmtime  # UTC, never the machine's zone
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    if stderr:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    if logfile is not None:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        handler = WatchedFileHandler(logfile)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def stop_processes(files: list[PidFile], timeout: float) -> tuple[list[int], list[int]]:
    """SIGTERM each running process and wait; returns (stopped, still running) pids."""
    targets = [f for f in files if f.running and f.pid]
    for pidfile in targets:
        try:
            os.kill(pidfile.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    waiting = list(targets)
    while waiting and time.monotonic() < deadline:
        waiting = [f for f in waiting if f.running]
        time.sleep(0.1)
    stopped = [f.pid for f in targets if f not in waiting]
    return stopped, [f.pid for f in waiting]


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a file, read from the end (logs can be large)."""
    if lines <= 0:
        return []
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        block, data = 8192, b""
        while size > 0 and data.count(b"\n") <= lines:
            step = min(block, size)
            size -= step
            handle.seek(size)
            data = handle.read(step) + data
    return data.decode("utf-8", "replace").splitlines()[-lines:]
