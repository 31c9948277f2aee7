"""Many processes per worker name: exactly-once claims, crash recovery, server restarts.

Every process is started by the test and killed by pid. Figures (tasks, duplicates, recovery
delays) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import timedelta

from after.couch.store import Store
from after.process import pid_files
from after.rules.dates import format_date, parse_date, utcnow

from .conftest import (
    holding,
    partition_owner,
    recorded,
    task_doc,
    wait_for,
    wait_for_partitions,
    wait_for_peers,
)

POOL = ("--poll", "1", "--heartbeat", "0.5", "--lease", "3")

SLOW_RECORD = '''
import json, multiprocessing, os, time
from datetime import UTC, datetime


def slow_record(task, path, seconds, first=None):
    """Record the run, then take a while (``first``: so long for the first attempt)."""
    parent = multiprocessing.parent_process()  # the worker, for a run in a child process
    line = json.dumps({"id": task.id, "attempt": task.attempt,
                       "pid": parent.pid if parent else os.getpid(),
                       "child": os.getpid() if parent else None,
                       "at": datetime.now(UTC).isoformat()}) + "\\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())
    os.close(fd)
    time.sleep(first if first is not None and task.attempt == 1 else seconds)
    return "slept"
'''


def start_pool(cli, name, count, *extra, **env):
    processes = [cli.spawn("start", name, *POOL, *extra, **env) for _ in range(count)]
    wait_for(lambda: sum(f.running for f in pid_files(cli.home, name)) == count,
             what=f"{count} processes")
    wait_for(lambda: all(f"worker {name} ready" in p.read_text()
                         for p in cli.home.glob("spawn-*.out")), what="ready")
    wait_for_peers(cli, name, count)
    return processes


def test_three_processes_share_hundreds_of_tasks_exactly_once(cli, tasks, tmp_path):
    out = tmp_path / "runs.jsonl"
    start_pool(cli, "pool", 3)
    docs = [task_doc(f"t{i:03}", "pool", out, delay=1 + (i % 20) / 10) for i in range(300)]
    for start in range(0, 300, 100):
        tasks.bulk_docs(docs[start:start + 100])
    wait_for(lambda: len(recorded(out)) >= 300, timeout=60, what="300 runs")
    # Every run is recorded before its task is written done; once all are done no process
    # holds one, so no duplicate can come after this.
    wait_for(lambda: len(list(tasks.find_all({"status": "done"}))) == 300, timeout=30,
             what="300 done")
    runs = recorded(out)
    per_task = Counter(r["id"] for r in runs)
    per_process = Counter(r["pid"] for r in runs)
    duplicates = sum(n - 1 for n in per_task.values())
    print(f"\n[pool] tasks=300 runs={len(runs)} duplicates={duplicates} "
          f"per process={sorted(per_process.values())}")
    assert duplicates == 0
    assert len(per_task) == 300
    assert len(per_process) == 3 and min(per_process.values()) >= 30  # the work is shared
    done = list(tasks.find_all({"status": "done"}))
    assert len(done) == 300


def test_tasks_held_by_a_killed_process_run_on_another(cli, tasks, tmp_path):
    out = tmp_path / "runs.jsonl"
    [holder] = start_pool(cli, "crash", 1)
    due = utcnow() + timedelta(seconds=3)
    for i in range(20):
        tasks.put({**task_doc(f"h{i}", "crash", out), "date": format_date(due)})
    wait_for(lambda: holding(cli, "crash", holder.pid) >= 20, what="all held")
    owners = {partition_owner(cli, "crash", f"h{i}") for i in range(20)}
    assert len(owners) == 1 and f":{holder.pid}:" in owners.pop()
    [survivor] = [cli.spawn("start", "crash", *POOL)]
    wait_for(lambda: sum(f.running for f in pid_files(cli.home, "crash")) == 2, what="two")
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    wait_for(lambda: len(recorded(out)) >= 20, timeout=30, what="20 runs")
    wait_for(lambda: all(tasks.get(f"h{i}")["status"] == "done" for i in range(20)),
             what="20 done")  # nothing holds them: no run can follow
    runs = recorded(out)
    assert sorted(r["id"] for r in runs) == sorted(f"h{i}" for i in range(20))
    assert {r["pid"] for r in runs} == {survivor.pid}
    delays = [(parse_date(r["at"]) - due).total_seconds() for r in runs]
    print(f"\n[takeover] tasks=20 duplicates=0 recovery delay after due: "
          f"max {max(delays):.2f}s (lease 3s)")
    assert max(delays) < 3 + 1 + 3  # lease + poll + margin


def test_a_process_killed_mid_job_has_the_task_run_again(cli, tasks, tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "slow_record.py").write_text(SLOW_RECORD)
    out = tmp_path / "runs.jsonl"
    first = cli.spawn("start", "mid", *POOL, AFTER_JOBS=str(jobs))
    wait_for(lambda: any(f.running for f in pid_files(cli.home, "mid")), what="start")
    doc = task_doc("m", "mid", out)
    # the first attempt goes on until it is killed, however late (a loaded machine) the
    # second process starts; the re-run takes 2 s
    doc["job"] = {"name": "slow_record", "arguments": [str(out), 2, 60]}
    tasks.put(doc)
    wait_for(lambda: tasks.get("m")["status"] == "running", what="running")
    second = cli.spawn("start", "mid", *POOL, AFTER_JOBS=str(jobs))
    wait_for(lambda: sum(f.running for f in pid_files(cli.home, "mid")) == 2, what="two")
    killed_at = utcnow()
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    final = wait_for(lambda: (d := tasks.get("m"))["status"] == "done" and d, timeout=30,
                     what="done")
    runs = recorded(out)
    assert [(r["pid"], r["attempt"]) for r in runs] == [(first.pid, 1), (second.pid, 2)]
    # the first run was in a job thread; the re-run of an interrupted run is isolated
    assert runs[0]["child"] is None and runs[1]["child"] not in (None, second.pid)
    assert final["after"]["isolated"]
    assert final["after"]["last_run"]["outcome"] == "done"
    assert final["after"]["last_run"]["attempt"] == 2
    history = wait_for(lambda: len(h := list(tasks.find_all({"task": "m"},
                                                            db=f"{cli.db}_runs"))) == 2 and h,
                       what="two run records")
    assert sorted(r["outcome"] for r in history) == ["done", "interrupted"]
    rerun = (parse_date(runs[1]["at"]) - killed_at).total_seconds()
    print(f"\n[mid-job] re-run {rerun:.2f}s after SIGKILL (lease 3s)")


def test_workers_survive_a_server_restart_and_run_tasks_posted_after(disk_cli, disk_server,
                                                                     tmp_path):
    cli = disk_cli
    out = tmp_path / "runs.jsonl"
    worker = cli.spawn("start", "phoenix", *POOL)
    wait_for(lambda: any(f.running for f in pid_files(cli.home, "phoenix")), what="start")
    with Store(disk_server.url, cli.db) as store:
        store.put(task_doc("before", "phoenix", out))
        store.put(task_doc("across", "phoenix", out, delay=6))
        wait_for(lambda: store.get("before")["status"] == "done", what="before")
        wait_for(lambda: holding(cli, "phoenix", worker.pid) >= 1, what="across held")
    disk_server.stop()
    time.sleep(3)
    assert worker.poll() is None, "the worker died with the server"
    disk_server.start()
    with Store(disk_server.url, cli.db) as store:
        store.put(task_doc("after", "phoenix", out))
        wait_for(lambda: store.get("after")["status"] == "done", timeout=30, what="after")
        wait_for(lambda: store.get("across")["status"] == "done", timeout=30, what="across")
    assert sorted(r["id"] for r in recorded(out)) == ["across", "after", "before"]
    log = (cli.home / "phoenix.log").read_text()
    assert "changes feed lost" in log
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert os.path.exists(cli.home / "phoenix.log")


def test_a_process_stopping_leaves_its_partitions_to_the_others_while_its_runs_finish(
        cli, tasks, tmp_path):
    """A graceful stop gives the partitions up at once, not after the grace period: tasks
    due while the stopping process's last run goes on start on time elsewhere."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "slow_record.py").write_text(SLOW_RECORD)
    out = tmp_path / "runs.jsonl"
    stopping, staying = start_pool(cli, "handoff", 2, AFTER_JOBS=str(jobs))
    wait_for_partitions(cli, "handoff", 2)
    slow = task_doc("slow", "handoff", out)
    slow["job"] = {"name": "slow_record", "arguments": [str(out), 8]}
    ids = [f"s{i}" for i in range(40)]
    theirs = [i for i in ids if f":{stopping.pid}:" in (partition_owner(cli, "handoff", i)
                                                         or "")]
    # the slow run on the process that stops: a task of a partition it owns
    slow["_id"] = next(f"slow{i}" for i in range(1000) if f":{stopping.pid}:" in (
        partition_owner(cli, "handoff", f"slow{i}") or ""))
    tasks.put(slow)
    wait_for(lambda: tasks.get(slow["_id"])["status"] == "running", what="the slow run")
    stopping.send_signal(signal.SIGTERM)
    due = utcnow() + timedelta(seconds=2)
    for i in ids:
        tasks.put({**task_doc(i, "handoff", out), "date": format_date(due),
                   "job": {"name": "slow_record", "arguments": [str(out), 0]}})
    wait_for(lambda: len([r for r in recorded(out) if r["id"] in ids]) >= 40, timeout=20,
             what="40 runs")
    runs = [r for r in recorded(out) if r["id"] in ids]
    assert sorted(r["id"] for r in runs) == sorted(ids)
    assert {r["pid"] for r in runs} == {staying.pid}
    late = max((parse_date(r["at"]) - due).total_seconds() for r in runs)
    print(f"\n[handoff] {len(theirs)} of 40 tasks in the stopping process's partitions, "
          f"all run by the other at most {late:.2f}s after their date (its run: 8 s)")
    assert late < 4, late  # not after the slow run's 8 s
    assert stopping.wait(30) == 0
    final = tasks.get(slow["_id"])
    assert final["status"] == "done"
    assert [r["pid"] for r in recorded(out) if r["id"] == slow["_id"]] == [stopping.pid]
