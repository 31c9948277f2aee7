"""Worker processes on this machine: pid files, log files, starting in the background, stopping.

Each worker process has a pid file ``AFTER_HOME/NAME.TOKEN.pid`` that it holds locked
(``flock``) while it runs, so a pid file nobody locks is stale, whatever pid it names. The
file holds the pid and the process's start time (``/proc/PID/stat``, in clock ticks since
boot): a lock is not enough on its own, since a child a job forked inherits the locked
descriptor and outlives the worker, and a pid is reused by an unrelated process once its
owner is gone. A pid file counts as running only while it is locked *and* its pid is the
same process that wrote it; nothing is ever signalled otherwise. All the processes of a
name append to one log, ``AFTER_HOME/NAME.log``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import select
import signal
import sys
import time
import uuid
from collections.abc import Callable
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


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None if there is none.

    Where ``/proc`` does not exist, a live pid gives ``"?"``: the lock alone decides there.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None  # field 22, starttime


def pid_line(pid: int) -> str:
    """What a pid file holds: the pid and the process's start time."""
    return f"{pid} {process_start(pid) or '?'}\n"


@dataclass(frozen=True)
class PidFile:
    path: Path
    name: str
    pid: int | None
    start: str | None = None  # None in a file written by daemonize before we rewrote it

    @property
    def locked(self) -> bool:
        """True while some process holds the file's lock."""
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
    def same_process(self) -> bool:
        """True while the pid names the very process that wrote the file."""
        if not self.pid:
            return False
        now = process_start(self.pid)
        if now is None:
            return False
        return self.start in (None, "?") or now == "?" or now == self.start

    @property
    def running(self) -> bool:
        """True while the process that wrote it is alive and holds its lock."""
        return self.locked and self.same_process

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
            words = path.read_text().split()
            pid = int(words[0]) if words else None
        except (OSError, ValueError):
            words, pid = [], None
        start = words[1] if len(words) > 1 else None
        found.append(PidFile(path, match["name"], pid, start))
    return found


def new_pid_path(home: Path, name: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    return home / f"{name}.{uuid.uuid4().hex[:8]}.pid"


class LockedPidFile:
    """The pid file of a process in the foreground: written, locked, removed at exit."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = open(path, "w")  # not inherited across exec (PEP 446)
        fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.handle.write(pid_line(os.getpid()))
        self.handle.flush()

    def release(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self.handle.close()


#: ``--log-level`` and ``--log-format``, read by every process of a worker (its daemon, its
#: isolated runs' children) from the environment, where ``after start`` puts them.
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (UTC, milliseconds), ``level``, ``pid``, ``logger``,
    ``message``, and ``exception`` (the traceback) when there is one: the exception being
    logged, or a job's, carried from the process that ran it as the record's ``traceback``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime(DATE_FORMAT, time.gmtime(record.created))
        line = {"time": f"{stamp}.{int(record.msecs):03d}Z", "level": record.levelname,
                "pid": record.process, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif getattr(record, "traceback", None):
            line["exception"] = str(record.traceback).rstrip("\n")
        return json.dumps(line, ensure_ascii=False)


def log_settings(environ=None) -> tuple[int, str]:
    """(the logging level, the format) that ``AFTER_LOG_LEVEL`` and ``AFTER_LOG_FORMAT``
    name; INFO and text when unset."""
    env = os.environ if environ is None else environ
    level = str(env.get("AFTER_LOG_LEVEL") or "info").lower()
    fmt = str(env.get("AFTER_LOG_FORMAT") or "text").lower()
    return getattr(logging, level.upper(), logging.INFO), fmt if fmt in FORMATS else "text"


def under_systemd(environ=None) -> bool:
    """True when systemd runs this process (it sets ``INVOCATION_ID`` for a service, and
    ``JOURNAL_STREAM`` when stderr goes to the journal): stderr is logged already."""
    env = os.environ if environ is None else environ
    return bool(env.get("INVOCATION_ID") or env.get("JOURNAL_STREAM"))


def setup_logging(logfile: Path | None, *, stderr: bool, level: int | None = None,
                  fmt: str | None = None) -> None:
    """Log to stderr and/or ``logfile``; ``level`` and ``fmt`` (``text``, ``json``) default
    to :func:`log_settings`."""
    env_level, env_fmt = log_settings()
    level = env_level if level is None else level
    if (fmt or env_fmt) == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
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
    """SIGTERM each running process and wait; returns (stopped, still running) pids.

    A pid is signalled only when it is still the process that wrote its pid file."""
    targets = [f for f in files if f.running and f.pid]
    for pidfile in targets:
        try:
            if pidfile.same_process:  # checked again right before the signal
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


# -- starting in the background ---------------------------------------------------------------


def exit_now(code: int) -> None:
    """Exit without waiting for job threads: a job still running after the grace period (or
    a second Ctrl+C) has been recorded as interrupted and handed back already."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def start_background(app: str, pidpath: Path, logfile: Path,
                     run: Callable[[Callable[[], None]], int], timeout: float = 60) -> str:
    """Run ``run(ready)`` in a daemon and return its pid once it has called ``ready()``.

    The daemon logs to ``logfile`` and holds ``pidpath``; it reports through a pipe, so the
    caller learns that it runs, or why it did not start (``ProcessError``), instead of
    returning before the daemon knows. Never returns in the daemon: it exits with
    ``run``'s code.
    """
    from daemonize import Daemonize

    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        message = _wait_for_ready(read_end, timeout)
        if message != "ready":
            raise ProcessError(f"the worker did not start: {message} (see {logfile})")
        return _written_pid(pidpath)
    os.close(read_end)

    def ready() -> None:
        os.write(write_end, b"ready")
        os.close(write_end)

    def action() -> None:
        pidpath.write_text(pid_line(os.getpid()))  # daemonize wrote the pid alone
        setup_logging(logfile, stderr=False)
        try:
            code = run(ready)
        except BaseException as exc:
            try:
                os.write(write_end, f"{type(exc).__name__}: {exc}".encode()[:500])
            except OSError:
                pass
            raise
        pidpath.unlink(missing_ok=True)  # daemonize removes it in an atexit we skip
        exit_now(code)

    Daemonize(app=app, pid=str(pidpath), action=action, keep_fds=[write_end],
              logger=logging.getLogger("after.daemon"), chdir=str(Path.cwd())).start()
    raise AssertionError("unreachable: the daemon exits")  # pragma: no cover


def _wait_for_ready(fd: int, timeout: float) -> str:
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 1024)
            if not chunk:
                break
            chunks.append(chunk)
            if b"ready" in chunk:
                break
    os.close(fd)
    text = b"".join(chunks).decode("utf-8", "replace").strip()
    return text or "it exited before it was ready"


def _written_pid(path: Path) -> str:
    """The daemon's pid, once it has rewritten its pid file with its start time."""
    for _ in range(50):
        try:
            words = path.read_text().split()
            if len(words) > 1:
                return words[0]
        except OSError:
            pass
        time.sleep(0.05)
    return "?"
