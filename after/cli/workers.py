"""After's commands for processes: ``start``, ``stop``, ``log``, ``list`` and ``clean``; and
``pause`` and ``resume`` (a whole worker name, kept in the database, :mod:`after.couch.pausing`; or
one task with ``--task``).

``start`` takes its settings from the configuration (:class:`after.config.Settings`: the
``worker`` section of config.json and the ``AFTER_WORKER_*`` variables); an option given here
overrides them. Daemonizing is :func:`after.process.start_background`; the registry of
processes is read and pruned by :mod:`after.couch.registry`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import fields

import click

from after import process
from after.cli.common import (
    EXIT_NOT_FOUND,
    Failure,
    ago,
    echo_table,
    job_registry,
    jobs_options,
    open_store,
    plural,
    short,
    worker_name,
)
from after.cli.tasks import open_client, refused
from after.config import SETTING_RANGES, Config, ConfigError, Settings
from after.couch import pausing, schema
from after.couch import registry as peers
from after.couch.store import Store
from after.jobs import JobRegistry
from after.rules import task as rules
from after.rules.dates import to_ms, utcnow

logger = logging.getLogger("after.start")

#: ``after start``'s options: the settings a user is likely to set, with their help.
START_OPTIONS = {
    "horizon": "hold tasks due within this many seconds",
    "poll": "seconds between queries of the due view (the feed's safety net)",
    "pool": "job threads",
    "lease": "seconds after which a silent process's tasks are taken over",
    "heartbeat": "seconds between heartbeats (under half of --lease)",
    "grace": "on stop, seconds running jobs get to finish",
    "keep_runs": "run records kept per task",
    "visible": "seconds a run goes on before its task is shown running (a shorter run is "
               "written once, when it ends)",
    "retain": "seconds a finished one-off task of this name is kept (0: for ever)",
    "retain_extra": "seconds a finished copy of `after run` or `after backfill` is kept (0: "
                    "for ever)",
}


def settings_options(command):
    """One option per :data:`START_OPTIONS` setting, its type and default from Settings."""
    kinds = {f.name: f.type for f in fields(Settings)}
    for name in reversed(START_OPTIONS):
        low, high = SETTING_RANGES[name]
        kind = click.IntRange(low, high) if kinds[name] == "int" else click.FloatRange(low, high)
        default = getattr(Settings, name)
        command = click.option(
            f"--{name.replace('_', '-')}", name, type=kind, default=None,
            help=f"{START_OPTIONS[name]} [default: {default:.15g}; config.json worker.{name}, "
                 f"env AFTER_WORKER_{name.upper()}]")(command)
    return command


@click.command()
@click.argument("name")
@click.option("-b", "--background", is_flag=True, help="run as a daemon; log to the log file")
@settings_options
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              envvar="AFTER_METRICS_PORT",
              help="serve Prometheus metrics and /health on PORT [env AFTER_METRICS_PORT]")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, metavar="HOST",
              envvar="AFTER_METRICS_HOST",
              help="the address /metrics and /health listen on (0.0.0.0: every interface) "
                   "[env AFTER_METRICS_HOST]")
@click.option("--log-level", type=click.Choice(process.LEVELS, case_sensitive=False),
              envvar="AFTER_LOG_LEVEL", default="info", show_default=True,
              help="[env AFTER_LOG_LEVEL]")
@click.option("--log-format", type=click.Choice(process.FORMATS, case_sensitive=False),
              envvar="AFTER_LOG_FORMAT", default="text", show_default=True,
              help="json: one JSON object a line [env AFTER_LOG_FORMAT]")
@click.option("--log-file/--no-log-file", default=None,
              help="in the foreground, also log to AFTER_HOME/NAME.log [default: yes, but "
                   "under systemd (INVOCATION_ID or JOURNAL_STREAM set), whose journal has "
                   "stderr already]")
@jobs_options
@click.pass_obj
def start(cfg: Config, name, background, metrics_port, metrics_host, log_level, log_format,
          log_file, **options):
    """Start a worker process named NAME."""
    name = worker_name(name)
    # the daemon and the isolated runs' processes log the same way: they read these
    os.environ["AFTER_LOG_LEVEL"], os.environ["AFTER_LOG_FORMAT"] = log_level, log_format
    metrics = None if metrics_port is None else (metrics_host, metrics_port)
    try:
        cfg = cfg.with_worker(**options)
    except ConfigError as exc:
        raise click.UsageError(str(exc).replace("option.", "--")) from None
    registry = job_registry(cfg)
    notices = registry.notices()  # imports the job modules: what defines no job, and why
    for notice in notices:
        if notice.source in cfg.jobs_modules:  # a module named on purpose: no start without
            raise Failure(f"jobs module {notice.source} {notice.message}")
    with open_store(cfg) as store:
        if not schema.is_set_up(store):
            schema.setup(store)
    logfile = process.log_path(cfg.home, name)
    pidpath = process.new_pid_path(cfg.home, name)
    if background:
        for notice in notices:  # the daemon logs them too, where nobody may look
            click.echo(f"warning: {notice}", err=True)

        def run(ready):
            catch_stop()
            return run_worker(cfg, name, metrics, registry, notices,
                              on_ready=lambda worker: (worker.ready.wait(), ready()))

        pid = process.start_background(f"after-{name}", pidpath, logfile, run)
        click.echo(f"worker {name} started in the background (pid {pid}); log: {logfile}")
        return
    if log_file is None:
        log_file = not process.under_systemd()
    process.setup_logging(logfile if log_file else None, stderr=True)
    catch_stop()  # from the moment its pid file says it runs, `after stop` may ask
    pidfile = process.LockedPidFile(pidpath)
    try:
        code = run_worker(cfg, name, metrics, registry, notices)
    finally:
        pidfile.release()
    process.exit_now(code)


#: SIGTERM or SIGINT received before the worker was made (its pid file written, the store
#: and the worker not yet made): the worker stops gracefully as soon as it is.
_stop_asked = threading.Event()


def catch_stop() -> None:
    """Until the worker's own handlers are in place, a stop signal is kept, not fatal."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: _stop_asked.set())


