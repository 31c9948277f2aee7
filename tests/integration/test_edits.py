"""Edits to a task that is held or running take effect: never a second run alongside the
first, never a task stranded (docs/reference.rst, "Editing a task that is held or running")."""

from __future__ import annotations

import time
from datetime import timedelta

from after.rules.dates import format_date, parse_date, utcnow


def test_a_held_task_moved_to_another_name_runs_there(harness, store):
    w = harness.start("w")
    v = harness.start("v")
    harness.put("moved", delay=4)
    harness.wait(lambda: "moved" in w.held, what="the task to be held by w")
    doc = store.get("moved")
    store.put({**doc, "worker": "v"})
    harness.wait(lambda: "moved" in v.held and "moved" not in w.held, what="held by v only")
    done = harness.wait_status("moved", "done", timeout=20)
    assert done["after"]["last_run"]["outcome"] == "done"
    assert [r["id"] for r in harness.recorded()] == ["moved"]
    assert harness.wait_runs("moved")[0]["worker"] == "v"


def test_waiting_written_on_a_running_task_runs_it_again_after_never_alongside(harness, store):
    harness.start("w")
    harness.put("again", job="sleep", arguments=[1.5])
    doc = harness.wait_status("again", "running")
    store.put({**doc, "status": "waiting"})
    harness.wait(lambda: len(harness.runs("again")) == 2, timeout=20, what="two runs")
    runs = sorted(harness.runs("again"), key=lambda r: r["number"])
    assert [r["outcome"] for r in runs] == ["done", "done"]
    assert parse_date(runs[1]["started"]) >= parse_date(runs[0]["ended"])  # one after the other
    assert store.get("again")["status"] == "done"


def test_a_new_date_on_a_held_task_runs_at_the_new_date(harness, store):
    worker = harness.start("w")
    harness.put("later", delay=2)
    harness.wait(lambda: "later" in worker.held, what="the task to be held")
    doc = store.get("later")
    new_date = parse_date(format_date(utcnow() + timedelta(seconds=5)))  # as written
    store.put({**doc, "date": format_date(new_date)})
    time.sleep(3.5)  # past the old date: it must not have run
    assert harness.recorded() == []
    done = harness.wait_status("later", "done", timeout=15)
    started = parse_date(done["after"]["last_run"]["started"])
    assert 0 <= (started - new_date).total_seconds() < 0.5


def test_a_new_date_on_a_running_task_applies_after_the_run(harness, store):
    harness.start("w")
    harness.put("moving", job="sleep", arguments=[1.5])
    doc = harness.wait_status("moving", "running")
    new_date = parse_date(format_date(utcnow() + timedelta(seconds=4)))  # as written
    store.put({**doc, "date": format_date(new_date)})
    harness.wait(lambda: len(harness.runs("moving")) == 2, timeout=20, what="two runs")
    runs = sorted(harness.runs("moving"), key=lambda r: r["number"])
    assert 0 <= (parse_date(runs[1]["started"]) - new_date).total_seconds() < 0.5


def test_hung_jobs_hold_their_threads_and_nothing_is_marked_running_without_one(harness,
                                                                                 store):
    """Issue 13, item 5: --pool 2, two hung jobs (past their timeout, their threads still
    busy): later tasks wait, nothing written (not shown running), until a thread is free,
    then run; a timeout counts from the start of the run."""
    harness.start("w", pool=2)
    for i in range(2):
        harness.put(f"hung{i}", job="sleep", arguments=[6], timeout=1)
    harness.wait(lambda: all(store.get(f"hung{i}")["status"] == "error" for i in range(2)),
                 what="both timed out")
    for i in range(3):
        harness.put(f"later{i}", job="sleep", arguments=[0], delay=0.5, timeout=1)
    time.sleep(2)
    assert [store.get(f"later{i}")["status"] for i in range(3)] == ["waiting"] * 3
    for i in range(3):
        harness.wait_status(f"later{i}", "done", timeout=15)
    for i in range(3):
        [run] = harness.wait_runs(f"later{i}")
        assert run["outcome"] == "done" and run["duration_ms"] < 1000
    hung = [harness.wait_runs(f"hung{i}")[0] for i in range(2)]
    assert [r["outcome"] for r in hung] == ["timeout", "timeout"]
    assert all(900 <= r["duration_ms"] < 2000 for r in hung)
