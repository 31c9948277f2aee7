"""Errors that lead somewhere: a server that is not CouchDB is named as such; the embedded
server is suggested only for a URL it could serve; ``add`` warns, and ``show`` says, when no
live process serves a task's worker name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from after.process import pid_files

from .conftest import one_line_error, wait_for

ROOT = Path(__file__).resolve().parents[2]


class Other(BaseHTTPRequestHandler):
    """Another service: an HTML page at /, a JSON API of its own elsewhere."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/":
            self.answer(200, "text/html", b"<html><body>Grafana</body></html>")
        else:
            self.answer(200, "application/json", b'{"status": "ok", "items": []}')

    do_HEAD = do_GET  # noqa: N815

    def do_PUT(self):  # noqa: N802
        self.answer(404, "text/plain", b"Not Found")

    do_POST = do_PUT  # noqa: N815

    def answer(self, status, kind, body):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def other_service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Other)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def after(*args, tmp_path, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AFTER_")}
    environ.update(AFTER_HOME=str(tmp_path / "home"), AFTER_JOBS=str(ROOT / "jobs"),
                   AFTER_CONFIG=str(tmp_path / "none.json"), **env)
    (tmp_path / "none.json").write_text("{}")
    return subprocess.run([sys.executable, "-m", "after", *args], env=environ, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [
    ("tasks",), ("add", "hello", "-w", "billing"), ("setup",), ("show", "x"),
    ("start", "billing"), ("list",), ("runs", "x"),
], ids=lambda args: args[0])
def test_a_server_that_is_not_couchdb_is_named_as_such(other_service, tmp_path, args):
    done = after(*args, tmp_path=tmp_path, AFTER_COUCHDB_URL=other_service)
    line = one_line_error(done)
    assert line == (f"after: error: {other_service} is not a CouchDB server (GET / answered "
                    "200 text/html: '<html><body>Grafana</body></html>'); check the URL and "
                    "port (AFTER_COUCHDB_URL, --url, or host and port in config.json)")
    assert done.returncode == 3


def test_the_embedded_server_is_suggested_only_for_a_url_it_could_serve(tmp_path):
    local = one_line_error(after("tasks", tmp_path=tmp_path,
                                 AFTER_COUCHDB_URL="http://127.0.0.1:9"))
    assert local.endswith("is it running? (`after server start` runs the embedded one)")
    # a production URL (127.0.0.2 stands for it: refused at once, and no embedded server's)
    remote = one_line_error(after("tasks", tmp_path=tmp_path,
                                  AFTER_COUCHDB_URL="http://admin:pw@127.0.0.2:9"))
    assert remote == ("after: error: cannot reach http://admin:***@127.0.0.2:9: ConnectError; "
                      "is it running?")


def test_add_warns_and_show_says_when_no_live_process_serves_the_name(cli, tasks, tmp_path):
    worker = cli.spawn("start", "billing", "--poll", "1")
    wait_for(lambda: any(f.running for f in pid_files(cli.home, "billing")), what="start")
    wait_for(lambda: "billing" in cli.run("list").stdout, what="the heartbeat")
    served = cli.run("add", "hello", "-w", "billing", "--at", "+1h", "--id", "ok")
    assert (served.returncode, served.stdout, served.stderr) == (0, "ok\n", "")
    typo = cli.run("add", "hello", "-w", "bilIing", "--at", "+1h", "--id", "typo")
    assert typo.returncode == 0 and typo.stdout == "typo\n"
    assert typo.stderr == ("warning: no live process serves the worker name bilIing (did you "
                           "mean billing?): its tasks wait until one starts (`after start "
                           "bilIing`)\n")
    shown = cli.run("show", "typo")
    assert "warning    no live process serves the worker name bilIing (did you mean " \
           "billing?)" in shown.stdout
    assert "warning" not in cli.run("show", "ok").stdout
    as_json = json.loads(cli.run("show", "typo", "--json").stdout)
    assert as_json["unserved"].startswith("no live process serves the worker name bilIing")
    assert cli.run("pause", "billing").returncode == 0
    paused = cli.run("add", "hello", "-w", "billing", "--at", "+1h", "--id", "ok2")
    assert paused.stderr == ("warning: the worker name billing is paused: its processes "
                             "start nothing until `after resume billing`\n")
    worker.terminate()
    assert worker.wait(30) == 0
