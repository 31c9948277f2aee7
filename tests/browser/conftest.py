"""Fixtures for the dashboard's tests in a real browser: headless Chromium from the system
packages (``/usr/bin/chromium``, installed by ``make install`` through
``scripts/install-browser.sh``; ``AFTER_CHROMIUM`` names another one), driven by Playwright.

There is no skip: without Chromium the tests fail and say how to install it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from after.couch.store import Store
from after.dashboard import design as dashboard
from after.dashboard.server import DashboardServer

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "tests" / "screenshots"  # git-ignored
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_path() -> Path:
    return Path(os.environ.get("AFTER_CHROMIUM", "/usr/bin/chromium"))


# Package scope, not session: while Playwright's sync API runs, its event loop is this
# thread's running loop, and asyncio.run() in the tests that come after would fail.
@pytest.fixture(scope="package")
def browser():
    executable = chromium_path()
    if not executable.exists():
        pytest.fail(f"Chromium is missing at {executable}: run `make install` (it calls "
                    "scripts/install-browser.sh) or `sudo scripts/install-browser.sh`, or set "
                    "AFTER_CHROMIUM to a Chromium binary", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Playwright gives each launch a fresh, temporary user data folder.
        browser = playwright.chromium.launch(executable_path=str(executable), headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Page:
    """A browser page and what went wrong on it (console errors, uncaught exceptions)."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")


@pytest.fixture
def dashboard_server(store, couch_url):
    """``after dashboard``'s server for the test's database, on a free port, with the
    suite's credentials (a store of its own, as the command has)."""
    dashboard.install(store)  # the page's views, as `after dashboard` does
    with Store(couch_url, store.db) as proxied:
        server = DashboardServer(proxied).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def open_page(browser, dashboard_server):
    """``open_page(width=1280)``: the dashboard of the test's database, loaded and live."""
    address = dashboard_server.url
    contexts = []

    def open_(width: int = 1280, height: int = 900, before=None, wait_live=True) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        watched = Page(context.new_page())
        if before is not None:
            before(watched.page)
        watched.page.goto(address)
        if wait_live:
            watched.page.locator("#live:not(.off)").wait_for(timeout=10_000)
        return watched

    yield open_
    for context in contexts:
        context.close()
