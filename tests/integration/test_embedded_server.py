"""The embedded server's management: start, status, clear errors, stop by pid."""

from __future__ import annotations

import socket

import pytest

from after.couch.server import EmbeddedServer, ServerError, free_port, pid_alive
from after.couch.store import Store


def test_start_answers_then_stop_by_pid(tmp_path):
    server = EmbeddedServer(workdir=tmp_path / "srv", port=free_port())
    pid = server.start()
    try:
        assert server.pid() == pid and pid_alive(pid)
        with Store(server.url) as store:
            assert store.info()["version"]
        with pytest.raises(ServerError, match=f"already runs \\(pid {pid}"):
            server.start()
        assert (tmp_path / "srv" / "pouchdb-config.json").exists()  # it wrote in its folder
    finally:
        assert server.stop() is True
    assert not pid_alive(pid)
    assert server.pid() is None and server.stop() is False


def test_a_taken_port_is_a_one_line_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = EmbeddedServer(workdir=tmp_path / "srv", port=port)
        with pytest.raises(ServerError, match=f"^port {port} on 127.0.0.1 is already in use$"):
            server.start()


def test_a_missing_install_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AFTER_POUCHDB_SERVER", str(tmp_path / "nothing-here"))
    monkeypatch.setattr("after.couch.server.PROJECT_ROOT", tmp_path)
    server = EmbeddedServer(workdir=tmp_path / "srv", port=free_port())
    with pytest.raises(ServerError, match="^AFTER_POUCHDB_SERVER names .*nothing-here, which "
                                          "does not exist$"):
        server.start()
    monkeypatch.delenv("AFTER_POUCHDB_SERVER")
    monkeypatch.setenv("PATH", str(tmp_path))  # no pouchdb-server, node or npm on it
    (tmp_path / "package.json").write_text("{}")  # a source checkout with nothing installed
    with pytest.raises(ServerError, match="^node and npm are needed for the embedded server"):
        server.start()


def test_the_cli_runs_it(tmp_path):
    import subprocess
    import sys

    port = free_port()
    env = {"AFTER_HOME": str(tmp_path), "AFTER_COUCHDB_URL": f"http://127.0.0.1:{port}",
           "PATH": "/usr/bin:/bin"}

    def after(*args):
        return subprocess.run([sys.executable, "-m", "after", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    started = after("server", "start", "--memory")
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith(f"embedded server running at http://127.0.0.1:{port}")
        assert after("server", "status").returncode == 0
        again = after("server", "start", "--memory")
        assert again.returncode == 1 and again.stderr.startswith("after: error: the embedded")
    finally:
        stopped = after("server", "stop")
    assert stopped.stdout.strip() == "embedded server stopped"
    assert after("server", "status").returncode == 1
