"""The ``after`` command line.

After's five commands (``start``, ``stop``, ``log``, ``list``, ``clean``), ``setup``, and the
embedded development server (``server start|stop|status``). Task management commands live in
:mod:`after.cli_tasks`. Every failure is one line on stderr and a meaningful exit code:

==  =====================================================
0   done
1   failed (the message says why)
2   bad usage (a wrong argument or option)
3   the database cannot be reached
4   not found (a task, a worker)
==  =====================================================
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import click

from . import config as config_module
from . import dashboard, process, schema
from .dates import parse_date, to_ms, utcnow
from .jobs import JobRegistry
from .peers import expiry
from .server import EmbeddedServer, ServerError
from .store import NotFound, Store, StoreError, Unavailable

EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_NOT_FOUND = 1, 2, 3, 4


class Failure(click.ClickException):
    """A one-line error with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = code

    def show(self, file=None) -> None:
        click.echo(f"after: error: {self.format_message()}", err=True)


class Group(click.Group):
    """Turns the package's typed errors into one-line messages, never tracebacks."""

    def main(self, args=None, *rest, **kwargs):
        if args is None:  # this process's own command line (not a test's CliRunner)
            hide_credentials(sys.argv[1:])
        kwargs["standalone_mode"] = False
        try:
            result = super().main(args, *rest, **kwargs)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            click.echo(f"after: error: {exc.format_message()}{hint}", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("after: aborted", err=True)
            sys.exit(EXIT_FAILED)
        except Exception as exc:  # a bug of ours: still one line, the traceback on demand
            if os.environ.get("AFTER_DEBUG"):
                raise
            click.echo(f"after: error: unexpected {type(exc).__name__}: {exc} (set "
                       "AFTER_DEBUG=1 for the traceback)", err=True)
            sys.exit(EXIT_FAILED)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Unavailable as exc:
            obj = ctx.obj if isinstance(ctx.obj, config_module.Config) else None
            message = str(exc)
            if not message.startswith("cannot reach"):
                message = f"{obj.safe_url if obj else 'the database'}: {message}"
            raise Failure(f"{message}; is it running? (`after server start` runs the "
                          "embedded one)", EXIT_UNAVAILABLE) from None
        except NotFound as exc:
            raise Failure(str(exc), EXIT_NOT_FOUND) from None
        except (StoreError, ServerError, process.ProcessError,
                config_module.ConfigError) as exc:
            raise Failure(str(exc)) from None
        except OSError as exc:  # a folder, a file or a port of this machine
            where = f" ({exc.filename})" if exc.filename else ""
            raise Failure(f"{exc.strerror or exc}{where}") from None


def hide_credentials(args: list[str]) -> None:
    """Run this command again without a password on its command line, where ``ps`` shows it
    to every user for the process's whole life: the URL moves to ``AFTER_COUCHDB_URL``."""
    kept, url = config_module.credentials_out_of_argv(args)
    if url is None:
        return
    environ = {**os.environ, "AFTER_COUCHDB_URL": url}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "after", *kept], environ)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="AFTER_CONFIG", metavar="FILE",
              help="config.json to read [env AFTER_CONFIG]")
@click.option("--url", envvar="AFTER_COUCHDB_URL", metavar="URL",
              help="CouchDB URL, credentials allowed [env AFTER_COUCHDB_URL]")
@click.option("--db", envvar="AFTER_DB", help="tasks database [env AFTER_DB]")
@click.option("--jobs", envvar="AFTER_JOBS", metavar="DIR",
              help="jobs folder [env AFTER_JOBS]")
@click.option("--home", envvar="AFTER_HOME", metavar="DIR",
              help="where pid and log files go [env AFTER_HOME]")
@click.version_option(package_name="after", prog_name="after")
@click.pass_context
def main(ctx, config_path, url, db, jobs, home):
    """Schedule work for later, with CouchDB as the only server."""
    environ = dict(os.environ)
    for key, value in (("AFTER_COUCHDB_URL", url), ("AFTER_DB", db), ("AFTER_JOBS", jobs),
                       ("AFTER_HOME", home)):
        if value:
            environ[key] = value
    try:
        ctx.obj = config_module.load(config_path, environ)
    except config_module.ConfigError as exc:
        raise Failure(str(exc)) from None


def open_store(cfg: config_module.Config, retries: int = 2) -> Store:
    return Store(cfg.url, cfg.db, retries=retries)


