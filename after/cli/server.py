"""``after setup`` and the embedded development server (``after server start|stop|status``)."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

import click

from after.cli.common import EXIT_FAILED, Failure, open_store
from after.config import Config, databases
from after.couch import schema
from after.couch.server import EmbeddedServer
from after.dashboard import design as dashboard


@click.command()
@click.pass_obj
def setup(cfg: Config):
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


def size(count) -> str:
    if not isinstance(count, int | float):
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return "?"


@click.command()
@click.option("--wait", "wait_for", type=click.FloatRange(0), default=0, metavar="SECONDS",
              help="wait up to SECONDS for CouchDB's background compactions to end")
@click.pass_obj
def compact(cfg: Config, wait_for):
    """Compact the tasks database and the two named after it (runs, workers), and drop
    the index files no design document uses. The workers database grows with every
    heartbeat (a revision a second per process) until it is compacted. Needs an admin."""
    import time

    with open_store(cfg) as store:
        before = {db: store.sizes(db) for db in databases(cfg.db)}
        for db in before:
            store.compact(db)
        deadline = time.monotonic() + wait_for
        after = {db: store.sizes(db) for db in before}
        while any(s["compacting"] for s in after.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
            after = {db: store.sizes(db) for db in before}
    for db, was in before.items():
        now = after[db]
        live = f", {size(now['active'])} of it live" if now["active"] is not None else ""
        going = " (compacting in the background)" if now["compacting"] else ""
        if was["file"] is None or now["file"] is None:  # pouchdb-server in memory
            click.echo(f"{db}: compacted (the server tells no size){going}")
            continue
        click.echo(f"{db}: {size(was['file'])} -> {size(now['file'])}{live}{going}")


@click.group()
def server():
    """The embedded CouchDB-compatible server, for development (pouchdb-server)."""


#: The hosts of a URL the embedded server can serve.
EMBEDDED_HOSTS = ("127.0.0.1", "localhost")


def embedded(cfg: Config, port: int | None, data: str | None, memory: bool) -> EmbeddedServer:
    parts = urlsplit(cfg.urls[0])
    if len(cfg.urls) > 1 or parts.hostname not in EMBEDDED_HOSTS:
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
def server_start(cfg: Config, port, data, memory):
    """Start the embedded server on 127.0.0.1 in the background."""
    srv = embedded(cfg, port, data, memory)
    pid = srv.start()
    where = "in memory" if srv.data is None else f"data in {srv.data}"
    click.echo(f"embedded server running at {srv.url} (pid {pid}, {where}, log "
               f"{srv.logfile})")


@server.command("stop")
@click.pass_obj
def server_stop(cfg: Config):
    """Stop the embedded server started from this AFTER_HOME."""
    srv = embedded(cfg, None, None, True)
    if not srv.stop():
        click.echo("the embedded server was not running")
        return
    click.echo("embedded server stopped")


@server.command("status")
@click.pass_obj
def server_status(cfg: Config):
    """Say whether the embedded server runs (exit 1 when it does not)."""
    srv = embedded(cfg, None, None, True)
    pid = srv.pid()
    if pid is None:
        click.echo("the embedded server is not running")
        sys.exit(EXIT_FAILED)
    click.echo(f"embedded server running (pid {pid}), log {srv.logfile}")


COMMANDS = (setup, compact, server)
