"""Start-up and memory: a worker process started on a database of 50,000 future tasks and 10
due ones, whose ``due`` view was never queried (the first worker on new data). Also: a task
posted while that worker's first poll waits for the index runs on time."""

from __future__ import annotations

import subprocess
import sys
import time

from after.rules.dates import parse_date

from .harness import (
    Bench,
    Measurement,
    bulk_insert,
    in_seconds,
    lateness_ms,
    rss_mb,
    task_doc,
    utcnow,
    wait_until,
)

GOAL_RSS_MB = 50.0
GOAL_FIRST_RUN_S = 1.0
DUE = 10


def interpreter_start() -> float:
    """Seconds for a Python process that imports the CLI and exits: the interpreter's
    start, which the goal leaves out (median of 3)."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import after.cli, after.worker"], check=True,
                       stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return sorted(times)[1]


def done_docs(store, ids: list[str]) -> list[dict]:
    docs = store.bulk_get(ids)
    return [d for d in docs.values() if d.get("status") == "done"]


def run(bench: Bench) -> Measurement:
    m = Measurement("start-up and memory")
    total = 10_000 if bench.quick else 50_000
    store = bench.database("start")
    name = "start"
    try:
        t0 = time.perf_counter()
        bulk_insert(store, [task_doc(f"future-{i:06d}", name, in_seconds(86400 * (1 + i % 30)))
                            for i in range(total)])
        insert_s = time.perf_counter() - t0
        due_ids = [f"due-{i:02d}" for i in range(DUE)]
        now = utcnow()
        bulk_insert(store, [task_doc(docid, name, now) for docid in due_ids])
        worker = bench.worker(store, name)
        ready = worker.wait_ready(300)
        # A task posted now, due 1 s ahead: the worker's first poll may still be indexing.
        fresh = task_doc("fresh", name, in_seconds(1.0))
        store.put(fresh)
        docs = wait_until(lambda: len(d := done_docs(store, due_ids)) == DUE and d, 300,
                          f"the {DUE} due tasks done", interval=0.02)
        starts = sorted(parse_date(d["after"]["last_run"]["started"]).timestamp()
                        for d in docs)
        fresh_done = wait_until(lambda: (d := store.get("fresh")).get("status") == "done" and d,
                                300, "the fresh task done", interval=0.02)
        time.sleep(2.0)
        rss = rss_mb(worker.pid)
    finally:
        bench.kill_workers()
        bench.drop(store)
    first = starts[0] - worker.spawned_at
    python = interpreter_start()
    m.notes.append(f"{total} future tasks bulk-inserted in {insert_s:.1f}s")
    m.add(f"start -> first due run ({total} future + {DUE} due, view never queried)", first,
          "s", detail=f"from the spawn of `after start` (worker ready after {ready:.2f} s); all "
                      f"{DUE} started {starts[-1] - worker.spawned_at:.2f} s after the spawn")
    m.add("  the interpreter's start (python -c 'import after.cli, after.worker')", python,
          "s", detail="median of 3, measured right after")
    m.add("  first due run after start, less the interpreter's start", first - python, "s",
          goal=f"<= {GOAL_FIRST_RUN_S:g}", met=first - python <= GOAL_FIRST_RUN_S)
    late = lateness_ms(fresh_done)
    m.add("  a task posted once ready, due 1 s later: lateness", late, "ms",
          goal="<= 10", met=late <= 10.0,
          detail="posted while the first poll may still wait for the index")
    m.add(f"worker RSS with {total} future tasks", rss, "MB", goal=f"<= {GOAL_RSS_MB:g}",
          met=rss <= GOAL_RSS_MB, detail="2 s after its runs")
    return m
