"""``after dashboard``: serve the web dashboard on 127.0.0.1 and open it in a browser.

One command: it sets the database up when it is not (that takes a database admin), checks
the dashboard's views, starts :class:`~after.dashboard.server.DashboardServer` (which says
why the page is served here and not by CouchDB), prints the address and opens it, and
serves until Ctrl+C or SIGTERM.
"""

from __future__ import annotations

import os
import signal
import threading
import webbrowser

import click

from after.cli.common import Failure, open_store
from after.couch import schema
from after.couch.store import Forbidden, Unauthorized
from after.dashboard import design as dashboard
from after.dashboard.server import DashboardServer


@click.command("dashboard")
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="port on 127.0.0.1 to serve the page on  [default: a free one]")
@click.option("--no-open", is_flag=True, help="only print the address, do not open a browser")
@click.pass_obj
def dashboard_command(cfg, port, no_open):
    """Serve the web dashboard on 127.0.0.1 (the database proxied) until Ctrl+C."""
    with open_store(cfg) as store:
        prepare(cfg, store)
        try:
            server = DashboardServer(store, port=port)
        except OSError as exc:
            raise Failure(f"cannot serve the dashboard on 127.0.0.1:{port}: "
                          f"{exc.strerror or exc}") from None
        except FileNotFoundError as exc:
            raise Failure(f"the dashboard's files are missing from the package: {exc}") \
                from None
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        thread = threading.Thread(target=server.serve_forever, name="after-dashboard",
                                  daemon=True)
        thread.start()
        try:
            click.echo(f"dashboard of {cfg.db} on {cfg.safe_url}")
            click.echo(f"open {server.url}")
            click.echo("(Ctrl+C stops it)")
            if not no_open and not open_browser(server.url):
                click.echo("(no browser found here: open the address above yourself)")
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    click.echo("dashboard stopped")


def prepare(cfg, store) -> None:
    """Set the database up if needed and make sure the page's views are current."""
    try:
        if not schema.is_set_up(store):
            for line in schema.setup(store):
                click.echo(line)
        if dashboard.install(store):
            click.echo(f"installed the dashboard's views in {cfg.db}")
    except (Unauthorized, Forbidden) as exc:
        # CouchDB answers a member's design-document write with a 401 "not a db admin"
        if "admin" in str(exc):
            raise Failure(f"{cfg.safe_url}/{cfg.db}: {exc} (the dashboard needs the "
                          "database set up once by a database admin: `after setup`)") \
                from None
        raise Failure(f"{cfg.safe_url} refused the credentials: {exc}") from None


def open_browser(address: str) -> bool:
    """Open ``address`` in a graphical browser when this machine has one; never fails.

    Text-mode browsers (lynx, w3m: what ``webbrowser`` falls back to without a display) are
    not used unless ``BROWSER`` names one: they would take over the terminal, and the page
    needs JavaScript.
    """
    try:
        browser = webbrowser.get()  # raises when there is none at all
        text_mode = (type(browser) is webbrowser.GenericBrowser
                     and not os.environ.get("BROWSER"))
        if text_mode:
            return False
        return bool(browser.open(address, new=2))
    except (webbrowser.Error, OSError):
        return False


COMMANDS = (dashboard_command,)
