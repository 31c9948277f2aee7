"""Memory under a burst (issue 13): 20,000 tasks due within 10 s, into a worker just started.

The tasks are inserted before the worker starts, dated from 15 to 25 s ahead (so the whole
burst is inside the worker's horizon at once), and the worker's resident set size is sampled
every 50 ms until every task is done. Reported: the peak RSS, that each task ran exactly once
(one run record each), and the lateness percentiles of the burst."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

from after.couch.store import Store

from .harness import (
    Bench,
    Measurement,
    all_docs,
    bulk_insert,
    in_seconds,
    lateness_ms,
    percentile,
    rss_mb,
    task_doc,
    wait_done,
)

GOAL_PEAK_MB = 100.0
TOTAL = 20_000
SPREAD = 10.0  # seconds the due instants are spread over
AHEAD = 15.0  # seconds from the worker's start to the first due instant


def run(bench: Bench) -> Measurement:
    m = Measurement("memory under a burst")
    total = 4_000 if bench.quick else TOTAL
    store = bench.database("memory")
    peak, stop = [0.0], threading.Event()
    try:
        start = in_seconds(AHEAD)
        bulk_insert(store, [task_doc(f"m{i:05d}", "memory",
                                     start + timedelta(seconds=SPREAD * i / total))
                            for i in range(total)])
        worker = bench.worker(store, "memory")

        def sample() -> None:
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], rss_mb(worker.pid))
                except (OSError, RuntimeError):
                    pass
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        worker.wait_ready(120)
        wait_done(store, [worker], "memory", total, 600)
        stop.set()
        sampler.join()
        after_rss = rss_mb(worker.pid)
        docs = all_docs(store)
        with Store(bench.url, f"{store.db}_runs", timeout=120) as records:
            runs = Counter(r["task"] for r in all_docs(records) if "task" in r)
    finally:
        stop.set()
        bench.kill_workers()
        bench.drop(store)
    late = [x for x in map(lateness_ms, docs) if x is not None]
    twice = sum(1 for n in runs.values() if n > 1)
    m.add(f"{total} due within {SPREAD:g} s: peak worker RSS", peak[0], "MB",
          goal=f"<= {GOAL_PEAK_MB:g}", met=peak[0] <= GOAL_PEAK_MB,
          detail=f"sampled every 50 ms from the spawn; {after_rss:.0f} MB once all were done")
    m.add("  tasks run exactly once", len([n for n in runs.values() if n == 1]), "tasks",
          goal=f"= {total}", met=len(runs) == total and twice == 0,
          detail=f"{twice} ran more than once, {total - len(runs)} never ran")
    m.add("  lateness p50", percentile(late, 50), "ms")
    m.add("  lateness p99", percentile(late, 99), "ms")
    m.add("  lateness max", max(late) if late else float("nan"), "ms")
    return m
