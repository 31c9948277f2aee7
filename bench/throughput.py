"""Throughput: no-op tasks due now, run to ``done`` by one worker process and by three."""

from __future__ import annotations

import time

from .harness import Bench, Measurement, bulk_insert, cpu_seconds, task_doc, utcnow, wait_done

GOAL_RATIO = 1 / 3


def run_pool(bench: Bench, processes: int, total: int, *options: str) -> dict:
    """Start ``processes`` workers, insert ``total`` no-op tasks due now, time them to done."""
    store = bench.database(f"tp{processes}")
    name = "tp"
    try:
        workers = [bench.worker(store, name, *options) for _ in range(processes)]
        for worker in workers:
            worker.wait_ready()
        time.sleep(6)  # one heartbeat (5 s): every process knows the others
        now = utcnow()
        docs = [task_doc(f"t{i:06d}", name, now) for i in range(total)]
        cpu_before = {w.pid: cpu_seconds(w.pid) for w in workers}
        server_before = bench.server_cpu_seconds()
        started = time.perf_counter()
        bulk_insert(store, docs)
        inserted = time.perf_counter() - started
        elapsed = wait_done(store, workers, name, total, 120 + total / 20) - started
        worker_cpu = sum(cpu_seconds(w.pid) - cpu_before[w.pid] for w in workers)
        server_cpu = bench.server_cpu_seconds() - server_before
        return {
            "rate": total / elapsed, "elapsed": elapsed, "insert": inserted,
            "worker_cpu": worker_cpu / elapsed, "server_cpu": server_cpu / elapsed,
        }
    finally:
        bench.kill_workers()
        bench.drop(store)


def run(bench: Bench) -> Measurement:
    total = 500 if bench.quick else 2_000
    m = Measurement("throughput")
    raw = getattr(bench, "raw_rate", None)
    for processes in (1, 3):
        result = run_pool(bench, processes, total)
        detail = (f"{total} no-op tasks due now, {result['elapsed']:.2f}s from the first insert "
                  f"(inserting took {result['insert']:.2f}s); CPU: workers "
                  f"{result['worker_cpu']:.2f} cores, server {result['server_cpu']:.2f} cores")
        m.add(f"throughput, {processes} process{'es' if processes > 1 else ''}",
              result["rate"], "tasks/s", detail=detail)
        if raw:
            ratio = result["rate"] / raw
            m.add(f"  ratio to raw _bulk_docs, {processes} process"
                  f"{'es' if processes > 1 else ''}", ratio, "x raw", goal=">= 0.333",
                  met=ratio >= GOAL_RATIO)
    # The same with the due view polled every 2 s instead of 30: what any run longer than
    # the poll interval meets (the poll indexes the view on the worker's loop).
    # (2,000 even with --quick: a shorter run can end before the first poll.)
    result = run_pool(bench, 1, 2_000, "--poll", "2")
    m.add("throughput, 1 process, a poll every 2 s", result["rate"], "tasks/s",
          detail=f"2000 tasks as above, --poll 2 (default 30): {result['elapsed']:.2f}s; a poll "
                 "that lands during the run blocks the worker's loop while the server "
                 "indexes the due view")
    return m
