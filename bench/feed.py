"""Feed latency: from a PUT of a task to the worker holding it."""

from __future__ import annotations

import threading
import time

from after.dates import parse_date
from after.store import ChangesFollower

from .harness import Bench, Measurement, in_seconds, percentile, task_doc


def run(bench: Bench) -> Measurement:
    m = Measurement("feed latency")
    count = 20 if bench.quick else 100
    store = bench.database("feed")
    seen: dict[str, float] = {}
    arrived = threading.Event()

    def on_change(change):
        doc = change.get("doc") or {}
        if doc.get("status") == "scheduled" and doc["_id"] not in seen:
            seen[doc["_id"]] = time.time()
            arrived.set()

    follower = ChangesFollower(store, on_change, since=store.update_seq(),
                               selector={"worker": "feed"}, heartbeat=1.0)
    try:
        worker = bench.worker(store, "feed")
        worker.wait_ready()
        follower.start()
        time.sleep(0.5)
        to_feed, to_claim = [], []
        for i in range(count):
            doc = task_doc(f"f{i:04d}", "feed", in_seconds(120))
            arrived.clear()
            put_at = time.time()
            store.put(doc)
            if not arrived.wait(10):
                raise TimeoutError(f"{doc['_id']} was never held")
            to_feed.append((seen[doc["_id"]] - put_at) * 1000)
            claimed = parse_date(store.get(doc["_id"])["after"]["claimed"]).timestamp()
            to_claim.append((claimed - put_at) * 1000)
            time.sleep(0.02)
    finally:
        follower.stop()
        bench.kill_workers()
        bench.drop(store)
    detail = f"{count} tasks due in 2 minutes (inside the 300 s horizon), PUT one at a time"
    m.add("feed: PUT -> claim decided (after.claimed): p50", percentile(to_claim, 50), "ms",
          detail=detail)
    m.add("feed: PUT -> claim decided (after.claimed): p99", percentile(to_claim, 99), "ms")
    m.add("feed: PUT -> scheduled seen on the feed: p50", percentile(to_feed, 50), "ms")
    m.add("feed: PUT -> scheduled seen on the feed: p99", percentile(to_feed, 99), "ms")
    return m
