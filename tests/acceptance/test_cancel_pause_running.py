"""Issue 25 items 1 and 2 with the CLI and worker processes started by the test: ``after
cancel ID`` stops a job that runs (one process, and a pool of 3), and ``after pause NAME``
returned just before 60 tasks' dates lets none of them begin on a pool of 3. Figures
printed: run with ``-s`` to see them."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import timedelta

from after.rules.dates import format_date, parse_date, utcnow

from .conftest import beats, recorded, task_doc, wait_for
from .test_pool import start_pool


def wait_doc(docid: str, worker: str, seconds: float = 30, **fields) -> dict:
    """A task of the job ``wait`` (jobs/wait.py): it waits ``seconds`` or until canceled."""
    return {"_id": docid, "worker": worker, "date": format_date(utcnow()),
            "job": {"name": "wait", "arguments": [seconds]}, "status": "waiting", **fields}


def run_records(cli, tasks, docid: str) -> list[dict]:
    return [r for r in tasks.find_all({"task": docid}, db=f"{cli.db}_runs")
            if r.get("outcome") != "intended"]  # records, not intents


def test_after_cancel_stops_a_job_that_runs(cli, tasks):
    start_pool(cli, "cw", 1)
    tasks.put(wait_doc("long", "cw"))
    wait_for(lambda: tasks.get("long")["status"] == "running", what="the run to begin")
    time.sleep(0.5)  # it has run for a while
    asked = time.monotonic()
    canceled = cli.run("cancel", "long")
    assert canceled.returncode == 0, canceled.stderr
    assert canceled.stdout == ("long: cancel requested (a worker holds it and will cancel it; "
                               "its running job is told to stop)\n")
    doc = wait_for(lambda: (d := tasks.get("long"))["status"] == "canceled" and d,
                   timeout=10, what="canceled")
    took = time.monotonic() - asked
    last = doc["after"]["last_run"]
    assert took < 3  # the job saw its cancel: not the 5 s grace, nor its 30 s
    assert last["outcome"] == "canceled" and 500 <= last["duration_ms"] < 5000
    assert last["error"].startswith("canceled while running, after ")
    [run] = wait_for(lambda: run_records(cli, tasks, "long"), what="the run record")
    assert run["outcome"] == "canceled" and run["duration_ms"] == last["duration_ms"]
    listed = json.loads(cli.run("runs", "long", "--json").stdout)
    assert [r["outcome"] for r in listed] == ["canceled"]
    print(f"\n[cancel] `after cancel` of a running job: canceled {took:.2f}s after, having "
          f"run {last['duration_ms']} ms")


def test_after_cancel_stops_jobs_running_on_a_pool_of_3(cli, tasks):
    start_pool(cli, "cpool", 3)
    ids = [f"long{i}" for i in range(6)]
    tasks.bulk_docs([wait_doc(i, "cpool") for i in ids])
    wait_for(lambda: all(tasks.get(i)["status"] == "running" for i in ids), timeout=20,
             what="6 runs going")
    owners = {tasks.get(i)["after"]["owner"] for i in ids}
    for docid in ids:
        assert cli.run("cancel", docid).returncode == 0
    asked = time.monotonic()
    def all_canceled() -> list[dict] | None:
        found = [tasks.get(i) for i in ids]
        return found if all(d["status"] == "canceled" for d in found) else None

    docs = wait_for(all_canceled, timeout=15, what="6 canceled")
    took = time.monotonic() - asked
    assert took < 4
    for doc in docs:
        last = doc["after"]["last_run"]
        assert last["outcome"] == "canceled" and 0 < last["duration_ms"] < 10_000
        assert doc["after"]["runs"] == 1
    wait_for(lambda: all(run_records(cli, tasks, i) for i in ids), what="6 run records")
    time.sleep(1)  # a duplicate would be written by now
    records = [r for i in ids for r in run_records(cli, tasks, i)]
    assert Counter(r["task"] for r in records) == {i: 1 for i in ids}
    assert {r["outcome"] for r in records} == {"canceled"}
    print(f"\n[cancel] 6 jobs running on {len(owners)} of 3 processes, all canceled within "
          f"{took:.2f}s of the last `after cancel`, one run record each")


def test_a_name_paused_just_before_60_dates_starts_none_of_them_on_a_pool_of_3(cli, tasks,
                                                                              tmp_path):
    """The audit's case: 60 tasks held by 3 processes, due 10 ms apart; ``after pause``
    returns about 0.3 s before the first date (asked as long before as it took to return
    once). No job begins after it returned, and all 60 run once the name is resumed."""
    out = tmp_path / "runs.jsonl"
    start_pool(cli, "pp", 3)
    # how long `after pause` takes to return here (start, write, acknowledgements)
    calibrated = time.monotonic()
    assert cli.run("pause", "pp").returncode == 0
    takes = time.monotonic() - calibrated
    assert cli.run("resume", "pp").returncode == 0
    due = parse_date(format_date(utcnow() + timedelta(seconds=3 + takes)))
    docs = [task_doc(f"n{i:02}", "pp", out) for i in range(60)]
    for i, doc in enumerate(docs):
        doc["date"] = format_date(due + timedelta(milliseconds=10 * i))
    tasks.bulk_docs(docs)
    wait_for(lambda: sum(int(b.get("held") or 0) for b in beats(cli, "pp").values()) >= 60,
             timeout=10, what="60 held")
    # asked so that it returns about 0.3 s before the first date
    left = (due - utcnow()).total_seconds() - takes - 0.3
    time.sleep(max(0.0, left))
    paused = cli.run("pause", "pp")
    returned = utcnow()
    assert paused.returncode == 0, paused.stderr
    assert "acknowledged by its 3 live processes" in paused.stdout
    before = (due - returned).total_seconds()
    time.sleep(max(0.0, (due - utcnow()).total_seconds()) + 1.5)  # past every date
    began = [r for r in recorded(out) if parse_date(r["at"]) > returned]
    print(f"\n[pause] `after pause` returned {before:.2f}s before the first of 60 dates: "
          f"{len(recorded(out))} jobs began before it returned, {len(began)} after")
    assert began == []
    assert cli.run("resume", "pp").returncode == 0
    wait_for(lambda: len(recorded(out)) >= 60, timeout=30, what="60 runs once resumed")
    assert Counter(r["id"] for r in recorded(out)) == {d["_id"]: 1 for d in docs}
