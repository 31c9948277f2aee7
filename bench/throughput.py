"""Drain: no-op tasks due now, posted *before* the workers start; timed from ``after start``
(the processes' spawn) to the last task ``done``, and to the first run started."""

from __future__ import annotations

import time

from after.rules.dates import parse_date

from .harness import (
    Bench,
    Measurement,
    all_docs,
    bulk_insert,
    cpu_seconds,
    task_doc,
    utcnow,
    wait_done,
)

GOAL_RATIO = 1 / 3


def drain(bench: Bench, processes: int, total: int, *options: str) -> dict:
    """Insert ``total`` no-op tasks due now, then start ``processes`` workers (on a cluster,
    each on its own node) and time them from their spawn."""
    store = bench.database(f"drain{processes}")
    name = "drain"
    try:
        now = utcnow()
        bulk_insert(store, [task_doc(f"t{i:06d}", name, now) for i in range(total)])
        server_before = bench.server_cpu_seconds()
        spawned_at = time.time()
        started = time.perf_counter()
        workers = [bench.worker(store, name, *options, node=k) for k in range(processes)]
        ended = wait_done(store, workers, name, total, 120 + total / 10)
        elapsed = ended - started
        worker_cpu = sum(cpu_seconds(w.pid) for w in workers)
        server_cpu = bench.server_cpu_seconds() - server_before
        docs = all_docs(store)
        starts = [parse_date(d["after"]["last_run"]["started"]).timestamp() for d in docs
                  if ((d.get("after") or {}).get("last_run") or {}).get("started")]
        odd = [f"{d['_id']} {d.get('status')}" for d in docs
               if not ((d.get("after") or {}).get("last_run") or {}).get("started")]
        first = min(starts) if starts else float("nan")
        return {
            "odd": odd,
            "rate": total / elapsed, "elapsed": elapsed, "first": first - spawned_at,
            "worker_cpu": worker_cpu / elapsed, "server_cpu": server_cpu / elapsed,
        }
    finally:
        bench.kill_workers()
        bench.drop(store)


def run(bench: Bench) -> Measurement:
    total = 500 if bench.quick else 2_000
    m = Measurement("drain")
    raw = bench.raw_rate
    for processes in (1, 3):
        plural = "es" if processes > 1 else ""
        result = drain(bench, processes, total)
        detail = (f"{total} no-op tasks due, posted before {processes} `after start` "
                  f"process{plural} {'(one per node) ' if bench.kind == 'cluster' else ''}"
                  f"started; {result['elapsed']:.2f} s from the spawn to all done; CPU: "
                  f"workers {result['worker_cpu']:.2f} cores, server "
                  f"{result['server_cpu']:.2f} cores")
        if result["odd"]:
            detail += (f"; {len(result['odd'])} task(s) read back with no last run, e.g. "
                       f"{result['odd'][0]}")
        m.add(f"drain, {processes} process{plural}", result["rate"], "tasks/s", detail=detail)
        if raw:
            ratio = result["rate"] / raw
            m.add(f"  ratio to raw _bulk_docs, {processes} process{plural}", ratio, "x raw",
                  goal=">= 0.333" if processes == 1 else "",
                  met=ratio >= GOAL_RATIO if processes == 1 else None)
        m.add(f"  first of them started, after start ({processes} process{plural})",
              result["first"], "s")
    return m
