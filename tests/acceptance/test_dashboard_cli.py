"""``after dashboard`` in a subprocess: one command from a bare URL to a live page, its
errors on one line."""

from __future__ import annotations

import re
import signal
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from after.couch.store import Store, split_credentials

from ..conftest import drop_databases
from .conftest import one_line_error, wait_for


def printed_address(cli, process) -> str:
    out = cli.home / "spawn-0.out"

    def address():
        if process.poll() is not None:
            raise AssertionError(f"after dashboard exited: {out.read_text()}")
        found = re.search(r"^open (http://127\.0\.0\.1:\d+/\?token=\S+)$", out.read_text(),
                          re.M)
        return found and found.group(1)

    return wait_for(address, timeout=30, what="the dashboard's address")


def test_one_command_sets_up_serves_and_stops(cli, couch_url, db_name):
    fresh = f"{db_name}x"  # a database nobody set up yet
    process = cli.spawn("dashboard", "--no-open", AFTER_DB=fresh)
    try:
        address = printed_address(cli, process)
        output = (cli.home / "spawn-0.out").read_text()
        assert f"created database {fresh}" in output
        assert f"installed the dashboard's views in {fresh}" in output
        _, auth = split_credentials(couch_url)
        if auth is not None:
            assert urlsplit(couch_url).password not in output
            assert ":secret@" not in output
        with httpx.Client(follow_redirects=True, timeout=30) as browser:
            page = browser.get(address)
            assert page.status_code == 200
            assert f'content="{fresh}"' in page.text
            base = address.split("/?")[0]
            info = browser.get(f"{base}/{fresh}_workers")
            assert info.json()["db_name"] == f"{fresh}_workers"
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        assert "dashboard stopped" in (cli.home / "spawn-0.out").read_text()
        with pytest.raises(httpx.TransportError):
            httpx.get(base, timeout=2)
    finally:
        with Store(couch_url, fresh) as store:
            drop_databases(store, fresh)


def test_a_taken_port_is_one_line_and_exit_1(cli):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli.run("dashboard", "--no-open", "--port", str(port), timeout=30)
    line = one_line_error(result)
    assert result.returncode == 1
    assert f"cannot serve the dashboard on 127.0.0.1:{port}" in line


def test_a_bad_port_is_a_usage_error(cli):
    result = cli.run("dashboard", "--port", "99999", timeout=30)
    assert "99999" in one_line_error(result)
    assert result.returncode == 2


@pytest.mark.auth_server
def test_refused_credentials_are_one_line(cli, couch_url):
    bare, auth = split_credentials(couch_url)
    assert httpx.get(f"{bare}/_all_dbs").status_code == 401, "this server checks no credentials"
    wrong = bare.replace("://", "://admin:not-the-password@", 1)
    result = cli.run("dashboard", "--no-open", AFTER_COUCHDB_URL=wrong, timeout=30)
    line = one_line_error(result)
    assert result.returncode == 1
    assert "refused the credentials" in line
    assert "not-the-password" not in result.stdout + result.stderr
