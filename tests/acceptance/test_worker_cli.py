"""After's five commands, in subprocesses: start -b, list, log, stop, clean."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from datetime import timedelta

import httpx
import pytest

from after.config import mask_url
from after.process import pid_files
from after.rules.dates import format_date, parse_date, utcnow

from .conftest import holding, one_line_error, recorded, task_doc, wait_for


def test_the_original_after_example_runs_as_written(cli, tasks):
    """docs/reference.rst, The original After example: a worker `manobi`, and the After task
    PUT with plain HTTP."""
    started = cli.run("start", "manobi", "-b", "--poll", "1")
    assert started.returncode == 0, started.stderr
    assert "started in the background" in started.stdout
    assert str(cli.home / "manobi.log") in started.stdout

    date = format_date(utcnow() + timedelta(seconds=1.5))
    response = httpx.put(
        f"{cli.url}/{cli.db}/replication",
        json={"worker": "manobi", "date": date,
              "job": {"name": "start_replication", "arguments": [2, 3, "test"]},
              "status": "waiting"},
        headers={"Accept-Encoding": "identity"},
    )
    assert response.status_code == 201
    doc = wait_for(lambda: (d := tasks.get("replication"))["status"] == "done" and d,
                   what="the task to be done")
    last = doc["after"]["last_run"]
    assert last["result"] == {"source": 2, "target": 3, "label": "test"}
    lateness = (parse_date(last["started"]) - parse_date(date)).total_seconds()
    assert 0 <= lateness < 0.2

    listing = cli.run("list", "--json")
    assert listing.returncode == 0
    [entry] = json.loads(listing.stdout)
    assert entry["name"] == "manobi" and entry["state"] == "live"
    assert entry["runs"] >= 0 and entry["pid"] == pid_files(cli.home, "manobi")[0].pid
    table = cli.run("list")
    assert table.stdout.splitlines()[0].split()[:4] == ["NAME", "HOST", "PID", "STATE"]
    assert "manobi" in table.stdout

    log = cli.run("log", "manobi", "-n", "200")
    assert log.returncode == 0
    assert "done replication (job start_replication, attempt 1) in " in log.stdout

    stopped = cli.run("stop", "manobi")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("stopped manobi (pid ")
    assert pid_files(cli.home, "manobi") == []  # removed at exit
    assert json.loads(cli.run("list", "--json").stdout) == []

    cleaned = cli.run("clean", "manobi")
    assert cleaned.returncode == 0
    log = cli.home / "manobi.log"
    assert re.fullmatch(rf"cleaned manobi: 0 stale pid files \(log kept: {re.escape(str(log))}; "
                        r"--log removes it\), (1 dead registry entry|\d+ dead registry "
                        r"entries)\n", cleaned.stdout), cleaned.stdout
    assert log.exists()  # what happened stays readable
    cleaned = cli.run("clean", "manobi", "--log")
    assert cleaned.stdout == "cleaned manobi: 0 stale pid files, its log, 0 dead registry " \
                             "entries\n"
    assert not log.exists()
    assert pid_files(cli.home, "manobi") == []


def test_foreground_start_logs_to_stderr_and_file_and_stops_on_sigterm(cli, tasks, tmp_path):
    out = tmp_path / "runs.jsonl"
    worker = cli.spawn("start", "fg", "--poll", "1")
    wait_for(lambda: any(f.running for f in pid_files(cli.home, "fg")), what="the pid file")
    tasks.put(task_doc("t1", "fg", out))
    tasks.put(task_doc("later", "fg", out, delay=60))
    wait_for(lambda: tasks.get("t1")["status"] == "done", what="t1 done")
    wait_for(lambda: holding(cli, "fg", worker.pid) >= 1, what="later held")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    later = tasks.get("later")
    assert later["status"] == "waiting" and later["_rev"].startswith("1-")  # nothing written
    printed = (cli.home / "spawn-0.out").read_text()
    logged = (cli.home / "fg.log").read_text()
    assert "worker fg ready" in printed and "worker fg ready" in logged
    assert "worker fg stopped" in logged
    assert pid_files(cli.home, "fg") == []  # removed at exit
    assert [r["id"] for r in recorded(out)] == ["t1"]


def test_sigterm_as_soon_as_the_pid_file_is_written_is_a_graceful_stop(cli, tasks):
    """`after stop` finds a worker by its pid file, written before the worker is made: a
    SIGTERM then (before the worker's own handlers) used to end the process with -15. It is
    kept, and the worker stops gracefully as soon as it is made."""
    worker = cli.spawn("start", "early")
    wait_for(lambda: any(f.running for f in pid_files(cli.home, "early")), interval=0.002,
             what="the pid file")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert "worker early stopped" in (cli.home / "early.log").read_text()
    assert pid_files(cli.home, "early") == []


def test_a_second_ctrl_c_stops_at_once(cli, tasks, tmp_path):
    worker = cli.spawn("start", "impatient", "--poll", "1", "--grace", "60")
    wait_for(lambda: any(f.running for f in pid_files(cli.home, "impatient")), what="start")
    doc = task_doc("long", "impatient", tmp_path / "x")
    doc["job"] = {"name": "sleep", "arguments": [60]}
    tasks.put(doc)
    wait_for(lambda: tasks.get("long")["status"] == "running", what="the job to run")
    worker.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping" in (cli.home / "impatient.log").read_text(), what="stopping")
    worker.send_signal(signal.SIGINT)
    assert worker.wait(10) == 130


@pytest.mark.parametrize(
    "args, needle",
    [
        (["start"], "Missing argument 'NAME'"),
        (["start", "bad name"], "is not a worker name"),
        (["start", "w", "--pool", "0"], "--pool"),
        (["start", "w", "--horizon", "soon"], "--horizon"),
        (["start", "w", "--heartbeat", "60", "--lease", "30"], "--heartbeat"),
        (["stop", "nobody"], "no worker named nobody"),
        (["log", "nobody"], "no log for nobody"),
        (["log", "x", "-n", "-3"], "-n"),
        (["frobnicate"], "No such command"),
    ],
)
def test_wrong_arguments_get_a_one_line_error(cli, args, needle):
    result = cli.run(*args)
    line = one_line_error(result)
    assert needle in line
    assert result.returncode in (2, 4)


def test_an_unreachable_database_is_one_line_and_exit_3(cli):
    result = cli.run("start", "w", AFTER_COUCHDB_URL="http://admin:s3cret@127.0.0.1:9")
    line = one_line_error(result)
    assert result.returncode == 3
    assert "cannot reach http://admin:***@127.0.0.1:9" in line
    assert "s3cret" not in result.stderr + result.stdout


def test_setup_is_idempotent_from_the_cli(cli):
    first = cli.run("setup")
    assert first.returncode == 0
    assert "installed the dashboard's views in " in first.stdout
    second = cli.run("setup")
    assert second.returncode == 0
    assert second.stdout.strip() == f"{cli.db} was already set up at {mask_url(cli.url)}"


def test_metrics_port_serves_metrics_and_health(cli, tasks, tmp_path):
    from after.couch.server import free_port

    port = free_port()
    started = cli.run("start", "metered", "-b", "--poll", "1", "--metrics-port", str(port))
    assert started.returncode == 0, started.stderr
    base = f"http://127.0.0.1:{port}"
    health = wait_for(lambda: (r := httpx.get(f"{base}/health")).status_code == 200 and r,
                      what="health")
    assert health.json()["feed"] == "connected"
    tasks.put(task_doc("m", "metered", tmp_path / "runs.jsonl"))
    text = wait_for(lambda: 'job="record",outcome="done"' in (t := httpx.get(f"{base}/metrics")
                                                             .text) and t, what="a counted run")
    assert 'after_runs_total{job="record",outcome="done",worker="metered"} 1.0' in text
    assert cli.run("stop", "metered").returncode == 0


@pytest.mark.parametrize("background", [False, True], ids=["foreground", "background"])
def test_a_taken_metrics_port_is_a_one_line_error(cli, background):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        flags = ["-b"] if background else []
        result = cli.run("start", "metered", *flags, "--metrics-port", str(port))
    line = one_line_error(result)
    assert f"cannot serve metrics on 127.0.0.1:{port}" in line
    assert not [f for f in pid_files(cli.home, "metered") if f.running]


def test_a_password_given_with_url_never_shows_in_ps(cli, tasks, tmp_path):
    """``after --url http://user:pw@... start -b``: the daemon's command line has no password
    (the URL moves to its environment, which only its user can read)."""
    from urllib.parse import urlsplit

    env = {**cli.env}
    env.pop("AFTER_COUCHDB_URL")
    result = subprocess.run(
        [sys.executable, "-m", "after", "--url", cli.url, "start", "hidden", "-b", "--poll", "1"],
        cwd=cli.cwd, env=env, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    [pidfile] = [f for f in pid_files(cli.home, "hidden") if f.running]
    cmdline = open(f"/proc/{pidfile.pid}/cmdline", "rb").read().decode().split("\0")
    password = urlsplit(cli.url).password
    if password:  # CouchDB: the credentials left the command line
        assert not any(password in arg for arg in cmdline), cmdline
        assert "--url" not in cmdline
    else:  # pouchdb-server has no admin: a URL without a password stays where it was given
        assert cmdline[cmdline.index("--url") + 1] == cli.url
    tasks.put(task_doc("h", "hidden", tmp_path / "runs.jsonl"))
    wait_for(lambda: tasks.get("h")["status"] == "done", what="the task run")
    assert cli.run("stop", "hidden").returncode == 0