def worker_name(value: str) -> str:
    try:
        return process.check_name(value)
    except process.ProcessError as exc:
        raise click.BadParameter(str(exc)) from None


# -- the embedded server -------------------------------------------------------------------


@main.group()
def server():
    """The embedded CouchDB-compatible server, for development (pouchdb-server)."""


def embedded(cfg: config_module.Config, port: int | None, data: str | None,
             memory: bool) -> EmbeddedServer:
    from urllib.parse import urlsplit

    parts = urlsplit(cfg.urls[0])
    if len(cfg.urls) > 1 or parts.hostname not in ("127.0.0.1", "localhost"):
        raise Failure(f"the embedded server is one server on 127.0.0.1; the configured URL is "
                      f"{cfg.safe_url}")
    data_dir = None if memory else Path(data).resolve() if data else cfg.home / "data"
    return EmbeddedServer(workdir=cfg.home / "server", port=port or parts.port or 5984,
                          data=data_dir)


@server.command("start")
@click.option("--port", type=click.IntRange(1, 65535), help="default: the configured URL's")
@click.option("--data", metavar="DIR", help="data folder (default AFTER_HOME/data)")
@click.option("--memory", is_flag=True, help="keep everything in memory (lost at stop)")
@click.pass_obj
def server_start(cfg, port, data, memory):
    """Start the embedded server on 127.0.0.1 in the background."""
    srv = embedded(cfg, port, data, memory)
    pid = srv.start()
    where = "in memory" if srv.data is None else f"data in {srv.data}"
    click.echo(f"embedded server running at {srv.url} (pid {pid}, {where}, log "
               f"{srv.logfile})")


@server.command("stop")
@click.pass_obj
def server_stop(cfg):
    """Stop the embedded server started from this AFTER_HOME."""
    srv = embedded(cfg, None, None, True)
    if not srv.stop():
        click.echo("the embedded server was not running")
        return
    click.echo("embedded server stopped")


@server.command("status")
@click.pass_obj
def server_status(cfg):
    """Say whether the embedded server runs (exit 1 when it does not)."""
    srv = embedded(cfg, None, None, True)
    pid = srv.pid()
    if pid is None:
        click.echo("the embedded server is not running")
        sys.exit(EXIT_FAILED)
    click.echo(f"embedded server running (pid {pid}), log {srv.logfile}")


# -- setup ---------------------------------------------------------------------------------


@main.command()
@click.pass_obj
def setup(cfg):
    """Create the databases, indexes and validation the scheduler needs (idempotent)."""
    with open_store(cfg) as store:
        changes = schema.setup(store)
        if dashboard.install(store):
            changes.append(f"installed the dashboard's views in {cfg.db} (`after dashboard` "
                           "serves the page)")
    for line in changes:
        click.echo(line)
    click.echo(f"{cfg.db} is set up at {cfg.safe_url}" if changes else
               f"{cfg.db} was already set up at {cfg.safe_url}")


# -- After's five commands -----------------------------------------------------------------


@main.command()
@click.argument("name")
@click.option("-b", "--background", is_flag=True, help="run as a daemon; log to the log file")
@click.option("--horizon", type=click.FloatRange(1), default=300, show_default=True,
              help="hold tasks due within this many seconds")
@click.option("--poll", type=click.FloatRange(0.1), default=30, show_default=True,
              help="seconds between queries of the due view (the feed's safety net)")
@click.option("--pool", type=click.IntRange(1, 512), default=8, show_default=True,
              help="job threads")
@click.option("--lease", type=click.FloatRange(1), default=30, show_default=True,
              help="seconds after which a silent process's tasks are taken over")
@click.option("--heartbeat", type=click.FloatRange(0.1), default=5, show_default=True,
              help="seconds between heartbeats (keep well under --lease)")
@click.option("--grace", type=click.FloatRange(0), default=30, show_default=True,
              help="on stop, seconds running jobs get to finish")
@click.option("--keep-runs", type=click.IntRange(1), default=100, show_default=True,
              help="run records kept per task")
@click.option("--lead", type=click.FloatRange(0, 60), default=2, show_default=True,
              help="seconds ahead of its date a task's start is written, so that nothing is "
                   "written between the timer and the job (0: at its date)")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="serve Prometheus metrics and /health on 127.0.0.1:PORT")
