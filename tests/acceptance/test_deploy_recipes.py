"""docs/deploy.rst, run: the systemd unit and the Dockerfile (the same text as the files of
the repository, their commands run against each test server as their supervisors would run
them), the Kubernetes block (checked against the Dockerfile, its readiness probe seen to
answer 503 while the server is down), metrics on another address, JSON logs and levels,
rotation, upgrades with ``after setup``, compaction, backups, and a database of After 1.x
documents taken over."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from after.couch import schema
from after.couch.server import free_port
from after.couch.store import Store
from after.process import pid_files
from after.rules.dates import utcnow

from ..js import cases
from .conftest import recorded, task_doc, wait_for

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploy.rst"


def block(marker: str) -> str:
    """The code block that follows ``.. file: X`` or ``.. recipe: X`` in docs/deploy.rst."""
    lines = DOC.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == f".. {marker}")
    start = next(i for i in range(at, len(lines)) if lines[i].startswith(".. code-block::"))
    body = []
    for line in lines[start + 1:]:
        if line.strip() and not line.startswith("    "):
            break
        body.append(line)
    return textwrap.dedent("\n".join(body)).strip("\n") + "\n"


def test_the_docs_show_the_files_of_the_repository():
    assert block("file: deploy/after@.service") == (ROOT / "deploy" / "after@.service").read_text()
    assert block("file: Dockerfile") == (ROOT / "Dockerfile").read_text()


def unit() -> dict[str, str]:
    values = {}
    for line in (ROOT / "deploy" / "after@.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), value.strip())
    return values


def test_the_systemd_unit_stops_after_its_grace_not_before():
    service = unit()
    args = shlex.split(service["ExecStart"])
    grace = float(args[args.index("--grace") + 1])
    assert float(service["TimeoutStopSec"]) >= grace + 10
    assert "-b" not in args and "--background" not in args  # systemd keeps the process
    assert service["KillSignal"] == "SIGTERM" and service["Type"] == "simple"


def after_args(command: list[str]) -> list[str]:
    """A recipe's ``after ...`` (or ``/path/bin/after ...``) as this interpreter runs it."""
    assert Path(command[0]).name == "after", command
    return [sys.executable, "-m", "after", *command[1:]]