def run_worker(cfg: Config, name: str, metrics: tuple[str, int] | None, registry: JobRegistry,
               notices=(), on_ready=None) -> int:
    """Run a worker in this process until SIGTERM/SIGINT; returns the exit code."""
    from after.worker import Worker

    for notice in notices:
        logger.warning("%s", notice)
    store = Store(cfg.url, cfg.db)
    worker = Worker(store, name, registry, cfg.worker)

    def on_signal(signum, frame):  # only sets flags; the loop does the work
        worker.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if _stop_asked.is_set():  # asked while it was being made
        worker.request_stop()
    if metrics is not None:
        from after.metrics import serve_metrics

        host, port = metrics
        try:
            serve_metrics(worker, port, host)
        except OSError as exc:
            raise Failure(f"cannot serve metrics on {host}:{port}: "
                          f"{exc.strerror or exc}") from None
    if on_ready is not None:
        threading.Thread(target=lambda: on_ready(worker), daemon=True).start()
    try:
        return worker.run()
    finally:
        store.close()


@click.command()
@click.argument("name")
@click.option("--timeout", type=click.FloatRange(0), default=60, show_default=True,
              help="seconds to wait for the processes to exit")
@click.pass_obj
def stop(cfg: Config, name, timeout):
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


@click.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="keep printing new lines")
@click.option("-n", "--lines", type=click.IntRange(0), default=50, show_default=True)
@click.pass_obj
def log(cfg: Config, name, follow, lines):
    """Print the log of the workers named NAME."""
    name = worker_name(name)
    path = process.log_path(cfg.home, name)
    if not path.exists():
        raise Failure(f"no log for {name} at {path} (a worker run by systemd logs to the "
                      "journal only: journalctl -u UNIT)", EXIT_NOT_FOUND)
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


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON document for scripts")
@click.pass_obj
def list_workers(cfg: Config, as_json):
    """List the worker processes running, on every machine (from their heartbeats)."""
    now = utcnow()
    with open_store(cfg) as store:
        docs = peers.registry(store, cfg.workers_db)
        paused = pausing.paused(store, cfg.workers_db)
    entries = [{
        "name": doc.get("name"), "host": doc.get("host"), "pid": doc.get("pid"),
        "started": doc.get("started"), "last_seen": doc.get("last_seen"),
        "held": doc.get("held", 0), "running": doc.get("running", 0),
        "runs": (doc.get("counts") or {}).get("runs", 0),
        "state": peers.state(doc, to_ms(now)), "clock_offset": doc.get("clock_offset"),
        "clock_off": doc.get("clock_off") is True,
        "id": doc["_id"], "paused": doc.get("name") in paused,
    } for doc in docs]
    entries.sort(key=lambda e: (e["name"] or "", e["host"] or "", e["pid"] or 0))
    if as_json:
        # a paused name is one entry more, state "paused" (whether its processes run or not)
        click.echo(json.dumps(entries + [
            {"name": name, "state": "paused", "since": doc.get("since"), "id": doc["_id"]}
            for name, doc in sorted(paused.items())], indent=2))
        return
    for name, doc in sorted(paused.items()):
        click.echo(f"{name} is paused (since {short(doc.get('since'))}): its processes start "
                   f"nothing; `after resume {name}` resumes it")
    if not entries:
        click.echo("no worker is running")
        return
    rows = [("NAME", "HOST", "PID", "STATE", "STARTED", "LAST SEEN", "HELD", "RUNNING", "RUNS")]
    for e in entries:
        state = f"{e['state']} (paused)" if e["paused"] else e["state"]
        rows.append((e["name"], e["host"], str(e["pid"]), state, short(e["started"]),
                     ago(e["last_seen"], now), str(e["held"]), str(e["running"]),
                     str(e["runs"])))
    echo_table(rows)
    for e in entries:
        offset = e["clock_offset"]
        if e["clock_off"] and isinstance(offset, int | float):
            click.echo(f"warning: the clock of {e['host']} (pid {e['pid']}) is {offset:+.1f} s "
                       "off the database server's; keep clocks in sync (NTP)")


