"""Processes of one pool frozen (SIGSTOP) and killed (SIGKILL) at random while tasks fall due.

A schedule of faults is generated from a seed (printed; ``AFTER_CHAOS_SEED`` replays one):
one process at a time is frozen for 2 to 6 s (the lease is 3 s: some freezes are shorter,
some longer, some about as long) and thawed, or killed and replaced by a new one. Every
task must end ``done``. A task may run twice only when the process that ran it first was
frozen or killed moments after its job began (a run cut before its end was written is run
again: at least once); never because a process thawed and ran what another had run while
it was frozen.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import defaultdict

from after.process import pid_files

from .conftest import recorded, task_doc, wait_for, wait_for_peers
from .test_takeover import SLOW_RECORD

POOL = ("--poll", "1", "--heartbeat", "0.5", "--lease", "3")
TASKS = 200
SPREAD = 20.0  # seconds over which the tasks fall due
CUT = 5.0  # a run whose process was frozen or killed within this many seconds may run again
# A job writes its line a moment after its run was launched: a freeze that comes between the
# launch and the line is seen this long before the line (as tests.chaos.checker allows)
SLACK = 0.5


def test_random_freezes_and_kills_run_every_task_and_none_twice_but_runs_they_cut(
        cli, tasks, tmp_path):
    seed = int(os.environ.get("AFTER_CHAOS_SEED") or random.SystemRandom().randrange(10**6))
    rng = random.Random(seed)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "slow_record.py").write_text(SLOW_RECORD)
    out = tmp_path / "runs.jsonl"

    def spawn():
        process = cli.spawn("start", "cz", *POOL, AFTER_JOBS=str(jobs))
        wait_for(lambda: any(f.pid == process.pid and f.running
                             for f in pid_files(cli.home, "cz")), what="the process")
        return process

    processes = [spawn() for _ in range(3)]
    wait_for_peers(cli, "cz", 3)
    docs = []
    for i in range(TASKS):
        doc = task_doc(f"c{i:03}", "cz", out, delay=2 + SPREAD * i / TASKS)
        doc["job"] = {"name": "slow_record", "arguments": [str(out), 0]}
        docs.append(doc)
    tasks.bulk_docs(docs)

    frozen: dict[int, list[tuple[float, float]]] = defaultdict(list)  # pid: (stop, cont)
    killed: dict[int, float] = {}
    end = time.monotonic() + 2 + SPREAD
    actions = []
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.5, 2.5))
        victim = rng.choice(processes)
        if rng.random() < 0.75:
            length = rng.uniform(2.0, 6.0)
            stop = time.monotonic()
            victim.send_signal(signal.SIGSTOP)
            time.sleep(length)
            victim.send_signal(signal.SIGCONT)
            frozen[victim.pid].append((stop, time.monotonic()))
            actions.append(f"froze {victim.pid} {length:.1f}s")
        else:
            killed[victim.pid] = time.monotonic()
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            processes[processes.index(victim)] = spawn()
            actions.append(f"killed {victim.pid}")

    try:
        wait_for(lambda: len(list(tasks.find_all({"status": "done"}))) == TASKS, timeout=90,
                 what=f"{TASKS} done")
    except AssertionError:
        left = {d["_id"]: (d.get("status"), d.get("date"), d.get("after"))
                for d in tasks.find_all({"worker": "cz"}) if d.get("status") != "done"}
        raise AssertionError(f"[chaos seed {seed}] {len(left)} of {TASKS} not done 90 s "
                             f"after the faults ({'; '.join(actions)}): "
                             f"{dict(list(left.items())[:5])}") from None
    time.sleep(2)  # a thawed process that wrongly ran something would have by now
    runs = recorded(out)
    per_task = defaultdict(list)
    for run in runs:
        per_task[run["id"]].append(run)

    def cut(pid: int, began: float) -> bool:
        """Was ``pid`` frozen or killed moments after a job it began at ``began``?"""
        return (any(began - SLACK <= stop <= began + CUT for stop, _ in frozen[pid])
                or began - SLACK <= killed.get(pid, -1.0) <= began + CUT)

    unexplained, after_thaw = [], []
    for docid, its in per_task.items():
        its.sort(key=lambda r: r["mono"])
        for first, again in zip(its, its[1:]):
            if not cut(first["pid"], first["mono"]):
                unexplained.append((docid, first, again))
        for one in its:  # run by a process after it thawed, though another ran it meanwhile
            for stop, cont in frozen[one["pid"]]:
                if one["mono"] >= cont and any(stop <= r["mono"] <= cont and r is not one
                                               for r in its):
                    after_thaw.append((docid, one))
    again = sum(len(its) - 1 for its in per_task.values())
    print(f"\n[chaos seed {seed}] {TASKS} tasks, {len(runs)} runs ({again} again after a cut "
          f"run); {sum(len(f) for f in frozen.values())} freezes, {len(killed)} kills: "
          f"{'; '.join(actions)}")
    assert sorted(per_task) == sorted(d["_id"] for d in docs)
    cuts = {pid: [(round(a, 2), round(b, 2)) for a, b in spans] for pid, spans in frozen.items()}
    kills = {pid: round(at, 2) for pid, at in killed.items()}
    for docid, first, again in unexplained:  # shown with -s
        print(f"  {docid}: ran by {first['pid']} at {first['mono']:.2f} (attempt "
              f"{first['attempt']}), again by {again['pid']} at {again['mono']:.2f}")
    assert after_thaw == [], (seed, cuts, kills, after_thaw[:5])
    assert unexplained == [], (seed, cuts, kills, unexplained[:5])
