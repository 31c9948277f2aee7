"""Takeover with the default lease and heartbeat, and a pool member whose clock is wrong.

Processes are killed (SIGKILL) or frozen (SIGSTOP) by pid; the skewed member runs under
libfaketime (``faketime``, installed by ``make install``). Figures are printed: run with ``-s``.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import time
from collections import Counter
from datetime import timedelta

import pytest

from after.process import pid_files
from after.rules.dates import format_date, parse_date, utcnow
from after.rules.task import CANCEL_GRACE

from .conftest import holding, recorded, task_doc, wait_for

SLOW_RECORD = '''
import json, multiprocessing, os, time
from datetime import UTC, datetime


def slow_record(task, path, seconds):
    """Record the run (wall and monotonic clocks: the monotonic one is never faked), then
    take a while."""
    parent = multiprocessing.parent_process()  # the worker, for a run in a child process
    line = json.dumps({"id": task.id, "attempt": task.attempt,
                       "pid": parent.pid if parent else os.getpid(),
                       "child": os.getpid() if parent else None,
                       "at": datetime.now(UTC).isoformat(), "mono": time.monotonic()}) + "\\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())
    os.close(fd)
    time.sleep(seconds)
    return "slept"
'''


@pytest.fixture
def jobs(tmp_path):
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "slow_record.py").write_text(SLOW_RECORD)
    return folder


def slow(docid, worker, out, seconds, delay):
    doc = task_doc(docid, worker, out, delay=delay)
    doc["job"] = {"name": "slow_record", "arguments": [str(out), seconds]}
    return doc


def ready(cli, process, name):
    wait_for(lambda: any(f.pid == process.pid and f.running for f in pid_files(cli.home, name)),
             what="the process")
    out = cli.home / f"spawn-{cli.spawned.index(process)}.out"
    wait_for(lambda: f"worker {name} ready" in out.read_text(), what="ready")
    return out


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_with_defaults_a_dead_or_frozen_holders_tasks_run_within_10s(cli, tasks, tmp_path,
                                                                      jobs, how):
    """Default --lease and --heartbeat, and --poll 30: takeover must not wait for a poll."""
    out = tmp_path / "runs.jsonl"
    holder = cli.spawn("start", "tk", "--poll", "30", AFTER_JOBS=str(jobs))
    ready(cli, holder, "tk")
    tasks.put(slow("long", "tk", out, 120, 0))  # running on the holder when it dies
    wait_for(lambda: tasks.get("long")["status"] == "running", what="running")
    for i in range(10):  # held by the holder, due 3 s after it dies
        tasks.put(slow(f"h{i}", "tk", out, 0, 6 + i / 10))
    for i in range(5):  # due well after: taken over first, then on time
        tasks.put(slow(f"later{i}", "tk", out, 0, 20 + i / 10))
    wait_for(lambda: holding(cli, "tk", holder.pid) >= 16, what="all held")
    survivor = cli.spawn("start", "tk", "--poll", "30", AFTER_JOBS=str(jobs))
    ready(cli, survivor, "tk")
    time.sleep(1.5)
    killed_at = utcnow()
    holder.send_signal(getattr(signal, how))
    wait_for(lambda: len(recorded(out)) >= 17, timeout=40, what="16 runs and the re-run")
    time.sleep(1)
    runs = recorded(out)
    dates = {d["_id"]: parse_date(d["date"]) for d in tasks.find_all({"worker": "tk"})}
    after_kill = [r for r in runs if r["pid"] == survivor.pid]
    assert sorted(r["id"] for r in after_kill) == sorted(
        ["long"] + [f"h{i}" for i in range(10)] + [f"later{i}" for i in range(5)])
    late = {r["id"]: (parse_date(r["at"]) - max(dates.get(r["id"], killed_at), killed_at))
            .total_seconds() for r in after_kill if r["id"] != "long"}
    long_rerun = [r for r in after_kill if r["id"] == "long"][0]
    late["long"] = (parse_date(long_rerun["at"]) - killed_at).total_seconds()
    held = max(v for k, v in late.items() if k.startswith("h") or k == "long")
    print(f"\n[takeover {how}, defaults, --poll 30] re-run of the running task "
          f"{late['long']:.2f}s after the {how}; held tasks at most {held:.2f}s after "
          f"max(date, {how}); later tasks at most "
          f"{max(v for k, v in late.items() if k.startswith('later')):.3f}s late")
    assert held <= 10.0
    assert max(v for k, v in late.items() if k.startswith("later")) < 1.0
    assert Counter(r["id"] for r in runs)["long"] == 2  # once on each, never more
    if how == "SIGSTOP":
        holder.send_signal(signal.SIGKILL)


def faketime_env(offset: str) -> dict:
    """libfaketime preloaded into the worker itself (the ``faketime`` command would fork, and
    the pid files would not be the pid the test started)."""
    assert shutil.which("faketime"), \
        "faketime is missing: run `make install` (scripts/install-faketime.sh)"
    libs = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
                  + glob.glob("/usr/lib*/faketime/libfaketimeMT.so.1"))
    assert libs, "libfaketimeMT.so.1 is missing: run `make install`"
    return {"LD_PRELOAD": libs[0], "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_NO_CACHE": "1"}


def test_a_member_with_a_clock_5s_ahead_never_runs_early_nor_takes_over(cli, tasks, tmp_path,
                                                                         jobs):
    out = tmp_path / "runs.jsonl"
    options = ("--poll", "1", "--lease", "5", "--heartbeat", "1")
    healthy = cli.spawn("start", "sk", *options, AFTER_JOBS=str(jobs))
    ahead = cli.spawn("start", "sk", *options, AFTER_JOBS=str(jobs), **faketime_env("+5"))
    logs = [ready(cli, healthy, "sk"), ready(cli, ahead, "sk")]
    time.sleep(2.5)  # each has read the other's heartbeat, and sampled the server's clock
    listing = json.loads(cli.run("list", "--json").stdout)
    offsets = {e["pid"]: e["clock_offset"] for e in listing if e["name"] == "sk"}
    # A Date header counts whole seconds and may lag its server's clock by up to one more
    # (after/couch/clock.py): the estimate of a clock 5 s ahead is in [5, 7), never under 5
    assert abs(offsets[healthy.pid]) <= 1.5 and 4.9 < offsets[ahead.pid] < 7.0, offsets
    flags = {e["pid"]: e["clock_off"] for e in listing if e["name"] == "sk"}
    assert flags == {healthy.pid: False, ahead.pid: True}
    warnings = [line for line in cli.run("list").stdout.splitlines()
                if line.startswith("warning:")]  # for the member ahead only
    assert len(warnings) == 1 and f"(pid {ahead.pid}) is +" in warnings[0], warnings
    shown = float(re.search(r"is \+([0-9.]+) s off", warnings[0]).group(1))
    assert 4.9 < shown < 7.0, warnings  # the estimate of the listing, read again
    # the test's wall clock against the monotonic one, which every process shares
    base_wall, base_mono = utcnow(), time.monotonic()
    count = 40
    dates = {}
    for i in range(count):  # due 2-12 s from now; each runs 3 s, so runs overlap
        doc = slow(f"s{i:02}", "sk", out, 3, 2 + i / 4)
        dates[doc["_id"]] = parse_date(doc["date"])
        tasks.put(doc)
    wait_for(lambda: len(recorded(out)) >= count, timeout=40, what=f"{count} runs")
    time.sleep(4)  # a duplicate would show up now
    runs = recorded(out)
    early = {r["id"]: round((dates[r["id"]] - base_wall).total_seconds()
                            - (r["mono"] - base_mono), 3) for r in runs}
    by_pid = Counter(r["pid"] for r in runs)
    worst = max(early.values())
    print(f"\n[skew +5s] runs={len(runs)} per process {dict(by_pid)}; earliest start "
          f"{worst:+.3f}s before its date (negative: late); offsets seen {offsets}")
    assert Counter(r["id"] for r in runs).most_common(1)[0][1] == 1  # none twice
    assert len(runs) == count
    assert worst < 0.05  # never early (50 ms: the test's own clock readings)
    assert by_pid[ahead.pid] > 0 and by_pid[healthy.pid] > 0
    for log in logs:
        text = log.read_text()
        assert "stopped heartbeating" not in text and "interrupted" not in text, text[-2000:]
    assert "off the database server's" in logs[1].read_text()
    assert os.path.exists(out)


def test_a_frozen_process_loses_its_tasks_and_carries_on_when_it_thaws(cli, tasks, tmp_path,
                                                                       jobs):
    """SIGSTOP longer than the lease, then SIGCONT: its held tasks ran elsewhere, once.

    It is frozen while it holds its 10 tasks, before their date: the other process takes
    its partitions once it is found dead, and runs them; on thaw it knows its lease may have
    lapsed, lets go of everything and holds off for a lease, and runs nothing."""
    out = tmp_path / "runs.jsonl"
    options = ("--poll", "30")
    frozen = cli.spawn("start", "fz", *options, AFTER_JOBS=str(jobs))
    log = ready(cli, frozen, "fz")
    due = utcnow() + timedelta(seconds=6)
    for i in range(10):
        tasks.put({**slow(f"f{i}", "fz", out, 0, 0), "date": format_date(due)})
    wait_for(lambda: holding(cli, "fz", frozen.pid) >= 10, what="all held")
    other = cli.spawn("start", "fz", *options, AFTER_JOBS=str(jobs))
    ready(cli, other, "fz")
    frozen.send_signal(signal.SIGSTOP)
    assert recorded(out) == [] and utcnow() < due  # frozen before any job began
    wait_for(lambda: len(recorded(out)) >= 10, timeout=30, what="10 runs")
    frozen.send_signal(signal.SIGCONT)
    time.sleep(4)  # it thaws: its timer fires, it reads each task back, nothing runs twice
    runs = recorded(out)
    assert sorted(r["id"] for r in runs) == [f"f{i}" for i in range(10)]
    assert {r["pid"] for r in runs} == {other.pid}
    assert frozen.poll() is None  # still running, and part of the pool again
    assert "lease may have lapsed" in log.read_text()  # it knew, and held off


EXITS = '''
import os


def exits(task):
    """End the process that runs it, as a crash in C code would."""
    os._exit(1)
'''


def test_a_job_that_ends_its_process_takes_down_one_process_of_three(cli, tasks, tmp_path,
                                                                    jobs):
    """Issue 13.4: a thread-isolated job calling os._exit(1) ends the process running it;
    another process of the name takes the run over once the lease is out and runs it again
    in a child process, whose death fails the run: one process down, not one after another."""
    (jobs / "exits.py").write_text(EXITS)
    processes = [cli.spawn("start", "ex", "--poll", "30", "--heartbeat", "0.5", "--lease", "3",
                           AFTER_JOBS=str(jobs)) for _ in range(3)]
    for process in processes:
        ready(cli, process, "ex")
    time.sleep(1.5)
    doc = task_doc("boom", "ex", tmp_path / "unused")
    doc["job"] = {"name": "exits", "arguments": []}
    assert "isolation" not in doc  # threads, the default
    tasks.put(doc)
    final = wait_for(lambda: (d := tasks.get("boom"))["status"] == "error" and d, timeout=40,
                     what="the task ends error")
    time.sleep(5)  # more than a lease: a second victim would be dead now
    dead = [p for p in processes if p.poll() is not None]
    print(f"\n[os._exit] processes ended by the job: {len(dead)} of 3; "
          f"error: {final['after']['error']}")
    assert len(dead) == 1
    assert final["after"]["error"] == "the job ended its process (exit code 1)"
    assert final["after"]["isolated"]  # any later run of it goes to a child process too

    def history():
        return sorted(tasks.find_all({"task": "boom"}, db=f"{cli.db}_runs"),
                      key=lambda r: (r["number"], r["attempt"]))

    deadline = time.monotonic() + 30
    # (the task is written before its run's record goes over its intent: wait for records)
    while ((len(records := history()) < 2 or any(r["outcome"] == "intended" for r in records))
           and time.monotonic() < deadline):
        time.sleep(0.1)
    told = [(cli.home / f"spawn-{cli.spawned.index(p)}.out").read_text()[-3000:]
            for p in processes]  # what each process said, shown when anything is amiss
    assert [r["outcome"] for r in records] == ["interrupted", "error"], (records, told)
    assert f":{dead[0].pid}:" in records[0]["process"]


def test_a_run_taken_over_while_its_process_was_frozen_stops_when_it_thaws(cli, tasks,
                                                                          tmp_path, jobs):
    """Issue 24, item 8: the holder of a capped (limit 1), isolated 20 s run is SIGSTOPped
    past its lease; the other process takes the run over (recorded ``interrupted``) and runs
    it again, taking the cap's slot. On thaw, the takeover reaches the holder on its feed:
    its job is stopped as a canceled one is (told, then its process killed after the grace),
    not left to run beside the second run for its remaining 13 s. Its run is recorded
    ``interrupted`` by its own process too, beside the other's record (``late``: when it
    really ended)."""
    out = tmp_path / "runs.jsonl"
    options = ("--poll", "30", "--heartbeat", "0.5", "--lease", "3")
    processes = [cli.spawn("start", "fc", *options, AFTER_JOBS=str(jobs)) for _ in range(2)]
    for process in processes:
        ready(cli, process, "fc")
    wait_for(lambda: all(holding(cli, "fc", p.pid) is not None for p in processes),
             what="both beating")
    time.sleep(2)  # both know each other: the partitions are shared
    tasks.put({**slow("long", "fc", out, 20, 1), "isolation": "process",
               "concurrency": {"key": "fc-cap", "limit": 1}})
    [first] = wait_for(lambda: recorded(out), timeout=20, what="the run")
    holder = next(p for p in processes if p.pid == first["pid"])
    time.sleep(1)
    holder.send_signal(signal.SIGSTOP)
    try:
        runs = wait_for(lambda: len(r := recorded(out)) >= 2 and r, timeout=30,
                        what="the run taken over and run again")
    finally:
        holder.send_signal(signal.SIGCONT)
    thawed = utcnow()
    assert runs[1]["pid"] != holder.pid and runs[1]["attempt"] == 2

    def records():
        return {r["_id"]: r for r in tasks.find_all({"task": "long"}, db=f"{cli.db}_runs")}

    late = wait_for(lambda: [r for i, r in records().items() if i.endswith("~late")],
                    timeout=15, what="the first run's own record")
    ended = parse_date(late[0]["ended"])
    print(f"\n[frozen cap holder] first run stopped {(ended - thawed).total_seconds():.2f}s "
          "after the thaw (its job had 13 s left)")
    assert late[0]["outcome"] == "interrupted"
    assert "taken over by another process" in late[0]["error"]["message"]
    # told (SIGTERM, task.canceled), then killed after the grace: not its 13 s left
    assert (ended - thawed).total_seconds() < CANCEL_GRACE + 2
    outcomes = sorted(r["outcome"] for i, r in records().items() if not i.endswith("~late"))
    assert outcomes == ["intended", "interrupted"]  # (the second run: going)
    log = (cli.home / f"spawn-{cli.spawned.index(holder)}.out").read_text()
    assert "was taken over by" in log
    doc = tasks.get("long")
    assert doc["status"] == "running" and doc["after"]["owner"] != late[0]["process"]
