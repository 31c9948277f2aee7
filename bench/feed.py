"""Feed latency: from a PUT of a task to the worker holding it, seen as its run's intent (a
held task is written nowhere; its intent goes to ``<db>_runs`` as soon as it is held)."""

from __future__ import annotations

import threading
import time

from after.couch.store import ChangesFollower

from .harness import Bench, Measurement, in_seconds, percentile, task_doc


def run(bench: Bench) -> Measurement:
    m = Measurement("feed latency")
    count = 20 if bench.quick else 100
    store = bench.database("feed")
    seen: dict[str, float] = {}
    arrived = threading.Event()

    def on_change(change):
        doc = change.get("doc") or {}
        task = doc.get("task")
        if doc.get("outcome") == "intended" and task not in seen:
            seen[task] = time.time()
            arrived.set()

    follower = ChangesFollower(store, on_change, since=store.update_seq(db=f"{store.db}_runs"),
                               db=f"{store.db}_runs", heartbeat=1.0)
    try:
        worker = bench.worker(store, "feed")
        worker.wait_ready()
        follower.start()
        time.sleep(0.5)
        held = []
        for i in range(count):
            doc = task_doc(f"f{i:04d}", "feed", in_seconds(120))
            arrived.clear()
            put_at = time.time()
            store.put(doc)
            if not arrived.wait(10):
                raise TimeoutError(f"{doc['_id']} was never held")
            held.append((seen[doc["_id"]] - put_at) * 1000)
            time.sleep(0.02)
    finally:
        follower.stop()
        bench.kill_workers()
        bench.drop(store)
    detail = f"{count} tasks due in 2 minutes (inside the 300 s horizon), PUT one at a time"
    m.add("feed: PUT -> held, its intent seen on the runs feed: p50", percentile(held, 50),
          "ms", detail=detail)
    m.add("feed: PUT -> held, its intent seen on the runs feed: p99", percentile(held, 99),
          "ms")
    return m
