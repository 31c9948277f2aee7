"""``after dashboard``: install or update the web dashboard, print its URL, open a browser."""

from __future__ import annotations

import os
import webbrowser

import click

from . import dashboard, schema
from .cli import Failure, main, open_store


@main.command("dashboard")
@click.option("--no-open", is_flag=True, help="only print the URL, do not open a browser")
@click.pass_obj
def dashboard_command(cfg, no_open):
    """Open the web dashboard that CouchDB serves (installing or updating it first)."""
    with open_store(cfg) as store:
        if not schema.is_set_up(store):
            for line in schema.setup(store):
                click.echo(line)
        try:
            if dashboard.install(store):
                click.echo(f"installed the dashboard in {cfg.db}")
        except FileNotFoundError as exc:
            raise Failure(f"the dashboard's files are missing from the package: {exc}") from None
    click.echo(dashboard.url(cfg))
    if no_open:
        return
    if not open_browser(dashboard.browser_url(cfg)):
        click.echo("(no browser found here: open the URL above yourself)")


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