@click.command()
@click.argument("name")
@click.option("--log", "remove_log", is_flag=True,
              help="also remove its log (kept otherwise: what happened stays readable)")
@click.pass_obj
def clean(cfg: Config, name, remove_log):
    """Remove the stale pid files of NAME and its dead registry entries (and its log, with
    --log, once no process of NAME runs here)."""
    name = worker_name(name)
    removed = 0
    for pidfile in process.pid_files(cfg.home, name):
        if not pidfile.running:
            pidfile.path.unlink(missing_ok=True)
            removed += 1
    path = process.log_path(cfg.home, name)
    running = any(f.running for f in process.pid_files(cfg.home, name))
    log_note = ""
    if path.exists() and running and remove_log:
        log_note = " (log kept: the worker runs)"
    elif path.exists() and remove_log:
        path.unlink()
        log_note = ", its log"
    elif path.exists():
        log_note = f" (log kept: {path}; --log removes it)"
    with open_store(cfg) as store:
        pruned = peers.prune(store, cfg.workers_db, name, to_ms(utcnow()))
    click.echo(f"cleaned {name}: {plural(removed, 'stale pid file')}{log_note}, "
               f"{plural(pruned, 'dead registry entry', 'dead registry entries')}")


@click.command()
@click.argument("name", required=False)
@click.option("--task", "task_id", metavar="ID", help="pause this one task instead")
@click.option("--wait", type=click.FloatRange(0, 3600), default=10.0, show_default=True,
              metavar="SECONDS",
              help="wait this long for every live process of NAME to acknowledge (0: not)")
@click.pass_obj
def pause(cfg: Config, name, task_id, wait):
    """Pause the worker name NAME on every machine: its processes stay up but start
    nothing (held tasks are dropped; running jobs finish). Returns once every live process
    acknowledged it (exit 1, naming those that did not, after --wait). Kept in the
    database until `after resume NAME`. With --task ID, pause that task (a run going
    finishes)."""
    with _one_of(name, task_id) as client:
        if task_id is not None:
            doc = client.pause(task_id)
            click.echo(f"{task_id} paused" + (" (its run going finishes first)"
                                               if rules.running(doc) else ""))
            return
        doc = client.pause_worker(name, wait=wait)
        click.echo(f"{name} paused (since {short(doc.get('since'))}): its processes start "
                   "nothing new")
        waiting, done = doc.get("unacknowledged") or [], doc.get("acknowledged") or []
        if done and not waiting:
            click.echo(f"acknowledged by its {plural(len(done), 'live process', 'live processes')}")
        if waiting:
            raise Failure(f"not acknowledged within {wait:g} s by {', '.join(waiting)}: a "
                          "process starts nothing once it reads the pause, at its next "
                          "heartbeat (one frozen or cut off from the database later)")


@click.command()
@click.argument("name", required=False)
@click.option("--task", "task_id", metavar="ID", help="resume this one task instead")
@click.pass_obj
def resume(cfg: Config, name, task_id):
    """Resume the worker name NAME (or, with --task ID, a paused task: from its next
    occurrence after now, with no catch-up run)."""
    with _one_of(name, task_id) as client:
        if task_id is not None:
            before = client.get(task_id)
            if before.get("status") not in (*rules.FINISHED, rules.CANCEL, rules.PAUSED) \
                    and "paused" not in rules.info(before):
                click.echo(f"{task_id} was not paused (it is {before.get('status')})")
                return
            doc = client.resume(task_id)
            click.echo(f"{task_id} resumed: {doc['status']}"
                       + (f", next run {doc['date']}" if doc["status"] == rules.WAITING else ""))
            return
        if client.resume_worker(name):
            click.echo(f"{name} resumed")
        else:
            click.echo(f"{name} was not paused")


@contextmanager
def _one_of(name, task_id):
    """A client, once exactly one of NAME and --task is given (a usage error otherwise)."""
    if (name is None) == (task_id is None):
        raise click.UsageError("give a worker NAME or --task ID (one of them)")
    if name is not None:
        worker_name(name)
    with open_client(cfg_of()) as client, refused():
        yield client


def cfg_of() -> Config:
    return click.get_current_context().obj


COMMANDS = (start, stop, log, list_workers, clean, pause, resume)
