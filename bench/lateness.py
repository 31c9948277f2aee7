"""Lateness: a run's actual start (``after.last_run.started``) minus the task's ``date``.

Each worker is a fresh ``after start`` process, not warmed up by earlier runs. The burst is
also run on APScheduler 3 in the same run (a process of its own, :mod:`bench.apsched`), and
after's p99 is given as a ratio of APScheduler's."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

from .harness import (
    ROOT,
    Bench,
    Measurement,
    all_docs,
    bulk_insert,
    in_seconds,
    lateness_ms,
    percentile,
    task_doc,
    wait_done,
    wait_until,
)

GOAL_BURST_P99 = 50.0
GOAL_SINGLE_P99 = 10.0
GOAL_APS_RATIO = 0.25
BURST = 500
AHEAD = 3.0  # seconds from the insert to the burst's instant


def summarise(m: Measurement, label: str, values: list[float], goal: float | None,
              detail: str) -> float:
    m.add(f"{label}: p50", percentile(values, 50), "ms", detail=detail)
    p99 = percentile(values, 99)
    if goal is None:
        m.add(f"{label}: p99", p99, "ms")
    else:
        m.add(f"{label}: p99", p99, "ms", goal=f"<= {goal:g}", met=p99 <= goal)
    m.add(f"{label}: max", max(values), "ms")
    return p99


def burst(bench: Bench, total: int) -> list[float]:
    """``total`` tasks due at the same instant ``AHEAD`` seconds after they are inserted,
    into a worker just started."""
    store = bench.database("burst")
    try:
        worker = bench.worker(store, "burst")
        worker.wait_ready()
        due = in_seconds(AHEAD)
        bulk_insert(store, [task_doc(f"b{i:05d}", "burst", due) for i in range(total)])
        wait_done(store, [worker], "burst", total, 60)
        # On a cluster a read may meet a copy that lags a moment: read until every task
        # shows its run (or give the figures of those that do).
        values = wait_until(lambda: len(v := [x for x in map(lateness_ms, all_docs(store))
                                              if x is not None]) >= total and v, 20,
                            "every run read back", interval=0.2) \
            if bench.kind == "cluster" else [lateness_ms(doc) for doc in all_docs(store)]
        return values
    finally:
        bench.kill_workers()
        bench.drop(store)


def apscheduler_burst(total: int) -> dict:
    """The same burst on APScheduler 3 (sqlite job store, 10 threads), in its own process."""
    result = subprocess.run([sys.executable, "-m", "bench.apsched", str(total), str(AHEAD)],
                            cwd=ROOT, capture_output=True, text=True, timeout=180,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"bench.apsched failed: {result.stderr.strip()[-1000:]}")
    return json.loads(result.stdout)


def singles(bench: Bench, count: int) -> list[float]:
    """One task at a time, due at a random sub-second instant 0.5 to 1.5 s ahead."""
    store = bench.database("single")
    values = []
    try:
        worker = bench.worker(store, "single")
        worker.wait_ready()
        rng = random.Random(7)
        for i in range(count):
            doc = task_doc(f"s{i:04d}", "single", in_seconds(0.5 + rng.random()))
            store.put(doc)
            done = wait_until(lambda d=doc: (x := store.get(d["_id"]))["status"] == "done" and x,
                              10, f"{doc['_id']} done", interval=0.02)
            values.append(lateness_ms(done))
            time.sleep(0.05)
        return values
    finally:
        bench.kill_workers()
        bench.drop(store)


def run_burst(bench: Bench, compare: bool = True) -> Measurement:
    m = Measurement("burst")
    values = burst(bench, BURST)
    p99 = summarise(m, f"lateness, {BURST} due at one instant", values, GOAL_BURST_P99,
                    f"{BURST} no-op tasks with one date {AHEAD:g} s after the insert, into one "
                    "`after start` process started for it")
    if compare:
        try:
            aps = apscheduler_burst(BURST)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            m.notes.append(f"APScheduler comparison not run: {exc}")
            return m
        aps_p99 = summarise(m, f"  APScheduler 3, the same {BURST}", aps["lateness_ms"], None,
                            "BackgroundScheduler, sqlite job store (SQLAlchemy), 10 threads, "
                            f"jobs added {AHEAD:g} s ahead of their date, in its own process "
                            f"(ready {aps['ready_s']:.2f} s after start)")
        ratio = p99 / aps_p99 if aps_p99 else float("nan")
        m.add("  after's p99 / APScheduler's p99", ratio, "x", goal=f"<= {GOAL_APS_RATIO:g}",
              met=ratio <= GOAL_APS_RATIO)
    return m


def run_singles(bench: Bench) -> Measurement:
    m = Measurement("singles")
    count = 15 if bench.quick else 40
    values = singles(bench, count)
    summarise(m, "lateness, single tasks at sub-second instants", values, GOAL_SINGLE_P99,
              f"{count} tasks one at a time, due at random sub-second instants 0.5-1.5 s "
              "after the PUT")
    return m
