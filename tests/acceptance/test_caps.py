"""Concurrency caps across processes: slot documents with leases (after.gates).

Figures (total time, overlap, per process) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import timedelta

from after.config import workers_db
from after.couch.caps import in_use
from after.rules.dates import format_date, parse_date, utcnow

from ..integration.test_gates import overlap
from .conftest import task_doc, wait_for, wait_records
from .test_pool import POOL, start_pool

LEASE = 3.0  # POOL's --lease


def capped(docid: str, worker: str, seconds: float, limit: int, delay: float = 0.0,
           key: str = "reports") -> dict:
    doc = task_doc(docid, worker, "unused", delay=delay,
                   concurrency={"key": key, "limit": limit})
    doc["job"] = {"name": "sleep", "arguments": [seconds]}
    return doc


def test_three_processes_never_run_more_than_the_cap(cli, tasks):
    start_pool(cli, "capped", 3)
    due = utcnow() + timedelta(seconds=2)
    docs = [{**capped(f"r{i:02}", "capped", 1, 2), "date": format_date(due)}
            for i in range(30)]
    tasks.bulk_docs(docs)
    wait_for(lambda: len(list(tasks.find_all({"status": "done"}))) == 30, timeout=90,
             what="30 done")
    runs = wait_records(cli, tasks, 30)  # written by each process's recorder thread
    assert Counter(r["outcome"] for r in runs) == {"done": 30}
    assert sorted(r["task"] for r in runs) == [f"r{i:02}" for i in range(30)]
    most = overlap(runs)
    took = (max(parse_date(r["ended"]) for r in runs) - due).total_seconds()
    late = sorted(r["lateness_ms"] / 1000 for r in runs)
    print(f"\n[caps] 30 tasks of 1 s, limit 2, 3 processes: most at once {most}, all done "
          f"{took:.1f}s after due (15 s at best), lateness {late[0]:.2f}..{late[-1]:.2f}s, "
          f"per process {sorted(Counter(r['pid'] for r in runs).values())}")
    assert most == 2  # never more than the cap, and the cap is used
    assert late[-1] >= 14 - 0.5  # the last waited for 14 runs of 1 s, counted from its date
    slots = in_use(tasks, workers_db(cli.db))
    assert sorted(s["n"] for s in slots) == [0, 1] and all(s["holder"] is None for s in slots)


def test_the_slot_of_a_killed_holder_comes_back_after_the_lease(cli, tasks):
    [holder] = start_pool(cli, "first", 1)
    tasks.put(capped("long", "first", 60, 1, key="solo"))
    wait_for(lambda: tasks.get("long")["status"] == "running", what="running")
    [slot] = in_use(tasks, workers_db(cli.db))
    assert f":{holder.pid}:" in slot["holder"] and slot["task"] == "long"
    other = cli.spawn("start", "second", *POOL)  # another worker name: caps span names
    wait_for(lambda: "worker second ready" in (cli.home / "spawn-1.out").read_text(),
             what="second ready")
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    killed = utcnow()
    tasks.put(capped("next", "second", 0, 1, key="solo"))
    time.sleep(1.5)
    waiting = tasks.get("next")
    assert waiting["status"] == "waiting"  # the dead holder's slot is not free yet
    shown = cli.run("show", "next")
    assert "waiting for a slot of solo (limit 1" in shown.stdout, shown.stdout + shown.stderr
    done = wait_for(lambda: (d := tasks.get("next"))["status"] == "done" and d, timeout=30,
                    what="next done")
    started = parse_date(done["after"]["last_run"]["started"])
    back = (started - killed).total_seconds()
    print(f"\n[caps] a killed holder's slot came back {back:.2f}s after SIGKILL (lease "
          f"{LEASE:g}s)")
    assert LEASE - 0.5 <= back <= LEASE + 5
    [slot] = wait_for(lambda: (s := in_use(tasks, workers_db(cli.db)))[0]["holder"] is None
                      and s, what="the slot freed")
    assert other.poll() is None


def test_occurrences_waiting_in_three_processes_run_in_date_order(cli, tasks):
    start_pool(cli, "ordered", 3)
    base = utcnow() + timedelta(seconds=2)
    docs = [{**capped(f"o{i}", "ordered", 0.4, 1, key="one"),
             "date": format_date(base + timedelta(seconds=0.15 * i))} for i in range(9)]
    tasks.bulk_docs(docs)
    wait_for(lambda: len(list(tasks.find_all({"status": "done"}))) == 9, timeout=60,
             what="9 done")
    runs = sorted(wait_records(cli, tasks, 9), key=lambda r: r["started"])
    order = [r["task"] for r in runs]
    print(f"\n[caps] 9 tasks of 0.4 s 0.15 s apart, limit 1, 3 processes: run in order "
          f"{' '.join(order)}, by {len({r['pid'] for r in runs})} processes")
    assert overlap(runs) == 1
    assert order == [f"o{i}" for i in range(9)]
    assert len({r["pid"] for r in runs}) > 1  # the order held across processes


def test_a_run_taken_over_from_a_killed_process_gets_its_slot_with_the_takeover(cli, tasks):
    [first] = start_pool(cli, "taken", 1)
    # a run long enough to be going still when the second process is ready and the first is
    # killed: shown running a second after it began, it must outlast a process's start
    # (with 2 s it ended first, now and then, and nothing was taken over)
    tasks.put(capped("job", "taken", 6, 1, key="single"))
    wait_for(lambda: tasks.get("job")["status"] == "running", what="running")
    second = cli.spawn("start", "taken", *POOL)
    wait_for(lambda: "worker taken ready" in (cli.home / "spawn-1.out").read_text(),
             what="second ready")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed = utcnow()
    done = wait_for(lambda: (d := tasks.get("job"))["status"] == "done" and d, timeout=30,
                    what="done")
    outcomes = sorted(r["outcome"] for r in wait_records(cli, tasks, 2, {"task": "job"}))
    rerun = (parse_date(done["after"]["last_run"]["started"]) - killed).total_seconds()
    print(f"\n[caps] a capped run taken over {rerun:.2f}s after SIGKILL (lease {LEASE:g}s): "
          "the dead holder's slot came with it")
    assert outcomes == ["done", "interrupted"]
    # the peers found the process dead: its slot is not waited for a second lease
    assert rerun < 2 * LEASE
    assert second.poll() is None


def test_three_processes_begin_no_more_runs_than_the_rate_allows(cli, tasks):
    """Issue 25, item 5: 12 tasks due at once, shared by 3 processes (``after add --rate``
    through the CLI for one of them), ``mail:3/2s``: 3 begin every 2 s, everywhere."""
    from ..integration.test_gates import most_in_any

    start_pool(cli, "rated", 3)
    due = utcnow() + timedelta(seconds=2)
    docs = [{**task_doc(f"m{i:02}", "rated", "unused", rate={"key": "mail", "limit": 3,
                                                           "per": 2}),
             "job": {"name": "noop", "arguments": []}, "date": format_date(due)}
            for i in range(11)]
    tasks.bulk_docs(docs)
    added = cli.run("add", "noop", "--worker", "rated", "--id", "m11", "--rate", "mail:3/2s",
                    "--at", format_date(due))
    assert added.returncode == 0, added.stderr
    assert tasks.get("m11")["rate"] == {"key": "mail", "limit": 3, "per": 2}
    wait_for(lambda: len(list(tasks.find_all({"status": "done"}))) == 12, timeout=60,
             what="12 done")
    runs = wait_records(cli, tasks, 12)
    assert sorted(r["task"] for r in runs) == [f"m{i:02}" for i in range(12)]
    starts = [parse_date(r["started"]) for r in runs]
    took = (max(starts) - min(starts)).total_seconds()
    print(f"\n[rate] 12 tasks, mail:3/2s, 3 processes: at most {most_in_any(starts, 2)} "
          f"began in any 2 s; the last {took:.1f}s after the first (6 s at best), per "
          f"process {sorted(Counter(r['pid'] for r in runs).values())}")
    assert most_in_any(starts, 2) == 3, sorted((r["started"], r["pid"], r["task"]) for r in runs)
    assert 6 - 0.1 <= took < 9
    shown = cli.run("show", "m11")
    assert "at most 3 begin in any 2s with key mail" in shown.stdout


def test_a_debounced_task_added_on_each_event_runs_once_in_a_pool(cli, tasks):
    """Issue 25, item 5: ``after add ... --id digest --debounce 2 --at now``, once per
    event, three events 0.5 s apart, three processes: one run, 2 s after the last."""
    start_pool(cli, "quiet", 3)
    for _ in range(3):  # an event
        last = utcnow()  # the write is after this, and the quiet window starts after the write
        added = cli.run("add", "noop", "--worker", "quiet", "--id", "digest", "--debounce",
                        "2", "--at", "now")
        assert added.returncode == 0, added.stderr
        time.sleep(0.5)
    assert tasks.get("digest")["debounce"] == 2
    done = wait_for(lambda: (d := tasks.get("digest"))["status"] == "done" and d, timeout=30,
                    what="digest done")
    time.sleep(1)  # (a second run would be recorded by now)
    runs = wait_records(cli, tasks, 1, {"task": "digest"})
    started = parse_date(done["after"]["last_run"]["started"])
    print(f"\n[debounce] 3 adds 0.5 s apart, --debounce 2, 3 processes: {len(runs)} run, "
          f"{(started - last).total_seconds():.2f}s after the last add")
    assert len(runs) == 1 and done["after"]["runs"] == 1
    assert 2 - 0.01 <= (started - last).total_seconds() < 5  # (ms rounding; the add itself)
    shown = cli.run("show", "digest")
    assert "debounce" in shown.stdout and "2s" in shown.stdout