@click.pass_obj
def start(cfg, name, background, metrics_port, **settings):
    """Start a worker process named NAME."""
    from .worker import Settings

    name = worker_name(name)
    if settings["heartbeat"] >= settings["lease"]:
        raise click.BadParameter("must be shorter than --lease", param_hint="--heartbeat")
    options = Settings(**settings)
    if not cfg.jobs.is_dir():
        raise Failure(f"the jobs folder {cfg.jobs} does not exist (set AFTER_JOBS or 'jobs' "
                      "in config.json)")
    with open_store(cfg) as store:
        if not schema.is_set_up(store):
            schema.setup(store)
    logfile = process.log_path(cfg.home, name)
    pidpath = process.new_pid_path(cfg.home, name)
    if background:
        start_background(cfg, name, options, pidpath, logfile, metrics_port)
        return
    process.setup_logging(logfile, stderr=True)
    pidfile = process.LockedPidFile(pidpath)
    try:
        code = run_worker(cfg, name, options, metrics_port)
    finally:
        pidfile.release()
    exit_now(code)


def exit_now(code: int) -> None:
    """Exit without waiting for job threads: a job still running after the grace period (or
    a second Ctrl+C) has been recorded as interrupted and handed back already."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_worker(cfg, name, options, metrics_port, on_ready=None) -> int:
    """Run a worker in this process until SIGTERM/SIGINT; returns the exit code."""
    from .worker import Worker

    store = Store(cfg.url, cfg.db)
    worker = Worker(store, name, JobRegistry(cfg.jobs), options)

    def on_signal(signum, frame):  # only sets flags; the loop does the work
        worker.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if metrics_port is not None:
        from .metrics import serve_metrics

        try:
            serve_metrics(worker, metrics_port)
        except OSError as exc:
            raise Failure(f"cannot serve metrics on 127.0.0.1:{metrics_port}: "
                          f"{exc.strerror or exc}") from None
    if on_ready is not None:
        threading.Thread(target=lambda: on_ready(worker), daemon=True).start()
    try:
        return worker.run()
    finally:
        store.close()


def start_background(cfg, name, options, pidpath: Path, logfile: Path, metrics_port) -> None:
    """Daemonize a worker and return once it runs (or say why it did not start)."""
    from daemonize import Daemonize

    read_end, write_end = os.pipe()
    child = os.fork()
    if child:
        os.close(write_end)
        message = wait_for_ready(read_end, timeout=60)
        if message != "ready":
            raise Failure(f"the worker did not start: {message} (see {logfile})")
        click.echo(f"worker {name} started in the background (pid {read_pid(pidpath)}); "
                   f"log: {logfile}")
        return
    os.close(read_end)

    def report(worker):
        worker.ready.wait()
        os.write(write_end, b"ready")
        os.close(write_end)

    def action():
        pidpath.write_text(process.pid_line(os.getpid()))  # daemonize wrote the pid alone
        process.setup_logging(logfile, stderr=False)
        try:
            code = run_worker(cfg, name, options, metrics_port, on_ready=report)
        except BaseException as exc:
            try:
                os.write(write_end, f"{type(exc).__name__}: {exc}".encode()[:500])
            except OSError:
                pass
            raise
        pidpath.unlink(missing_ok=True)  # daemonize removes it in an atexit we skip
        exit_now(code)

    import logging

    Daemonize(app=f"after-{name}", pid=str(pidpath), action=action, keep_fds=[write_end],
              logger=logging.getLogger("after.daemon"), chdir=str(Path.cwd())).start()


def wait_for_ready(fd: int, timeout: float) -> str:
    import select

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


def read_pid(path: Path) -> str:
    for _ in range(50):
        try:
            words = path.read_text().split()
            if len(words) > 1:  # the pid and its start time: the daemon has rewritten it
                return words[0]
        except OSError:
            pass
        time.sleep(0.05)
    return "?"


@main.command()
@click.argument("name")
@click.option("--timeout", type=click.FloatRange(0), default=60, show_default=True,
              help="seconds to wait for the processes to exit")
@click.pass_obj
def stop(cfg, name, timeout):
    """Stop the worker processes named NAME on this machine (gracefully)."""
    name = worker_name(name)
    files = [f for f in process.pid_files(cfg.home, name) if f.running]
    if not files:
        raise Failure(f"no worker named {name} runs here (pid files in {cfg.home})",
                      EXIT_NOT_FOUND)
    stopped, left = process.stop_processes(files, timeout)
    for pid in stopped:
        click.echo(f"stopped {name} (pid {pid})")
    if left:
        raise Failure(f"still running after {timeout:g}s: pid {', '.join(map(str, left))}")


@main.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="keep printing new lines")
@click.option("-n", "--lines", type=click.IntRange(0), default=50, show_default=True)
@click.pass_obj
def log(cfg, name, follow, lines):
    """Print the log of the workers named NAME."""
    name = worker_name(name)
    path = process.log_path(cfg.home, name)
    if not path.exists():
        raise Failure(f"no log for {name} at {path}", EXIT_NOT_FOUND)
    for line in process.tail(path, lines):
        click.echo(line)
    if not follow:
        return
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        try:
            while True:
                line = handle.readline()
                if line:
                    click.echo(line.decode("utf-8", "replace"), nl=False)
                else:
                    time.sleep(0.2)
        except KeyboardInterrupt:
            return


def registry_entries(cfg) -> list[dict]:
    with open_store(cfg) as store:
        try:
            return store.prefixed("", db=cfg.workers_db)
        except NotFound:
            return []


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON document for scripts")
@click.pass_obj
def list_workers(cfg, as_json):
    """List the worker processes running, on every machine (from their heartbeats)."""
    now = utcnow()
    entries = []
    for doc in registry_entries(cfg):
        if doc.get("type") != "worker":
            continue
        stale = expiry(doc) < to_ms(now)
        entries.append({
            "name": doc.get("name"), "host": doc.get("host"), "pid": doc.get("pid"),
            "started": doc.get("started"), "last_seen": doc.get("last_seen"),
            "held": doc.get("held", 0), "running": doc.get("running", 0),
            "runs": (doc.get("counts") or {}).get("runs", 0),
            "state": "stale" if stale else ("stopping" if doc.get("stopping") else "live"),
            "id": doc["_id"],
        })
    entries.sort(key=lambda e: (e["name"] or "", e["host"] or "", e["pid"] or 0))
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        click.echo("no worker is running")
        return
    rows = [("NAME", "HOST", "PID", "STATE", "STARTED", "LAST SEEN", "HELD", "RUNNING", "RUNS")]
    for e in entries:
        rows.append((e["name"], e["host"], str(e["pid"]), e["state"], short(e["started"]),
                     ago(e["last_seen"], now), str(e["held"]), str(e["running"]),
                     str(e["runs"])))
    echo_table(rows)


def short(stamp: str | None) -> str:
    return (stamp or "-").replace("T", " ")[:19]


def ago(stamp: str | None, now: datetime) -> str:
    try:
        seconds = (now - parse_date(stamp)).total_seconds()
    except (TypeError, ValueError):
        return "-"
    return f"{seconds:.0f}s ago"


def echo_table(rows: list[tuple]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in
                             zip(row, widths, strict=True)).rstrip())


@main.command()
@click.argument("name")
@click.pass_obj
def clean(cfg, name):
    """Remove the log and stale pid files of NAME, and its dead registry entries."""
    name = worker_name(name)
    removed = 0
    for pidfile in process.pid_files(cfg.home, name):
        if not pidfile.running:
            pidfile.path.unlink(missing_ok=True)
            removed += 1
    path = process.log_path(cfg.home, name)
    running = any(f.running for f in process.pid_files(cfg.home, name))
    log_note = ""
    if path.exists() and not running:
        path.unlink()
        log_note = ", its log"
    elif running:
        log_note = " (log kept: the worker runs)"
    pruned = prune_registry(cfg, name)
    click.echo(f"cleaned {name}: {removed} stale pid file(s){log_note}, {pruned} dead "
               "registry entr(ies)")


def prune_registry(cfg, name: str | None) -> int:
    now_ms = to_ms(utcnow())
    pruned = 0
    with open_store(cfg) as store:
        prefix = f"{name}@" if name else ""
        try:
            docs = store.prefixed(prefix, db=cfg.workers_db)
        except NotFound:
            return 0
        dead = []
        for doc in docs:
            if expiry(doc) < now_ms:
                dead.append({"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True})
        if dead:
            results = store.bulk_docs(dead, db=cfg.workers_db)
            pruned = sum(1 for r in results if "error" not in r)
    return pruned


# The other commands register themselves on `main`.
from . import cli_dashboard, cli_tasks  # noqa: E402,F401
