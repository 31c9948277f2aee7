"""The overhead per run of ``"isolation": "process"`` against a job thread (issue 16.9).

Two figures, each a median over runs of the ``noop`` job (so the run is all overhead):

- ``python -m bench.isolation [--runs N]``, no server: the time for a job thread to run the
  job (``after.jobs.call``) against the time to run it in a child process and have its reply
  back (``after.worker.isolation.run``: a fork of the fork server, the hand-over both ways, the
  registry loading the job module in the child, the exit). Also the first isolated run of a
  process, which starts the fork server.
- ``python -m bench --only isolation`` (a mode of the bench, on each server): a worker
  process runs ``noop`` tasks one after another, half of them isolated; each run record's
  ``duration_ms`` (from the job thread's start to the job's answer) is compared.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime

from after.jobs import JobRegistry, TaskContext, call
from after.worker import isolation

from .harness import (
    JOBS,
    Bench,
    Measurement,
    bulk_insert,
    in_seconds,
    percentile,
    task_doc,
    wait_until,
)

RUNS = 200


def per_call(runs: int = RUNS) -> dict[str, float]:
    """Milliseconds per run in a job thread and in a child process (median, p95), and the
    first isolated run of this process (fork server start included)."""
    registry = JobRegistry(JOBS)
    func = registry.resolve("noop")
    context = TaskContext({"_id": "bench", "worker": "bench", "job": {"name": "noop"}},
                          datetime.now(UTC), 1)
    t0 = time.perf_counter()
    first = isolation.run(isolation.Child(), registry, func, context, [])
    cold = (time.perf_counter() - t0) * 1000
    assert first is not None and first.ok, first
    threads, children = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        reply = call(func, context, [])
        threads.append((time.perf_counter() - t0) * 1000)
        assert reply.ok
        t0 = time.perf_counter()
        reply = isolation.run(isolation.Child(), registry, func, context, [])
        children.append((time.perf_counter() - t0) * 1000)
        assert reply is not None and reply.ok, reply
    return {"thread p50": percentile(threads, 50), "thread p95": percentile(threads, 95),
            "process p50": percentile(children, 50), "process p95": percentile(children, 95),
            "process first": cold}


def run(bench: Bench) -> Measurement:
    """Run records of a worker process: ``noop`` in a thread and isolated, interleaved."""
    m = Measurement("isolation")
    count = 20 if bench.quick else 60
    store = bench.database("iso")
    try:
        worker = bench.worker(store, "iso")
        worker.wait_ready()
        docs = []
        for i in range(count):
            doc = task_doc(f"i{i:04d}", "iso", in_seconds(2.0 + i * 0.1), job="noop")
            if i % 2:
                doc["isolation"] = "process"
            docs.append(doc)
        bulk_insert(store, docs)
        runs_db = f"{store.db}_runs"
        records = wait_until(
            lambda: len(r := [x for x in store.find_all({"type": "run"}, db=runs_db)
                              if x.get("outcome") != "intended"]) >= count and r,
            60 + count * 0.2, f"{count} run records")
        isolated = {d["_id"] for d in docs if d.get("isolation") == "process"}
        records.sort(key=lambda r: r["started"])
        child = [r["duration_ms"] for r in records if r["task"] in isolated]
        thread = [r["duration_ms"] for r in records if r["task"] not in isolated]
        assert all(r["outcome"] == "done" for r in records), records
        first, child = child[0], child[1:]  # the first starts the fork server
        detail = (f"{count} noop tasks 100 ms apart on one worker process, every other one "
                  "isolated; run record duration_ms; the first isolated run apart")
        m.add("run in a job thread: p50", percentile(thread, 50), "ms", detail=detail)
        m.add("run in a child process: p50", percentile(child, 50), "ms")
        m.add("run in a child process: p95", percentile(child, 95), "ms")
        m.add("isolation overhead per run: p50",
              percentile(child, 50) - percentile(thread, 50), "ms")
        m.add("first isolated run (starts the fork server)", first, "ms")
        m.notes.append(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        bench.kill_workers()
        bench.drop(store)
    return m


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.isolation", description=__doc__)
    parser.add_argument("--runs", type=int, default=RUNS, help="runs of each kind")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    figures = per_call(args.runs)
    load = max(load, os.getloadavg()[0])
    print(f"noop, {args.runs} runs of each, no server (python -m bench.isolation), "
          f"{os.cpu_count()} cores, load average up to {load:.1f}:")
    for name, value in figures.items():
        print(f"  {name:14} {value:8.3f} ms")
    print(f"  overhead per run (p50): {figures['process p50'] - figures['thread p50']:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
