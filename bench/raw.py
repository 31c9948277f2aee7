"""The baseline: how fast the server itself writes small documents with ``_bulk_docs``."""

from __future__ import annotations

import time

from .harness import Bench, Measurement, in_seconds, task_doc


def write_rate(store, total: int, batch: int, prefix: str = "raw") -> float:
    """Documents per second writing ``total`` new task-shaped documents ``batch`` at a time."""
    docs = [task_doc(f"{prefix}-{i:07d}", "raw", in_seconds(86400)) for i in range(total)]
    started = time.perf_counter()
    for start in range(0, total, batch):
        results = store.bulk_docs(docs[start:start + batch])
        assert all("error" not in r for r in results), results[:3]
    return total / (time.perf_counter() - started)


def run(bench: Bench) -> Measurement:
    total = 5_000 if bench.quick else 10_000
    m = Measurement("raw _bulk_docs")
    rates = []
    for _ in range(3):  # the median of three fresh databases
        plain = bench.database("raw", setup=False)
        try:
            write_rate(plain, 1000, 500, "warm")  # warm up (JIT, allocations)
            rates.append(write_rate(plain, total, 500))
        finally:
            bench.drop(plain)
    rate = sorted(rates)[1]
    m.add("raw _bulk_docs write rate (baseline)", rate, "docs/s",
          detail=f"{total} new docs, batches of 500, plain database; median of "
                 f"{', '.join(f'{r:.0f}' for r in rates)}")
    validated = bench.database("rawv")
    try:
        rate_v = write_rate(validated, total, 500)
    finally:
        bench.drop(validated)
    m.add("_bulk_docs into a set-up tasks db", rate_v, "docs/s",
          detail="with _design/after (validate_doc_update, due view)")
    bench.raw_rate = rate
    return m
