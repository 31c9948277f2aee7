"""The task commands, each run as ``python -m after ...`` in a subprocess, against the real
(session) server: add, show, tasks, runs, cancel, reschedule, jobs; bad input for every
option; and the examples of docs/tasks.rst, run as written."""

from __future__ import annotations

import ast
import doctest
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from after.client import Client, ReplicaError
from after.couch import schema
from after.couch.store import Store, StoreError, split_credentials
from after.jobs import TaskContext
from after.rules.dates import format_date, utcnow

from ..conftest import drop_databases

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "tasks.rst"


@pytest.fixture
def env(couch_url, store, tmp_path) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AFTER_")}
    environ.update(AFTER_COUCHDB_URL=couch_url, AFTER_DB=store.db,
                   AFTER_HOME=str(tmp_path / "home"), AFTER_JOBS=str(ROOT / "jobs"),
                   AFTER_CONFIG=str(tmp_path / "none.json"))
    (tmp_path / "none.json").write_text("{}")
    return environ


def after(env: dict, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    """Run ``after ARGS``; check the exit code and that no traceback ever shows."""
    done = subprocess.run([sys.executable, "-m", "after", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    if code:
        assert done.stderr.count("\n") == 1, done.stderr  # one line
        assert done.stderr.startswith("after: error: ")
    return done


# -- add -----------------------------------------------------------------------------------


def test_add_prints_the_id_and_writes_the_task(env, store):
    done = after(env, "add", "noop", "Ada", "42", '{"x": [1]}', "true", "007", "--worker",
                 "billing", "--at", "2027-01-04T10:00:00+01:00", "--retry", "2",
                 "--timeout", "30", "--max-delay", "1.5", "--id", "greet")
    assert done.stdout == "greet\n"
    doc = store.get("greet")
    assert {k: v for k, v in doc.items() if k != "_rev"} == {
        "_id": "greet", "worker": "billing", "date": "2027-01-04T09:00:00.000Z",
        "job": {"name": "noop", "arguments": ["Ada", 42, {"x": [1]}, True, "007"]},
        "status": "waiting", "retry": 2, "timeout": 30, "max_delay": 1.5,
    }


def test_add_without_id_makes_one_and_json_prints_the_document(env, store):
    env = {**env, "AFTER_WORKER": "reports"}
    done = after(env, "add", "hello", "--kwargs", '{"name": "Bo"}', "--every", "1M",
                 "--until", "2027-12-31", "--at", "2027-01-31", "--json")
    doc = json.loads(done.stdout)
    assert re.fullmatch(r"[0-9a-f]{32}", doc["_id"])
    assert doc["worker"] == "reports"
    assert doc["job"] == {"name": "hello", "arguments": {"name": "Bo"}}
    assert doc["repeat"] == {"months": 1, "until": "2027-12-31T00:00:00.000Z"}
    assert doc["date"] == "2027-01-31T00:00:00.000Z"
    assert store.get(doc["_id"])["_rev"] == doc["_rev"]


def test_add_catchup_options_write_the_catchup_field(env, store):
    """Issue 25: --catchup, --catchup-window, --catchup-max as one ``catchup`` field, a
    redeploy with another policy rewrites it, and a bad combination is one line, exit 2."""
    after(env, "add", "noop", "-w", "x", "--every", "1h", "--catchup", "all",
          "--catchup-window", "7200", "--catchup-max", "12", "--id", "t")
    assert store.get("t")["catchup"] == {"policy": "all", "window": 7200, "max": 12}
    after(env, "add", "noop", "-w", "x", "--every", "1h", "--catchup-window", "600",
          "--id", "t")
    assert store.get("t")["catchup"] == {"window": 600}  # latest, the default
    after(env, "add", "noop", "-w", "x", "--every", "1h", "--id", "t")
    assert "catchup" not in store.get("t")
    bad = after(env, "add", "noop", "-w", "x", "--every", "1h", "--catchup", "latest",
                "--catchup-max", "3", code=2)
    assert "'--catchup-max': only with policy 'all'" in bad.stderr
    assert "'--catchup-max'" in after(env, "add", "noop", "-w", "x", "--every", "1h",
                                      "--catchup", "all", "--catchup-max", "0",
                                      code=2).stderr


@pytest.mark.parametrize("every, repeat", [
    ("P1M7D", "P1M7D"),
    ('{"w": 2}', {"w": 2}),
    ("1h30m", {"hours": 1, "minutes": 30}),
])
def test_add_every_forms(env, store, every, repeat):
    after(env, "add", "noop", "-w", "x", "--every", every, "--id", "t")
    assert store.get("t")["repeat"] == repeat


def test_add_every_iso_with_limit(env, store):
    after(env, "add", "noop", "-w", "x", "--every", "PT15M", "--limit", "3", "--id", "t")
    assert store.get("t")["repeat"] == {"every": "PT15M", "limit": 3}


def test_add_with_the_same_id_twice_leaves_one_task_unchanged(env, store):
    args = ("add", "hello", "Ada", "-w", "billing", "--every", "1d", "--id", "deploy")
    assert after(env, *args).stdout == "deploy\n"
    first = store.get("deploy")
    assert after(env, *args).stdout == "deploy\n"
    docs = list(store.find_all({"_id": {"$gt": None}}))
    assert [d["_id"] for d in docs if not d["_id"].startswith("_design/")] == ["deploy"]
    assert store.get("deploy")["_rev"] == first["_rev"]  # nothing changed: nothing written
    # a changed definition updates the same task, keeping the worker's counters
    doc = store.get("deploy")
    doc["after"] = {"runs": 4, "successes": 4}
    store.put(doc)
    after(env, "add", "hello", "Bo", "-w", "billing", "--every", "1d", "--id", "deploy")
    updated = store.get("deploy")
    assert updated["job"]["arguments"] == ["Bo"]
    assert updated["date"] == first["date"]
    assert updated["after"]["runs"] == 4
    assert updated["status"] == "waiting"


def test_cron_next_runs_across_the_paris_dst_change(env, store):
    after(env, "add", "hello", "-w", "billing", "--cron", "0 9 * * 1-5", "--tz",
          "Europe/Paris", "--at", "2027-03-24", "--id", "paris")
    shown = json.loads(after(env, "show", "paris", "--json").stdout)
    assert shown["next_runs"] == [
        "2027-03-24T08:00:00.000Z", "2027-03-25T08:00:00.000Z", "2027-03-26T08:00:00.000Z",
        "2027-03-29T07:00:00.000Z", "2027-03-30T07:00:00.000Z",
    ]
    assert shown["tz"] == "Europe/Paris"
    assert shown["next_runs_local"][2:4] == ["2027-03-26T09:00:00+01:00",
                                             "2027-03-29T09:00:00+02:00"]
    text = after(env, "show", "paris").stdout
    assert text.splitlines()[-5:] == [  # in the task's time zone beside UTC
        "next runs  2027-03-24T08:00:00.000Z  2027-03-24 09:00:00 CET (Europe/Paris)",
        "           2027-03-25T08:00:00.000Z  2027-03-25 09:00:00 CET (Europe/Paris)",
        "           2027-03-26T08:00:00.000Z  2027-03-26 09:00:00 CET (Europe/Paris)",
        "           2027-03-29T07:00:00.000Z  2027-03-29 09:00:00 CEST (Europe/Paris)",
        "           2027-03-30T07:00:00.000Z  2027-03-30 09:00:00 CEST (Europe/Paris)",
    ]
    utc = after(env, "add", "hello", "-w", "billing", "--cron", "0 9 * * *", "--id", "utc")
    assert utc.returncode == 0
    plain = after(env, "show", "utc").stdout.splitlines()
    assert re.fullmatch(r"next runs  \d{4}-\d\d-\d\dT09:00:00\.000Z", plain[-5]), plain
    assert "tz" not in json.loads(after(env, "show", "utc", "--json").stdout)
    assert "repeat     cron 0 9 * * 1-5 (Europe/Paris)" in text.splitlines()


def test_add_writes_the_dst_policy_and_show_says_it(env, store):
    after(env, "add", "hello", "-w", "billing", "--cron", "30 1 * * *", "--tz",
          "America/New_York", "--dst-gap", "skip", "--dst-fold", "both", "--at", "2027-11-06",
          "--id", "ny")
    assert store.get("ny")["repeat"] == {"cron": "30 1 * * *", "tz": "America/New_York",
                                         "dst": {"gap": "skip", "fold": "both"}}
    shown = json.loads(after(env, "show", "ny", "--json").stdout)
    assert shown["next_runs"][:4] == ["2027-11-06T05:30:00.000Z", "2027-11-07T05:30:00.000Z",
                                      "2027-11-07T06:30:00.000Z", "2027-11-08T06:30:00.000Z"]
    assert "repeat     cron 30 1 * * * (America/New_York), dst gap skip, fold both" in \
        after(env, "show", "ny").stdout.splitlines()
    # one option alone, and the other left to its default
    after(env, "add", "hello", "-w", "billing", "--cron", "30 2 * * *", "--tz", "Europe/Paris",
          "--dst-fold", "last", "--id", "paris")
    assert store.get("paris")["repeat"]["dst"] == {"fold": "last"}
    bad = after(env, "add", "hello", "-w", "billing", "--cron", "30 2 * * *", "--tz",
                "Europe/Paris", "--dst-gap", "later", code=2)
    assert "Invalid value for '--dst-gap'" in bad.stderr
    assert "'--tz'" in after(env, "add", "hello", "-w", "billing", "--cron", "30 2 * * *",
                             "--dst-fold", "both", code=2).stderr
    assert "applies to --cron only" in after(env, "add", "hello", "-w", "billing", "--every",
                                             "1d", "--dst-gap", "skip", code=2).stderr


def test_commands_print_job_arguments_with_secrets_masked(env, store):
    secret_kwargs = json.dumps({"url": "http://user:pw123@example.com/hook?token=T0K&page=2",
                                "headers": {"Authorization": "Bearer SEKRET",
                                            "X-Api-Key": "K3Y", "Accept": "text/plain"}})
    added = after(env, "add", "http", "-w", "billing", "--at", "2027-01-04",
                  "--kwargs", secret_kwargs, "--id", "hook", "--json").stdout
    outputs = [added, after(env, "show", "hook").stdout,
               after(env, "show", "hook", "--json").stdout,
               after(env, "tasks").stdout, after(env, "tasks", "--json").stdout,
               after(env, "reschedule", "hook", "--all", "--json").stdout,
               after(env, "cancel", "hook", "--json").stdout]
    for out in outputs:
        for secret in ("pw123", "SEKRET", "K3Y", "T0K"):
            assert secret not in out, (secret, out)
    shown = outputs[1]
    assert ('job        http(url="http://user:***@example.com/hook?token=***&page=2", '
            'headers={"Authorization": "***", "X-Api-Key": "***", "Accept": "text/plain"})'
            in shown.splitlines())
    assert json.loads(outputs[2])["task"]["job"]["arguments"]["headers"]["Accept"] == \
        "text/plain"
    # what is stored is what was given: only the printing masks
    assert store.get("hook")["job"]["arguments"]["headers"]["X-Api-Key"] == "K3Y"


# -- tasks ---------------------------------------------------------------------------------


def test_tasks_filters_sorts_and_pages(env, store, couch_url):
    with Client(couch_url, store.db) as client:
        for task_id, worker, at, job in [("c", "w1", "2027-01-03", "hello"),
                                         ("a", "w1", "2027-01-01", "noop"),
                                         ("b", "w2", "2027-01-02T01:00:00+02:00", "hello"),
                                         ("d", "w1", "2027-01-04", "hello")]:
            client.schedule(job, worker=worker, at=at, id=task_id)
        client.cancel("d")

    def ids(*args):
        return [d["_id"] for d in json.loads(after(env, "tasks", "--json", *args).stdout)]

    assert ids() == ["a", "b", "c", "d"]
    assert ids("--worker", "w1") == ["a", "c", "d"]
    assert ids("--status", "waiting") == ["a", "b", "c"]
    assert ids("--status", "canceled", "--status", "waiting", "--job", "hello") == \
        ["b", "c", "d"]
    assert ids("--after", "2027-01-01T23:00:00Z", "--before", "2027-01-03T00:00:01Z") == \
        ["b", "c"]
    assert ids("--limit", "2", "--page", "2") == ["c", "d"]
    assert ids("--limit", "2", "--page", "3") == []
    table = after(env, "tasks", "--worker", "w2").stdout.splitlines()
    assert table == [
        "ID  STATUS   WORKER  DATE                      JOB      REPEAT",
        "b   waiting  w2      2027-01-01T23:00:00.000Z  hello()",
    ]
    assert after(env, "tasks", "--worker", "nobody").stdout == "no tasks\n"


def test_tasks_says_when_a_page_leaves_tasks_out(env, store, couch_url):
    with Client(couch_url, store.db) as client:
        for day in range(1, 6):
            client.schedule("noop", worker="w", at=f"2027-01-0{day}", id=f"t{day}")
    first = after(env, "tasks", "--limit", "2").stdout.splitlines()
    assert [line.split()[0] for line in first[1:3]] == ["t1", "t2"]
    assert first[3:] == ["tasks 1-2 shown, there are more: --page 2 for the next"]
    second = after(env, "tasks", "--limit", "2", "--page", "2").stdout.splitlines()
    assert second[3:] == ["tasks 3-4 shown, there are more: --page 3 for the next"]
    last = after(env, "tasks", "--limit", "2", "--page", "3").stdout.splitlines()
    assert [line.split()[0] for line in last] == ["ID", "t5"]  # no line: nothing more
    exact = after(env, "tasks", "--limit", "5").stdout.splitlines()
    assert len(exact) == 6 and "more" not in exact[-1]
    # --json stays a plain list of the page's documents
    page = json.loads(after(env, "tasks", "--limit", "2", "--json").stdout)
    assert [d["_id"] for d in page] == ["t1", "t2"]


# -- cancel and reschedule -----------------------------------------------------------------


def test_cancel_and_reschedule(env, store):
    after(env, "add", "hello", "-w", "billing", "--at", "2027-01-04", "--id", "t")
    assert after(env, "cancel", "t").stdout == "t canceled\n"
    assert store.get("t")["status"] == "canceled"
    failed = after(env, "cancel", "t", code=1)
    assert failed.stderr == "after: error: task t is canceled: there is nothing to cancel\n"
    refused = after(env, "reschedule", "t", code=1)
    assert refused.stderr == \
        "after: error: task t is canceled, not error: --all reschedules it anyway\n"
    done = after(env, "reschedule", "t", "--all", "--at", "2027-02-01T08:00:00Z")
    assert done.stdout == "t rescheduled for 2027-02-01T08:00:00.000Z (waiting)\n"
    doc = store.get("t")
    assert (doc["status"], doc["date"]) == ("waiting", "2027-02-01T08:00:00.000Z")
    # a task a worker holds is asked to cancel; the worker writes canceled
    doc["status"] = "scheduled"
    doc["after"] = {"owner": "billing@h:1:x", "due": doc["date"]}
    store.put(doc)
    out = json.loads(after(env, "cancel", "t", "--json").stdout)
    assert out["status"] == "cancel"
    assert store.get("t")["status"] == "cancel"


# -- with a worker: runs, show, reschedule of a failed task ---------------------------------


@pytest.fixture
def worker(env):
    process = subprocess.Popen([sys.executable, "-m", "after", "start", "billing", "--poll",
                                "1"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for(store: Store, task_id: str, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = store.get_or_none(task_id)
        if doc is not None and doc.get("status") == status:
            return doc
        time.sleep(0.1)
    raise AssertionError(f"{task_id} is {doc and doc.get('status')}, not {status}")


def test_runs_show_and_reschedule_with_a_worker(env, store, worker):
    after(env, "add", "hello", "Ada", "-w", "billing", "--id", "ok")
    after(env, "add", "fail", "boom", "-w", "billing", "--id", "ko")
    wait_for(store, "ok", "done")
    wait_for(store, "ko", "error")
    runs = runs_of(env, "ok", 1)
    runs_of(env, "ko", 1)  # run records are written on their own thread, after the task
    assert [(r["task"], r["number"], r["outcome"], r["result"]) for r in runs] == \
        [("ok", 1, "done", "Hello, Ada!")]
    table = after(env, "runs", "ko").stdout.splitlines()
    assert table[0].split() == ["RUN", "ATTEMPT", "OUTCOME", "OCCURRENCE", "STARTED",
                                "DURATION", "RESULT/ERROR"]
    assert table[1].split()[:3] == ["1", "1", "error"]
    assert runs[0]["occurrence_date"] == store.get("ok")["date"]  # a one-off: its date
    assert table[1].endswith("RuntimeError: boom")
    shown = after(env, "show", "ko").stdout.splitlines()
    assert "status  error" in shown
    assert "error   RuntimeError: boom" in shown
    assert "runs    1 (0 done, 1 failed, 0 missed)" in shown
    assert shown[-2].split()[:3] == ["RUN", "ATTEMPT", "OUTCOME"]
    assert after(env, "reschedule", "ko").stdout.startswith("ko rescheduled for ")
    doc = wait_for(store, "ko", "error")
    assert doc["after"]["runs"] == 2
    assert len(runs_of(env, "ko", 2)) == 2
    assert len(json.loads(after(env, "runs", "ko", "-n", "1", "--json").stdout)) == 1


def runs_of(env, task_id: str, count: int, timeout: float = 15) -> list[dict]:
    """``after runs TASK --json`` once it lists ``count`` runs."""
    deadline = time.monotonic() + timeout
    while True:
        runs = json.loads(after(env, "runs", task_id, "--json").stdout)
        if len(runs) >= count or time.monotonic() > deadline:
            return runs
        time.sleep(0.1)


# -- jobs ----------------------------------------------------------------------------------


def test_jobs_lists_the_folder_and_the_built_ins(env):
    infos = json.loads(after(env, "jobs", "--json").stdout)
    by_name = {info["name"]: info for info in infos}
    assert by_name["hello"] == {"name": "hello", "source": str(ROOT / "jobs" / "hello.py"),
                                "signature": "hello(task, name='world')",
                                "doc": 'Greet someone: returns (and logs) "Hello, <name>!".',
                                "error": None}
    assert by_name["http"]["source"] == "built-in"
    lines = after(env, "jobs").stdout.splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "SIGNATURE", "DESCRIPTION"]
    hello = next(line for line in lines if line.startswith("hello "))
    assert hello.split(None, 2)[:2] == ["hello", "jobs/hello.py"]


# -- bad input: exit code and one line naming the option -----------------------------------


ADD = ("add", "hello", "-w", "billing")


BAD_INPUT = [
    (("add", "hello"), 2, "Missing option '-w' / '--worker'"),
    (("add", "hello", "-w", "a b"), 2, "Invalid value for '--worker': 'a b' is not a worker"),
    (("add", "bad-name", "-w", "x"), 2, "Invalid value for 'JOB': 'bad-name' is not a job"),
    ((*ADD, "--at", "tomorrow"), 2, "Invalid value for '--at': 'tomorrow' is not 'now'"),
    ((*ADD, "--every", "7x"), 2, "Invalid value for '--every': '7x' is not an interval"),
    ((*ADD, "--every", "P0D"), 2, "Invalid value for '--every': the interval is zero"),
    ((*ADD, "--every", "{bad"), 2, "Invalid value for '--every': '{bad' is not JSON"),
    ((*ADD, "--every", '{"days": -1}'), 2, "Invalid value for '--every': days must be"),
    ((*ADD, "--every", "1d", "--cron", "* * * * *"), 2, "'--every': give every or cron"),
    ((*ADD, "--cron", "bad"), 2, "Invalid value for '--cron': cron 'bad' must have 5"),
    ((*ADD, "--cron", "0 9 * * *", "--tz", "Mars/Base"), 2,
     "Invalid value for '--tz': unknown time zone 'Mars/Base'"),
    ((*ADD, "--tz", "UTC"), 2, "Invalid value for '--tz': applies to cron only"),
    ((*ADD, "--every", "1d", "--limit", "0"), 2, "Invalid value for '--limit': 0 is not"),
    ((*ADD, "--limit", "3"), 2, "Invalid value for '--limit': applies to a repeating task"),
    ((*ADD, "--every", "1d", "--until", "never"), 2, "Invalid value for '--until': 'never'"),
    ((*ADD, "--until", "2027-01-01"), 2, "Invalid value for '--until': applies to a"),
    ((*ADD, "--retry", "abc"), 2, "Invalid value for '--retry': 'abc' is not a number"),
    ((*ADD, "--retry", "-1"), 2, "Invalid value for '--retry': must be 0 or more attempts"),
    ((*ADD, "--retry", '{"backoff": "linear"}'), 2,
     "Invalid value for '--retry': must be 'fixed' or 'exponential'"),
    ((*ADD, "--timeout", "0"), 2, "Invalid value for '--timeout': 0.0 is not in the range"),
    ((*ADD, "--timeout", "soon"), 2, "Invalid value for '--timeout': 'soon'"),
    ((*ADD, "--max-delay", "-5"), 2, "Invalid value for '--max-delay': -5.0 is not in the"),
    ((*ADD, "--id", "_x"), 2, "Invalid value for '--id': '_x' is not a task id"),
    ((*ADD, "--kwargs", "[1]"), 2, "Invalid value for '--kwargs': '[1]' is not a JSON object"),
    ((*ADD, "--kwargs", "{"), 2, "Invalid value for '--kwargs': '{' is not JSON"),
    ((*ADD, "a", "--kwargs", "{}"), 2, "Invalid value for '--kwargs': cannot be combined"),
    ((*ADD, "--nope"), 2, "No such option '--nope'"),
    (("add", "http", "-w", "demo"), 2,
     "job 'http' cannot take these arguments, http(task, url, method='GET'"),
    (("add", "http", "-w", "demo"), 2, "missing a required argument: 'url'"),
    (("add", "hello", "a", "b", "c", "-w", "x"), 2,
     "job 'hello' cannot take these arguments, hello(task, name='world'): too many "
     "positional arguments"),
    (("add", "hello", "-w", "x", "--kwargs", '{"nme": 1}'), 2,
     "got an unexpected keyword argument 'nme'"),
    (("add", "nosuchjob", "-w", "x"), 2, "job 'nosuchjob' not found in jobs folder"),
    (("add", "nosuchjob", "-w", "x"), 2, "--no-check adds it anyway"),
    (("--url", "htp://127.0.0.1:5984", "tasks"), 2,
     "not a CouchDB URL: 'htp://127.0.0.1:5984' (expected http://host:port)"),
    (("--url", "http://127.0.0.1:99999", "tasks"), 2,
     "not a CouchDB URL: 'http://127.0.0.1:99999' (bad port)"),
    (("--url", "http://admin:x@[::1:25984", "tasks"), 2,
     "after: error: not a CouchDB URL: 'http://admin:***@[::1:25984' (Invalid IPv6 URL)\n"),
    (("show", "nope"), 4, "no task 'nope' in"),
    (("show", "nope", "-n", "-1"), 2, "Invalid value for '-n' / '--runs': -1 is not"),
    (("tasks", "--status", "nope"), 2, "Invalid value for '-s' / '--status': 'nope' is not"),
    (("tasks", "--before", "xx"), 2, "Invalid value for '--before': 'xx' is not 'now'"),
    (("tasks", "--after", "xx"), 2, "Invalid value for '--after': 'xx' is not 'now'"),
    (("tasks", "--limit", "0"), 2, "Invalid value for '--limit': 0 is not in the range"),
    (("tasks", "--page", "0"), 2, "Invalid value for '--page': 0 is not in the range"),
    (("runs", "nope"), 4, "no task 'nope' in"),
    (("runs", "x", "-n", "0"), 2, "Invalid value for '-n' / '--limit': 0 is not"),
    (("cancel", "nope"), 4, "no task 'nope' in"),
    (("cancel",), 2, "Missing argument 'ID'"),
    (("reschedule", "nope"), 4, "no task 'nope' in"),
    (("reschedule", "nope", "--at", "xx"), 2, "Invalid value for '--at': 'xx' is not"),
    (("run", "nope"), 4, "no task 'nope' in"),
    (("run",), 2, "Missing argument 'ID'"),
    (("backfill", "nope", "--from", "2026-01-01", "--to", "2026-01-02"), 4, "no task 'nope' in"),
    (("backfill", "nope", "--to", "2026-01-02"), 2, "Missing option '--from'"),
    (("backfill", "nope", "--from", "xx", "--to", "2026-01-02"), 2,
     "Invalid value for '--from': 'xx' is not"),
    (("backfill", "nope", "--from", "2026-01-02", "--to", "2026-01-01"), 2,
     "Invalid value for '--to': 2026-01-01T00:00:00.000Z is before from "
     "(2026-01-02T00:00:00.000Z)"),
    (("backfill", "nope", "--from", "2026-01-01", "--to", "2999-01-01"), 2,
     "Invalid value for '--to': 2999-01-01T00:00:00.000Z is in the future"),
    (("add", "hello", "-w", "x", "--every", "1h", "--jitter", "-1"), 2,
     "Invalid value for '--jitter': jitter must be a number of seconds from 0 to 31622400, "
     "got -1"),
    (("add", "hello", "-w", "x", "--jitter", "5"), 2,
     "Invalid value for '--jitter': applies to a repeating task only"),
    # issue 24: accepted, and the task ran once
    (("add", "hello", "-w", "x", "--every", "1m", "--at", "+1h", "--until", "+1m"), 2,
     "Invalid value for '--until': 20"),
    (("add", "hello", "-w", "x", "--every", "1m", "--at", "+1h", "--until", "+1m"), 2,
     "is before the task's date (20"),
    (("add", "hello", "-w", "x", "--at", "0000-01-01T00:00:00Z"), 2,
     "Invalid value for '--at': '0000-01-01T00:00:00Z' is not an ISO 8601 date or "
     "date-time (year 0 is out of range)"),
]


def test_bad_input_is_one_line_naming_the_option(env):
    def check(case):
        args, code, needle = case
        done = subprocess.run([sys.executable, "-m", "after", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        ok = (done.returncode == code and done.stdout == "" and needle in done.stderr
              and done.stderr.startswith("after: error: ") and done.stderr.count("\n") == 1
              and "Traceback" not in done.stderr)
        return None if ok else f"after {shlex.join(args)}: exit {done.returncode}, " \
                               f"stderr {done.stderr!r}, expected {code} and {needle!r}"

    with ThreadPoolExecutor(4) as pool:  # one process each; run a few at a time
        failures = [f for f in pool.map(check, BAD_INPUT) if f]
    assert failures == []
    assert len(BAD_INPUT) == 61


def test_unreachable_server_and_missing_database_and_jobs_folder(env):
    down = after({**env, "AFTER_COUCHDB_URL": "http://127.0.0.1:1"}, "tasks", code=3)
    assert down.stderr.startswith("after: error: cannot reach http://127.0.0.1:1")
    missing = after({**env, "AFTER_DB": "no_such_db"}, "add", "hello", "-w", "x", code=4)
    assert "the database no_such_db does not exist" in missing.stderr
    assert "after setup" in missing.stderr
    nojobs = after({**env, "AFTER_JOBS": str(ROOT / "no-such-folder")}, "jobs")
    assert [line.split()[0] for line in nojobs.stdout.splitlines()[1:3]] == ["http", "webhook"]
    assert nojobs.stdout.splitlines()[3] == (
        "note: no-such-folder: no jobs folder here: only the built-in jobs (http, "
        "webhook) can run (set AFTER_JOBS, --jobs or 'jobs' in config.json)")
    listing = after({**env, "AFTER_DB": "no_such_db"}, "tasks", code=4)  # not CouchDB's words
    assert listing.stderr.startswith("after: error: the database no_such_db does not exist at ")
    assert listing.stderr.endswith(" (run `after setup`)\n")


@pytest.mark.auth_server
def test_a_refused_name_or_password_says_so_and_where_it_comes_from(env, couch_url):
    bare, _ = split_credentials(couch_url)
    wrong = after({**env, "AFTER_COUCHDB_URL": bare.replace("://", "://admin:nope@", 1)},
                  "setup", code=1)  # its first request is a HEAD: a 401 with no body
    assert "127.0.0.1" in wrong.stderr and "refused the name or password" in wrong.stderr
    assert "nope" not in wrong.stderr
    missing = after({**env, "AFTER_COUCHDB_URL": bare}, "tasks", code=1)
    assert "asks for a name and password" in missing.stderr
    assert "AFTER_COUCHDB_URL=http://NAME:PASSWORD@host:5984" in missing.stderr


def test_after_alone_prints_its_help_and_a_closed_pipe_is_not_an_error(env, store):
    alone = after(env)
    assert alone.stdout.startswith("Usage: after [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in alone.stdout and alone.stderr == ""
    for i in range(3):
        store.put({"_id": f"t{i}", "worker": "x", "date": "2030-01-01T00:00:00Z",
                   "job": {"name": "hello", "arguments": []}, "status": "waiting"})
    read, write = os.pipe()
    os.close(read)  # `after tasks | head -0`: the reader is gone before the first line
    try:
        done = subprocess.run([sys.executable, "-m", "after", "tasks"], env=env, cwd=ROOT,
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (1, "")


def test_odd_arguments_and_ids(env, store):
    after(env, "add", "hello", "NaN", "-w", "x", "--id", "nan", "--no-check")
    after(env, "add", "hello", "1e400", "-w", "x", "--id", "big", "--no-check")
    assert store.get("nan")["job"]["arguments"] == ["NaN"]  # not JSON: the string
    assert store.get("big")["job"]["arguments"] == ["1e400"]
    deep = after(env, "add", "hello", "[" * 70 + "]" * 70, "-w", "x", "--no-check", code=2)
    assert deep.stderr.startswith("after: error: Invalid value for 'ARGS': job.arguments")
    for odd in (".", ".."):  # not the database's URL, nor the server's
        assert after(env, "add", "hello", "-w", "x", "--id", odd).stdout == f"{odd}\n"
        assert after(env, "show", odd).stdout.splitlines()[0].split() == ["task", odd]
        after(env, "cancel", odd)
        assert store.get(odd)["status"] == "canceled"
    after(env, "show", "./..", code=4)


def test_add_checks_the_job_against_the_folder_unless_told_not_to(env, store, tmp_path):
    nowhere = {**env, "AFTER_JOBS": str(tmp_path / "no-such-folder")}
    refused = after(nowhere, "add", "remote_only", "-w", "x", "--id", "r", code=2)
    assert "job 'remote_only' is not a built-in job and the jobs folder" in refused.stderr
    # the built-in jobs are known whatever the folder
    after(nowhere, "add", "http", "-w", "x", code=2)
    after(nowhere, "add", "http", "-w", "x", "--kwargs", '{"url": "https://e.com"}')
    assert store.find({"_id": "r"})[0] == []  # nothing was written when refused
    after(nowhere, "add", "remote_only", "1", "-w", "x", "--id", "r", "--no-check")
    assert store.get("r")["job"] == {"name": "remote_only", "arguments": [1]}
    after(env, "add", "hello", "a", "b", "-w", "x", "--id", "h", "--no-check")
    assert store.get("h")["job"]["arguments"] == ["a", "b"]
    # a module the folder has but that defines no such function
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "other.py").write_text("def something(task):\n    pass\n")
    folder = {**env, "AFTER_JOBS": str(tmp_path / "jobs")}
    missing = after(folder, "add", "other", "-w", "x", code=2)
    assert "defines no function 'other'" in missing.stderr


# -- the documentation's examples, run as written --------------------------------------------


def console_examples(text: str) -> list[tuple[str, str, int]]:
    """(command, expected output, exit code) of each ``$`` line of the console blocks."""
    examples: list[tuple[str, str, int]] = []
    for block in re.findall(r"\.\. code-block:: console\n\n((?:   .*\n|\n)+)", text):
        command = None
        for line in block.splitlines():
            line = line[3:]
            if line.startswith("$ "):
                command = line[2:]
                examples.append((command, "", 0))
            elif command is not None and line.startswith("[exit "):
                cmd, out, _ = examples[-1]
                examples[-1] = (cmd, out, int(line[6:-1]))
            elif command is not None and line:
                cmd, out, code = examples[-1]
                examples[-1] = (cmd, out + line + "\n", code)
    return examples


#: What the docs' reader waits for before a command (the task's run began, its record is
#: written): the examples of a running task.
WAIT_BEFORE = {
    "after cancel long-export": lambda store: store.get("long-export")["status"] == "running",
    "after runs long-export": lambda store: any(
        r.get("outcome") == "canceled"
        for r in store.find_all({"task": "long-export"}, db=f"{store.db}_runs")),
}


def test_docs_console_examples(env, store, tmp_path):
    examples = console_examples(DOCS.read_text())
    assert len(examples) >= 15
    assert {command for command, _, _ in examples} >= set(WAIT_BEFORE)
    # the docs' reader has processes of billing and reports running: their heartbeats
    expires = format_date(utcnow() + timedelta(hours=1))
    for name in ("billing", "reports"):
        store.put({"_id": f"{name}@docs-host:1:abc", "type": "worker", "name": name,
                   "host": "docs-host", "pid": 1, "last_seen": format_date(utcnow()),
                   "expires": expires}, db=f"{store.db}_workers")
    stop = threading.Event()
    threading.Thread(target=acknowledge_pauses, args=(store, stop), daemon=True).start()
    # and a real one of exports, which runs the example of a running task's cancel
    log = tmp_path / "exports.out"
    with open(log, "w") as out:
        exports = subprocess.Popen([sys.executable, "-m", "after", "start", "exports",
                                    "--poll", "1"], env=env, cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    try:
        deadline = time.monotonic() + 30
        while "worker exports ready" not in log.read_text():
            assert exports.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        for command, want, code in examples:
            argv = shlex.split(command)
            assert argv[0] == "after"
            if command in WAIT_BEFORE:
                deadline = time.monotonic() + 15
                while not WAIT_BEFORE[command](store):
                    assert time.monotonic() < deadline, f"waiting to run {command}"
                    time.sleep(0.05)
            done = subprocess.run([sys.executable, "-m", "after", *argv[1:]], env=env,
                                  cwd=ROOT, capture_output=True, text=True, timeout=60)
            got = done.stdout + done.stderr
            assert "Traceback" not in got
            assert done.returncode == code, (command, got)
            assert checker.check_output(want, got, flags), \
                f"$ {command}\nexpected:\n{want}got:\n{got}"
            if command == "after runs long-export":  # exports is no longer the reader's
                exports.terminate()
                assert exports.wait(15) == 0
    finally:
        stop.set()
        exports.kill()
        exports.wait(10)


def acknowledge_pauses(store, stop: threading.Event) -> None:
    """What the reader's processes of billing and reports do: their heartbeat says whether
    their name is paused (as a worker's does once its loop applied it)."""
    workers = f"{store.db}_workers"
    while not stop.wait(0.2):
        for name in ("billing", "reports"):
            try:
                beat = store.get(f"{name}@docs-host:1:abc", db=workers)
                paused = store.get_or_none(f"{name}@paused", db=workers) is not None
                if bool(beat.get("paused")) != paused:
                    store.put({**beat, "paused": paused, "last_seen": format_date(utcnow())},
                              db=workers)
            except StoreError:
                continue


#: The section of docs/tasks.rst whose examples need a server that runs replications.
REPLICA_SECTION = "A worker on a replica: ``after replicate``\n"


def docs_sections() -> tuple[str, str]:
    """docs/tasks.rst without its replica section, and that section (to its next title)."""
    text = DOCS.read_text()
    start = text.index(REPLICA_SECTION)
    body = start + len(REPLICA_SECTION) + len(REPLICA_SECTION)  # the title and its underline
    following = re.search(r"\n\n[^\n]+\n-{4,}\n", text[body:])
    end = body + following.start() + 2 if following else len(text)
    return text[:start] + text[end:], text[start:end]


def run_doctests(text: str, least: int) -> None:
    test = doctest.DocTestParser().get_doctest(text, {}, "tasks.rst", str(DOCS), 0)
    assert len(test.examples) >= least
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert (result.failed, result.attempted) == (0, len(test.examples))


def test_docs_job_examples_are_the_jobs_folders_and_run():
    """The job a ``.. code-block:: python`` shows (``# jobs/NAME.py: ...`` on its first
    line) is the function of that module, so the worker tests run what the page shows; run
    here too, as a job thread would, with its cancel set and not."""
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", DOCS.read_text())
    jobs = [textwrap.dedent(block) for block in blocks if block.lstrip().startswith("# jobs/")]
    assert jobs
    for source in jobs:
        path = source.split(":", 1)[0].removeprefix("# ")
        name = Path(path).stem
        shown = source.split("\n", 1)[1].strip()
        module = ast.parse((ROOT / path).read_text())
        [func] = [node for node in module.body
                  if isinstance(node, ast.FunctionDef) and node.name == name]
        func.body = [node for node in func.body  # its docstring is not shown
                     if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
        assert ast.dump(ast.parse(shown)) == ast.dump(ast.Module([func], [])), path
        namespace: dict = {}
        exec(compile(shown, f"tasks.rst ({path})", "exec"), namespace)
        task = TaskContext({"_id": "t", "worker": "w", "job": {"name": name}}, utcnow(), 1)
        assert namespace[name](task, 0.05) == 0.05
        threading.Timer(0.2, task.canceled.set).start()
        started = time.monotonic()
        assert namespace[name](task, 30) == "canceled"
        assert time.monotonic() - started < 5


def test_docs_python_examples(env, monkeypatch):
    for key in ("AFTER_COUCHDB_URL", "AFTER_DB", "AFTER_CONFIG"):
        monkeypatch.setenv(key, env[key])
    run_doctests(docs_sections()[0], 15)


def test_docs_replica_examples(env, monkeypatch, couch_url, server_kind):
    """The Client's replica examples, as written, on CouchDB (the centre: a database named
    tasks on the same server); on pouchdb-server, the refusal the section quotes."""
    for key in ("AFTER_COUCHDB_URL", "AFTER_DB", "AFTER_CONFIG"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("AFTER_CENTRAL_URL", couch_url)
    section = docs_sections()[1]
    if server_kind == "pouchdb":
        refusal = re.search(r'"\.\.\.\n(runs no replications \(.*?\): .*?)",', section, re.S)
        with Client() as site, pytest.raises(ReplicaError) as raised:
            site.replicate("shop", couch_url, central_db="tasks")
        assert str(raised.value).endswith(" ".join(refusal[1].split()))
        return
    with Store(couch_url, "tasks") as central:
        schema.setup(central)
        try:
            run_doctests(section, 8)
        finally:
            with Client() as site:
                site.stop_replication("shop")
            drop_databases(central, "tasks")
