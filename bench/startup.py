"""Memory and start-up: a worker process started on a database of 50,000 future tasks."""

from __future__ import annotations

import time

from after.dates import parse_date

from .harness import (
    Bench,
    Measurement,
    bulk_insert,
    in_seconds,
    rss_mb,
    task_doc,
    utcnow,
    wait_until,
)

GOAL_RSS_MB = 100.0
GOAL_FIRST_RUN_S = 3.0


def start_worker(bench: Bench, store, name: str, docid: str = "now") -> dict:
    """Put one task due at once, start a worker process, time it to that task's run."""
    store.put(task_doc(docid, name, utcnow()))
    worker = bench.worker(store, name)
    ready = worker.wait_ready(300)
    rss_ready = rss_mb(worker.pid)
    doc = wait_until(lambda: (d := store.get(docid)).get("status") == "done" and d, 300,
                     "the due task done", interval=0.02)
    started = parse_date(doc["after"]["last_run"]["started"]).timestamp() - worker.spawned_at
    time.sleep(2.0)
    result = {"ready": ready, "rss_ready": rss_ready, "rss_settled": rss_mb(worker.pid),
              "first_run": started}
    bench.kill_workers()
    return result


def run(bench: Bench) -> Measurement:
    m = Measurement("memory and start-up")
    total = 10_000 if bench.quick else 50_000
    empty = bench.database("empty")
    try:
        base = start_worker(bench, empty, "mem")
    finally:
        bench.drop(empty)
    store = bench.database("mem")
    try:
        started = time.perf_counter()
        bulk_insert(store, [task_doc(f"future-{i:06d}", "mem", in_seconds(86400 * (1 + i % 30)))
                            for i in range(total)])
        insert_s = time.perf_counter() - started
        # The first worker on the new data builds the due view (its first poll asks it)...
        cold = start_worker(bench, store, "mem", "now-cold")
        # ... the next one finds it built, as in a system that runs.
        result = start_worker(bench, store, "mem", "now-warm")
    finally:
        bench.drop(store)
    m.notes.append(f"{total} future tasks bulk-inserted in {insert_s:.1f}s")
    m.add(f"worker RSS when ready, {total} future tasks", result["rss_ready"], "MB",
          goal=f"<= {GOAL_RSS_MB:g}", met=result["rss_ready"] <= GOAL_RSS_MB,
          detail=f"empty database: {base['rss_ready']:.1f} MB")
    m.add(f"worker RSS 2 s after its first run, {total} future tasks", result["rss_settled"],
          "MB", goal=f"<= {GOAL_RSS_MB:g}", met=result["rss_settled"] <= GOAL_RSS_MB,
          detail=f"empty database: {base['rss_settled']:.1f} MB")
    m.add("process start -> worker ready", result["ready"], "s",
          detail=f"empty database: {base['ready']:.2f} s")
    m.add("process start -> first due run started", result["first_run"], "s",
          goal=f"<= {GOAL_FIRST_RUN_S:g}", met=result["first_run"] <= GOAL_FIRST_RUN_S,
          detail=f"empty database: {base['first_run']:.2f} s; due view already built")
    m.add("  the same, first worker on the data (due view not yet built)", cold["first_run"], "s",
          goal=f"<= {GOAL_FIRST_RUN_S:g}", met=cold["first_run"] <= GOAL_FIRST_RUN_S,
          detail=f"ready after {cold['ready']:.2f} s, RSS {cold['rss_settled']:.1f} MB")
    return m
