"""Lateness: a run's actual start (``after.last_run.started``) minus the task's ``date``."""

from __future__ import annotations

import random
import time

from .harness import (
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

GOAL_BURST_P99 = 250.0
GOAL_SINGLE_P99 = 50.0


def summarise(m: Measurement, label: str, values: list[float], goal: float, detail: str):
    m.add(f"{label}: p50", percentile(values, 50), "ms", detail=detail)
    p99 = percentile(values, 99)
    m.add(f"{label}: p99", p99, "ms", goal=f"<= {goal:g}", met=p99 <= goal)
    m.add(f"{label}: max", max(values), "ms")


def burst(bench: Bench, total: int) -> list[float]:
    """``total`` tasks due at the same instant, a few seconds ahead (held beforehand)."""
    store = bench.database("burst")
    try:
        worker = bench.worker(store, "burst")
        worker.wait_ready()
        due = in_seconds(3.0)
        bulk_insert(store, [task_doc(f"b{i:05d}", "burst", due) for i in range(total)])
        wait_done(store, [worker], "burst", total, 60)
        return [lateness_ms(doc) for doc in all_docs(store)]
    finally:
        bench.kill_workers()
        bench.drop(store)


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


def run(bench: Bench) -> Measurement:
    m = Measurement("lateness")
    total = 500
    values = burst(bench, total)
    summarise(m, f"lateness, {total} due at once", values, GOAL_BURST_P99,
              f"{total} no-op tasks with the same date 3 s ahead, one process")
    count = 15 if bench.quick else 40
    values = singles(bench, count)
    summarise(m, "lateness, single tasks", values, GOAL_SINGLE_P99,
              f"{count} tasks one at a time, due at random sub-second instants")
    return m
