"""A pool of 3 processes of one worker name, started by the test with the CLI: ``after pause
NAME`` stops all three starting anything (what they held is let go), ``after resume NAME``
starts them again, and an ``overlap: skip`` series runs each occurrence it does not skip
exactly once across the three. Figures printed: run with ``-s`` to see them."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from datetime import timedelta

from after.config import workers_db
from after.couch import registry as peers
from after.rules.dates import format_date, parse_date, utcnow

from .conftest import beats, recorded, task_doc, wait_for
from .test_pool import start_pool


def held_count(cli) -> int:
    return sum(int(b.get("held") or 0) for b in beats(cli, "paws").values())


def test_a_paused_name_starts_nothing_on_any_of_3_processes_until_resumed(cli, tasks, tmp_path):
    out = tmp_path / "runs.jsonl"
    start_pool(cli, "paws", 3)
    held = [task_doc(f"h{i}", "paws", out, delay=5) for i in range(12)]
    tasks.bulk_docs(held)
    wait_for(lambda: held_count(cli) >= 12, what="all held")
    paused = cli.run("pause", "paws")
    paused_at = utcnow()
    assert paused.returncode == 0 and "paws paused" in paused.stdout, paused.stderr
    # it returned once every process acknowledged the pause: nothing is held any more
    assert "acknowledged by its 3 live processes" in paused.stdout
    assert [d.get("paused") for d in peers.registry(tasks, workers_db(cli.db), "paws")] \
        == [True] * 3
    assert held_count(cli) == 0
    handed_back = (utcnow() - paused_at).total_seconds()
    listing = cli.run("list")
    assert "paws is paused" in listing.stdout
    assert json.loads(cli.run("list", "--json").stdout)[-1]["state"] == "paused"
    fresh = [task_doc(f"n{i}", "paws", out) for i in range(12)]
    tasks.bulk_docs(fresh)
    time.sleep(2)  # due now, and after the held ones' date has come near: none may run
    deadline = max(parse_date(d["date"]) for d in held) + timedelta(seconds=0.5)
    while utcnow() < deadline:
        time.sleep(0.1)
    assert recorded(out) == []
    assert {tasks.get(d["_id"])["status"] for d in held + fresh} == {"waiting"}

    resumed_at = utcnow()
    resumed = cli.run("resume", "paws")
    assert resumed.returncode == 0 and "paws resumed" in resumed.stdout
    wait_for(lambda: len(recorded(out)) >= 24, timeout=30, what="24 runs")
    wait_for(lambda: all(tasks.get(d["_id"])["status"] == "done" for d in held + fresh),
             what="24 done")
    runs = recorded(out)
    per_task = Counter(r["id"] for r in runs)
    per_process = Counter(r["pid"] for r in runs)
    after = max((parse_date(r["at"]) - resumed_at).total_seconds() for r in runs)
    print(f"\n[pause] 12 held tasks let go {handed_back:.2f}s after `after pause` "
          f"returned; 24 tasks held back while paused, all run within {after:.2f}s of the "
          f"resume; per process {sorted(per_process.values())}")
    assert set(per_task.values()) == {1} and len(per_task) == 24
    assert len(per_process) >= 2  # all resumed, not one alone
    assert json.loads(cli.run("list", "--json").stdout)[-1]["state"] != "paused"


def test_overlap_skip_runs_each_occurrence_it_does_not_skip_once_across_3_processes(
        cli, tasks, tmp_path):
    out = tmp_path / "runs.jsonl"
    start_pool(cli, "laps", 3)
    first = parse_date(format_date(utcnow() + timedelta(seconds=3)))
    docs = []
    for i in range(3):
        doc = task_doc(f"s{i}", "laps", out, repeat={"seconds": 1, "limit": 4},
                       overlap="skip")
        doc["date"] = format_date(first)
        doc["job"] = {"name": "record_slowly", "arguments": [str(out), 1.5]}
        docs.append(doc)
    tasks.bulk_docs(docs)
    wait_for(lambda: all(tasks.get(d["_id"])["status"] == "done" for d in docs), timeout=40,
             what="3 series done")
    runs_db = f"{cli.db}_runs"
    records = wait_for(lambda: len(r := list(tasks.find_all({"type": "run"}, db=runs_db)))
                       >= 21 and r, what="21 run records")
    ran = recorded(out)
    for doc in docs:
        mine = sorted((parse_date(r["scheduled"]), r["outcome"]) for r in records
                      if r["task"] == doc["_id"])
        occurrences = [when for when, _ in mine]
        assert len(occurrences) == len(set(occurrences)) == 7, mine  # each once
        assert occurrences == [first + timedelta(seconds=k) for k in range(7)]
        assert [o for _, o in mine] == ["done", "skipped"] * 3 + ["done"], mine
        dates = sorted(parse_date(r["date"]) for r in ran if r["id"] == doc["_id"])
        assert dates == [first + timedelta(seconds=k) for k in (0, 2, 4, 6)]
    pids = Counter(r["pid"] for r in ran)
    print(f"\n[overlap] 3 series of 4 runs and 3 skips each, 12 runs: per process "
          f"{sorted(pids.values())}")
    assert sum(pids.values()) == 12


def test_overlap_allow_runs_each_occurrence_once_alongside_across_3_processes(cli, tasks,
                                                                              tmp_path):
    out = tmp_path / "runs.jsonl"
    start_pool(cli, "wide", 3)
    first = parse_date(format_date(utcnow() + timedelta(seconds=3)))
    docs = []
    for i in range(2):
        doc = task_doc(f"a{i}", "wide", out, repeat={"seconds": 1, "limit": 5},
                       overlap="allow")
        doc["date"] = format_date(first)
        doc["job"] = {"name": "record_slowly", "arguments": [str(out), 2.5]}
        docs.append(doc)
    tasks.bulk_docs(docs)
    wait_for(lambda: all(tasks.get(d["_id"])["status"] == "done" for d in docs), timeout=40,
             what="2 series done")
    wait_for(lambda: all("going" not in tasks.get(d["_id"])["after"] for d in docs),
             timeout=20, what="every run ended")
    ran = recorded(out)
    for doc in docs:
        dates = sorted(parse_date(r["date"]) for r in ran if r["id"] == doc["_id"])
        assert dates == [first + timedelta(seconds=k) for k in range(5)]  # each once
        final = tasks.get(doc["_id"])["after"]
        assert final["runs"] == 5 and final["successes"] == 5
    starts = sorted(parse_date(r["at"]) for r in ran if r["id"] == "a0")
    assert starts[2] - starts[0] < timedelta(seconds=2.5)  # side by side, not one by one
    pids = Counter(r["pid"] for r in ran)
    print(f"\n[allow] 2 series of 5 runs of 2.5 s every second, 10 runs each once: per "
          f"process {sorted(pids.values())}")


def test_a_pause_a_frozen_process_cannot_acknowledge_is_named_and_exits_1(cli, tasks):
    frozen, awake = start_pool(cli, "numb", 2)
    frozen.send_signal(signal.SIGSTOP)
    try:
        paused = cli.run("pause", "numb", "--wait", "1.5")
    finally:
        frozen.send_signal(signal.SIGCONT)
    assert paused.returncode == 1 and "numb paused" in paused.stdout
    assert f":{frozen.pid}:" in paused.stderr and f":{awake.pid}:" not in paused.stderr
    assert paused.stderr.startswith("after: error: not acknowledged within 1.5 s by ")
    assert len(paused.stderr.strip().splitlines()) == 1
    # thawed, it reads the pause: a second pause is acknowledged by both
    again = cli.run("pause", "numb")
    assert again.returncode == 0 and "acknowledged by its 2 live processes" in again.stdout