def test_the_systemd_units_command_runs_as_systemd_would_and_logs_once(cli, tasks, tmp_path):
    args = shlex.split(unit()["ExecStart"].replace("%i", "billing"))
    env = {**cli.env, "INVOCATION_ID": "0123456789abcdef", "JOURNAL_STREAM": "8:12345"}
    journal = open(tmp_path / "journal", "w")
    worker = subprocess.Popen(after_args(args), env=env, cwd=tmp_path, stdout=journal,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    cli.spawned.append(worker)
    wait_for(lambda: "worker billing ready" in (tmp_path / "journal").read_text(),
             what="the worker")
    tasks.put(task_doc("t", "billing", tmp_path / "runs.jsonl"))
    wait_for(lambda: tasks.get("t")["status"] == "done", what="the task")
    worker.send_signal(signal.SIGTERM)  # systemctl stop
    assert worker.wait(float(unit()["TimeoutStopSec"])) == 0
    text = (tmp_path / "journal").read_text()
    assert text.count("worker billing ready") == 1 and "worker billing stopped" in text
    assert not (cli.home / "billing.log").exists()  # the journal has it: once
    forced = cli.spawn("start", "filed", "--log-file", INVOCATION_ID="x")
    wait_for(lambda: (cli.home / "filed.log").exists()
             and "worker filed ready" in (cli.home / "filed.log").read_text(),
             what="the log file asked for")  # (ready: its SIGTERM handler is in place)
    forced.terminate()
    assert forced.wait(30) == 0


def dockerfile() -> tuple[dict[str, str], list[str], list[str]]:
    """The Dockerfile's ENV, CMD and HEALTHCHECK command."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    cmd = health = None
    for line in text.splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value
        elif line.startswith("CMD "):
            cmd = json.loads(line[4:])
        elif line.startswith("HEALTHCHECK "):
            health = json.loads(line[line.index(" CMD ") + 5:])
    return env, cmd, health


def test_the_dockerfiles_command_runs_a_worker_its_healthcheck_watches(cli, tasks, tmp_path):
    env, cmd, health = dockerfile()
    port = free_port()
    image_env = {**cli.env, **env, "AFTER_METRICS_PORT": str(port),
                 "AFTER_HOME": str(tmp_path / "container-home")}
    image_env["AFTER_JOBS"] = cli.env["AFTER_JOBS"]  # /app/jobs in the image
    out = open(tmp_path / "engine-log", "w")
    worker = subprocess.Popen(after_args(cmd), env=image_env, cwd=tmp_path, stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    cli.spawned.append(worker)
    check = [*health[:-1], health[-1].replace(":9300", f":{port}")]
    assert health[0] == "python"
    check[0] = sys.executable

    def healthy() -> bool:
        return subprocess.run(check, capture_output=True, timeout=10).returncode == 0

    wait_for(healthy, timeout=30, what="a healthy container")
    # every interface: another loopback address reaches it (127.0.0.1 alone would refuse)
    assert httpx.get(f"http://127.0.0.2:{port}/health").json()["feed"] == "connected"
    tasks.put(task_doc("c", "default", tmp_path / "runs.jsonl"))
    wait_for(lambda: tasks.get("c")["status"] == "done", what="the task")
    worker.send_signal(signal.SIGTERM)  # docker stop
    assert worker.wait(30) == 0
    assert not healthy()
    lines = (tmp_path / "engine-log").read_text().splitlines()
    logged = [json.loads(line) for line in lines]  # JSON, every line
    assert any(r["message"] == "worker default ready" and r["level"] == "INFO"
               for r in logged)
    assert all(r["time"].endswith("Z") and {"pid", "logger"} <= set(r) for r in logged)
    assert not list((tmp_path / "container-home").glob("*.log"))  # stderr only


def kubernetes() -> dict:
    """The Kubernetes block of docs/deploy.rst, read as text (no YAML parser in the
    dependencies): key -> the values written after it, in order; flow mappings (``{a: b}``)
    as dicts, flow lists as lists."""
    values: dict = {}
    key = ""
    for line in block("recipe: kubernetes").splitlines():
        text = line.split("#")[0].strip().removeprefix("- ")
        if text.startswith("{"):  # an item of a list of mappings: under the key above it
            value = text
        else:
            key, _, value = text.partition(":")
            value = value.strip()
        if value.startswith("{") and not value.startswith("{secretKeyRef"):
            value = dict(item.split(": ") for item in value.strip("{}").split(", "))
        elif value.startswith("["):
            value = json.loads(value)
        values.setdefault(key, [])
        if value:  # (a key that opens a block has none on its line)
            values[key].append(value)
    return values


def test_the_kubernetes_recipe_runs_the_image_with_its_port_and_probes():
    k8s = kubernetes()
    env, cmd, _ = dockerfile()
    [args] = k8s["args"]
    assert args == [*cmd[:2], "billing", *cmd[3:]]  # the image's command, another name
    grace = float(args[args.index("--grace") + 1])
    assert float(k8s["terminationGracePeriodSeconds"][0]) >= grace + 10
    [port] = k8s["ports"]
    assert port["containerPort"] == env["AFTER_METRICS_PORT"] == "9300"
    assert "EXPOSE 9300" in (ROOT / "Dockerfile").read_text()
    assert env["AFTER_METRICS_HOST"] == "0.0.0.0"  # the kubelet probes from outside the pod
    assert k8s["readinessProbe"] == k8s["livenessProbe"] == []  # blocks: what follows
    assert k8s["httpGet"] == [{"path": "/health", "port": port["name"]}]
    assert k8s["tcpSocket"] == [{"port": port["name"]}]
    assert k8s["name"][1] == "AFTER_COUCHDB_URL"


def test_the_readiness_probe_answers_503_while_the_feed_is_down(disk_cli, disk_server,
                                                                tmp_path):
    """The Kubernetes recipe's probes against its command, with the image's ENV, on a
    server of the test's own that it stops and starts again."""
    k8s = kubernetes()
    env, _, _ = dockerfile()
    port = free_port()
    image_env = {**disk_cli.env, **env, "AFTER_METRICS_PORT": str(port),
                 "AFTER_HOME": str(tmp_path / "pod-home"),
                 "AFTER_JOBS": disk_cli.env["AFTER_JOBS"]}
    out = open(tmp_path / "pod-log", "w")
    worker = subprocess.Popen(after_args(k8s["args"][0]), env=image_env, cwd=tmp_path,
                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    disk_cli.spawned.append(worker)
    [probe] = k8s["httpGet"]

    def readiness() -> int:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{probe['path']}", timeout=2).status_code
        except httpx.TransportError:
            return 0

    def liveness() -> bool:  # tcpSocket: the port answers
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True

    wait_for(lambda: readiness() == 200, what="ready")
    disk_server.stop()
    wait_for(lambda: readiness() == 503, what="not ready while the server is down")
    assert liveness() and worker.poll() is None
    assert httpx.get(f"http://127.0.0.1:{port}/health").json()["feed"] == "disconnected"
    disk_server.start()
    wait_for(lambda: readiness() == 200, what="ready again once the server is back")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_metrics_listen_on_127_0_0_1_unless_told(cli, tasks):
    port = free_port()
    started = cli.run("start", "metered", "-b", "--metrics-port", str(port))
    assert started.returncode == 0, started.stderr
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200,
             what="health")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.2:{port}/health")
    assert cli.run("stop", "metered").returncode == 0


SHOUT = """
import logging

def shout(task):
    logging.getLogger("jobs.shout").info("isolated run of %s", task.id)
    raise ValueError("on purpose")
"""


def test_a_daemon_logs_json_its_isolated_runs_too_and_serves_metrics_on_its_host(
        cli, tasks, tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "shout.py").write_text(SHOUT)
    port = free_port()
    started = cli.run("start", "jsonlog", "-b", "--poll", "1", "--log-format", "json",
                      "--metrics-host", "127.0.0.2", "--metrics-port", str(port),
                      AFTER_JOBS=str(jobs))
    assert started.returncode == 0, started.stderr
    [daemon] = pid_files(cli.home, "jsonlog")
    doc = task_doc("loud", "jsonlog", tmp_path / "x", isolation="process")
    doc["job"] = {"name": "shout", "arguments": []}
    tasks.put(doc)
    wait_for(lambda: tasks.get("loud")["status"] == "error", what="the isolated failure")
    metrics = f"http://127.0.0.2:{port}/metrics"
    wait_for(lambda: 'job="shout"' in httpx.get(metrics).text, what="the run in /metrics")
    with pytest.raises(httpx.ConnectError):  # on the host it was given, not on 127.0.0.1
        httpx.get(f"http://127.0.0.1:{port}/metrics")
    log = cli.home / "jsonlog.log"
    wait_for(lambda: "no retry left" in log.read_text(), what="the failure's line")
    assert cli.run("stop", "jsonlog").returncode == 0
    logged = [json.loads(line) for line in log.read_text().splitlines()]  # JSON, every line
    assert any(r["message"] == "worker jsonlog ready" and r["pid"] == daemon.pid
               for r in logged)
    [child] = [r for r in logged if r["logger"] == "jobs.shout"]  # the isolated run's process
    assert child["message"] == "isolated run of loud" and child["pid"] != daemon.pid
    [failed] = [r for r in logged if "no retry left" in r["message"]]
    assert failed["level"] == "WARNING" and "ValueError: on purpose" in failed["message"]
    assert failed["exception"].startswith("Traceback") and \
        failed["exception"].endswith("ValueError: on purpose")


def test_log_level_leaves_out_what_is_below_it(cli, tasks, tmp_path):
    worker = cli.spawn("start", "quiet", "--poll", "1", "--log-level", "warning")
    wait_for(lambda: any(f.running for f in pid_files(cli.home, "quiet")), what="start")
    doc = task_doc("f", "quiet", tmp_path / "x")
    doc["job"] = {"name": "fail", "arguments": ["on purpose"]}
    tasks.put(doc)
    wait_for(lambda: tasks.get("f")["status"] == "error", what="the failure")
    wait_for(lambda: "no retry left" in (cli.home / "quiet.log").read_text(), what="the line")
    worker.terminate()
    assert worker.wait(30) == 0
    text = (cli.home / "quiet.log").read_text()
    assert "INFO" not in text and "WARNING" in text


def test_a_log_moved_away_by_logrotate_is_followed_by_a_new_one(cli, tasks, tmp_path):
    recipe = block("recipe: logrotate")
    assert "copytruncate" not in recipe and "postrotate" not in recipe  # nothing to signal
    started = cli.run("start", "rotated", "-b", "--poll", "1")
    assert started.returncode == 0, started.stderr
    log = cli.home / "rotated.log"
    os.rename(log, cli.home / "rotated.log.1")  # what logrotate does, without copytruncate
    tasks.put(task_doc("r", "rotated", tmp_path / "runs.jsonl"))
    wait_for(lambda: tasks.get("r")["status"] == "done", what="the task")
    wait_for(lambda: log.exists() and "done r (job record" in log.read_text(),
             what="a new log")
    assert "done r" not in (cli.home / "rotated.log.1").read_text()
    assert "worker rotated ready" in (cli.home / "rotated.log.1").read_text()
    assert cli.run("stop", "rotated").returncode == 0


def test_an_upgrade_brings_an_older_set_up_up_to_date(cli, tasks):
    design = tasks.get(schema.DESIGN_ID)
    tasks.put({**design, "validate_doc_update": "function (newDoc) { /* version 0 */ }"})
    # the indexes of the tasks database, as if the older version had none
    indexes = tasks.get("_design/after-indexes")
    tasks.delete(indexes["_id"], indexes["_rev"])
    done = cli.run("setup")
    assert done.returncode == 0, done.stderr
    assert f"updated {schema.DESIGN_ID}" in done.stdout
    assert f"created index by-status-date on {tasks.db}" in done.stdout
    assert tasks.get(schema.DESIGN_ID)["validate_doc_update"] != \
        "function (newDoc) { /* version 0 */ }"
    again = cli.run("setup")
    assert again.stdout.startswith(f"{tasks.db} was already set up")


def test_compact_reports_each_database(cli, tasks):
    worker = cli.spawn("start", "beating", "--heartbeat", "0.2", "--lease", "1")
    wait_for(lambda: any(f.running for f in pid_files(cli.home, "beating")), what="start")
    done = cli.run("compact", "--wait", "30")
    worker.terminate()
    worker.wait(30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [tasks.db, f"{tasks.db}_runs",
                                                      f"{tasks.db}_workers"]
    for line in lines:
        assert re.fullmatch(r"\S+: ([\d.]+ [KMG]?B -> [\d.]+ [KMG]?B(, [\d.]+ [KMG]?B of it "
                            r"live)?|compacted \(the server tells no size\))"
                            r"( \(compacting in the background\))?", line), line
    if "couchdb" in cli.url or "@" in cli.url:  # CouchDB: its sizes, file and live data
        assert "of it live" in lines[2]


def test_the_backup_recipe_copies_the_three_databases(cli, tasks, couch_url, tmp_path):
    for k in range(5):
        tasks.put(task_doc(f"b{k}", "nobody", tmp_path / "x", delay=3600))
    recipe = block("recipe: backup").replace(
        "for db in tasks tasks_runs tasks_workers",
        f"for db in {tasks.db} {tasks.db}_runs {tasks.db}_workers")
    done = subprocess.run(["bash", "-ec", recipe], env={**os.environ, "COUCH": couch_url},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    try:
        for db in (tasks.db, f"{tasks.db}_runs", f"{tasks.db}_workers"):
            original = {d["_id"]: d["_rev"] for d in tasks.prefixed("", db=db)}
            copy = {d["_id"]: d["_rev"] for d in tasks.prefixed("", db=f"backup_{db}")}
            assert copy == original
    finally:
        for db in (tasks.db, f"{tasks.db}_runs", f"{tasks.db}_workers"):
            tasks.delete_database(f"backup_{db}")


class Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hook.received.append(json.loads(body or b"null"))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_database_of_after_1x_documents_is_taken_over(cli, couch_url, db_name, tmp_path):
    Hook.received.clear()  # one list for the class: this test's calls only
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    record = tmp_path / "runs.jsonl"
    table = cases("after1x")["docs"]
    old = f"{db_name}_1x"
    env = {"AFTER_DB": old}
    with Store(couch_url, old) as store:
        store.create_database()  # as After 1.x left it, replicated here: no set-up at all
        for case in table:
            text = json.dumps(case["doc"]).replace('"RECORD"', json.dumps(str(record)))
            store.put(json.loads(text.replace(
                '"WEBHOOK"', json.dumps(f"http://127.0.0.1:{hook.server_address[1]}/hook"))))
        try:
            setup = cli.run("setup", **env)  # step 2
            assert setup.returncode == 0, setup.stderr
            worker = cli.spawn("start", "manobi", "--poll", "1", **env)  # step 4
            expect = {case["doc"]["_id"]: case["expect"] for case in table}
            wait_for(lambda: all(store.get(i)["status"] == "done" for i, what in
                                 expect.items() if what == "done"), timeout=60,
                     what="the waiting After 1.x tasks to run")
            wait_for(lambda: store.get("billing")["after"].get("runs") == 1,
                     what="the repeating one to run")
            billing = store.get("billing")
            assert billing["status"] in ("waiting", "scheduled")
            assert billing["date"] > utcnow().isoformat()[:10]  # its next date: ahead
            assert store.get("later")["status"] in ("waiting", "scheduled")
            for docid in ("old-done", "old-canceled"):
                assert "after" not in store.get(docid), docid  # left alone
            err = store.get("old-err")  # After 1.x's first word for a failure
            assert err["status"] == "error" and err["after"]["error"].startswith(
                "status: 'err' is not one of waiting")
            assert Hook.received == [{"a": 1}]
            ran = sorted(r["id"] for r in recorded(record))
            assert ran == ["billing", "left-scheduled"]  # never old-err nor the finished
            listed = cli.run("tasks", "--status", "error", **env)
            assert "old-err" in listed.stdout
            worker.terminate()
            assert worker.wait(30) == 0
        finally:
            hook.shutdown()
            for db in (old, f"{old}_runs", f"{old}_workers"):
                if store.database_exists(db):
                    store.delete_database(db)
