"""Run now and backfill through the CLI with a pool of 3 processes of one worker name:
each extra occurrence runs exactly once, and a process killed mid-run has it run again
with the same occurrence id (issue 16 items 7, 8, 10)."""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import timedelta

from after.process import pid_files
from after.rules import occurrence as occ
from after.rules.dates import format_date, parse_date, utcnow

from .conftest import recorded, task_doc, wait_for
from .test_pool import SLOW_RECORD, start_pool

POOL = ("--poll", "1", "--heartbeat", "0.5", "--lease", "3")


def test_run_now_and_backfill_run_exactly_once_across_three_processes(cli, tasks, tmp_path):
    out = tmp_path / "runs.jsonl"
    start_pool(cli, "pool", 3)
    parent = task_doc("minutely", "pool", out, delay=3600, repeat={"minutes": 1})
    tasks.put(parent)
    first = parse_date(parent["date"])
    start, end = first - timedelta(minutes=120), first - timedelta(minutes=61)  # the past
    # backfill asked twice at once, and three runs asked for from three commands
    asked = [cli.spawn("backfill", "minutely", "--from", format_date(start), "--to",
                       format_date(end)) for _ in range(2)]
    for _ in range(3):
        done = cli.run("run", "minutely")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("minutely: one extra run asked for (minutely:manual:")
    for process in asked:
        assert process.wait(60) == 0
    wanted = 60 + 3
    wait_for(lambda: len(recorded(out)) >= wanted, timeout=90, what=f"{wanted} runs")
    wait_for(lambda: len([d for d in tasks.prefixed("minutely:")
                          if d["status"] == "done"]) == wanted, timeout=30, what="all done")
    runs = recorded(out)
    per_task = Counter(r["id"] for r in runs)
    per_process = Counter(r["pid"] for r in runs)
    duplicates = sum(n - 1 for n in per_task.values())
    print(f"\n[extra runs] backfill 60 twice + run now x3 on 3 processes: runs={len(runs)} "
          f"duplicates={duplicates} per process={sorted(per_process.values())}")
    assert duplicates == 0 and len(runs) == wanted
    backfilled = sorted(parse_date(r["date"]) for r in runs if ":backfill:" in r["id"])
    assert backfilled == [start + timedelta(minutes=k) for k in range(60)]
    assert {r["occurrence"] for r in runs if ":backfill:" in r["id"]} == {
        occ.key("minutely", t) for t in backfilled}
    assert len({r["occurrence"] for r in runs}) == wanted
    assert len(per_process) >= 2  # the pool shares them
    assert tasks.get("minutely")["date"] == parent["date"]  # the schedule is untouched
    # once more: nothing new runs, and the command says so
    again = cli.run("backfill", "minutely", "--from", format_date(start), "--to",
                    format_date(end))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().endswith(": 0 to run, 60 asked for before (not run again)")
    def kinds():  # run records are written on their own thread, after the task
        listed = cli.run("runs", "minutely", "-n", "100", "--json")
        return Counter(r["kind"] for r in json.loads(listed.stdout))

    wait_for(lambda: kinds() == {"backfill": 60, "manual": 3}, what="63 run records")
    table = cli.run("runs", "minutely", "-n", "3").stdout.splitlines()
    assert table[0].split()[:4] == ["RUN", "ATTEMPT", "OUTCOME", "OCCURRENCE"]
    assert len(recorded(out)) == wanted


def test_a_backfill_run_killed_mid_job_runs_again_with_its_occurrence_id(cli, tasks,
                                                                         tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "slow_record.py").write_text(SLOW_RECORD.replace(
        '"attempt": task.attempt,', '"attempt": task.attempt, "occurrence": task.occurrence,'))
    out = tmp_path / "runs.jsonl"
    first = cli.spawn("start", "mid", *POOL, AFTER_JOBS=str(jobs))
    wait_for(lambda: any(f.running for f in pid_files(cli.home, "mid")), what="start")
    parent = task_doc("daily", "mid", out, delay=86400, repeat={"days": 1})
    # long enough that the run is still going when the second process is up
    parent["job"] = {"name": "slow_record", "arguments": [str(out), 8]}
    tasks.put(parent)
    day = parse_date(parent["date"]) - timedelta(days=1)
    done = cli.run("backfill", "daily", "--from", format_date(day), "--to", format_date(day),
                   AFTER_JOBS=str(jobs))
    assert done.returncode == 0, done.stderr
    extra = f"daily:backfill:{format_date(day)}"
    wait_for(lambda: tasks.get(extra)["status"] == "running", what="running")
    second = cli.spawn("start", "mid", *POOL, AFTER_JOBS=str(jobs))
    wait_for(lambda: sum(f.running for f in pid_files(cli.home, "mid")) == 2, what="two")
    assert tasks.get(extra)["status"] == "running"  # the first process is on it
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    wait_for(lambda: tasks.get(extra)["status"] == "done", timeout=40, what="done")
    runs = recorded(out)
    assert [(r["pid"], r["attempt"]) for r in runs] == [(first.pid, 1), (second.pid, 2)]
    assert {r["occurrence"] for r in runs} == {occ.key("daily", day)}  # at least once, one id
    records = wait_for(lambda: len(h := list(tasks.find_all(
        {"parent": "daily"}, db=f"{cli.db}_runs"))) == 2 and h, what="two run records")
    assert sorted(r["outcome"] for r in records) == ["done", "interrupted"]
    assert {r["occurrence"] for r in records} == {occ.key("daily", day)}
    assert utcnow() < parse_date(tasks.get("daily")["date"])  # its schedule untouched


def test_a_backfill_to_now_of_a_paused_name_runs_the_tasks_overdue_date_once(cli, tasks,
                                                                             tmp_path):
    """Issue 24 item 6, as found: a task every minute dated 10 minutes ago, its worker
    name paused, `after backfill minutely --from START --to now`, resumed: its overdue date
    ran twice (as the task and as a backfill copy, with one occurrence id). The task's own
    is the one its catch-up runs (issue 25: the latest due, the series' last here, so that
    it stays the latest however long the test takes)."""
    out = tmp_path / "runs.jsonl"
    assert cli.run("pause", "pool").returncode == 0
    start_pool(cli, "pool", 2)
    first = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=10)
    last = first + timedelta(minutes=10)
    tasks.put(task_doc("minutely", "pool", out, date=format_date(first),
                       repeat={"minutes": 1, "until": format_date(last)}))
    done = cli.run("backfill", "minutely", "--from", format_date(first), "--to", "now")
    assert done.returncode == 0, done.stderr
    assert cli.run("resume", "pool").returncode == 0
    wait_for(lambda: tasks.get("minutely")["status"] == "done", timeout=60,
             what="the task's own run")
    asked = [d["_id"] for d in tasks.prefixed("minutely:backfill:")]
    wait_for(lambda: all(tasks.get(i)["status"] == "done" for i in asked), timeout=60,
             what="the backfill's runs")
    runs = [r for r in recorded(out) if parse_date(r["date"]) <= first + timedelta(minutes=10)]
    twice = [k for k, n in Counter(r["occurrence"] for r in runs).items() if n > 1]
    assert twice == []
    assert sorted(parse_date(r["date"]) for r in runs) == [
        first + timedelta(minutes=k) for k in range(11)]
    assert done.stdout.strip().endswith(
        f", {format_date(last)} left to the task (it runs that one itself)")
