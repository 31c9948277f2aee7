"""The embedded CouchDB-compatible server for development and tests: pouchdb-server.

It is installed from the project's ``package-lock.json`` with ``npm ci`` (``make install-run``)
into ``node_modules/`` beside the package, and run here on 127.0.0.1 in a working folder of
its own (it writes its ``config.json`` and ``log.txt`` into its current directory), either
in memory or on disk in a data folder. A pid file records it; it is stopped by that pid.
Production uses Apache CouchDB 3 instead, and none of this runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from after.couch.store import Store

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ServerError(Exception):
    """The embedded server cannot be started or stopped; the message says why."""


#: The pouchdb-server this project is tested with (package.json).
POUCHDB_SERVER = "pouchdb-server@4.2.0"


def find_executable() -> Path:
    """The pouchdb-server to run: ``AFTER_POUCHDB_SERVER``, the one ``npm ci`` installed
    beside a source checkout, or one on the PATH; else a one-line error saying how to get
    one (from a checkout: ``make install-run``; from an installed package: npm)."""
    override = os.environ.get("AFTER_POUCHDB_SERVER")
    candidates = [Path(override)] if override else []
    candidates.append(PROJECT_ROOT / "node_modules" / ".bin" / "pouchdb-server")
    on_path = shutil.which("pouchdb-server")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.exists():
            return candidate
    if override:
        raise ServerError(f"AFTER_POUCHDB_SERVER names {override}, which does not exist")
    if (PROJECT_ROOT / "package.json").exists():  # a source checkout
        if shutil.which("node") is None or shutil.which("npm") is None:
            raise ServerError("node and npm are needed for the embedded server: install "
                              "Node.js 20, then `make install-run`")
        raise ServerError(f"pouchdb-server is not installed: run `make install-run` (npm ci) "
                          f"in {PROJECT_ROOT}")
    raise ServerError(f"the embedded server is pouchdb-server, a Node.js program: `npm install "
                      f"-g {POUCHDB_SERVER}` (Node.js 20), or set AFTER_POUCHDB_SERVER to its "
                      "path; in production, point AFTER_COUCHDB_URL at Apache CouchDB 3")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) answers kill(0) too.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@dataclass
class EmbeddedServer:
    """pouchdb-server on ``host:port``, working in ``workdir``; ``data`` None = in memory."""

    workdir: Path
    port: int = 5984
    data: Path | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "server.pid"

    @property
    def logfile(self) -> Path:
        return self.workdir / "server.log"

    def pid(self) -> int | None:
        """The pid of the server this folder started, if it still runs."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def start(self, wait: float = 30.0) -> int:
        """Start the server and wait until it answers; returns its pid."""
        running = self.pid()
        if running:
            raise ServerError(f"the embedded server already runs (pid {running}, {self.url})")
        if port_in_use(self.port, self.host):
            raise ServerError(f"port {self.port} on {self.host} is already in use")
        executable = find_executable()
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [str(executable), "--host", self.host, "--port", str(self.port),
                   "--config", str(self.workdir / "pouchdb-config.json")]
        if self.data is None:
            command.append("--in-memory")
        else:
            self.data.mkdir(parents=True, exist_ok=True)
            command += ["--dir", str(self.data)]
        env = dict(os.environ)
        env["NODE_OPTIONS"] = (env.get("NODE_OPTIONS", "") + " --unhandled-rejections=warn").strip()
        with open(self.logfile, "ab") as log:
            process = subprocess.Popen(
                command, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )
        self.pidfile.write_text(f"{process.pid} {self.port}\n")
        deadline = time.monotonic() + wait
        with Store(self.url) as store:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    self.pidfile.unlink(missing_ok=True)
                    raise ServerError(f"the embedded server exited at start (code "
                                      f"{process.returncode}); see {self.logfile}")
                if store.ping():
                    return process.pid
                time.sleep(0.1)
        self.stop()
        raise ServerError(f"the embedded server did not answer within {wait:.0f}s; "
                          f"see {self.logfile}")

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the server by its pid; False when none was running."""
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        stop_pid(pid, timeout)
        self.pidfile.unlink(missing_ok=True)
        return True


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; waits until the process is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + timeout
        time.sleep(0.05)
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
        except ChildProcessError:
            pass
