"""``python -m bench.cluster [--quick]`` (``make bench-cluster``): figures on a real 3-node
CouchDB 3 cluster (n=3, q=2) started from ``../shared/couchdb`` on free ports and stopped by
pid at the end.

- feed delay: a PUT through node 1 to the change on a ``_changes`` feed followed on node 3
  (and, for reference, on node 1 itself);
- throughput: no-op tasks due now, run to ``done`` by 1 process (on node 1) and by 3 (one
  per node), beside the cluster's own validated write rate measured in the same run;
- failover: 3 processes, 300 tasks due over 6 s; node 2 is SIGKILLed 1.5 s in and started
  again 6 s later; how late the tasks held by the process on node 2 are done, when each
  process lists every node (failover) and when it knows only its own node (no failover).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from after.config import workers_db
from after.couch import schema
from after.couch.store import ChangesFollower, Store
from after.rules.dates import parse_date, utcnow
from after.worker.partitions import partition_of

from . import validation
from .couchdb_cluster import Cluster, couchdb_home, free_port_range
from .harness import Worker, all_docs, bulk_insert, percentile, task_doc, wait_done


class ClusterBench:
    """What :class:`bench.harness.Worker` needs (``tmp``, ``url``, ``workers``), on a cluster."""

    def __init__(self, quick: bool):
        self.quick = quick
        self._tmp = tempfile.TemporaryDirectory(prefix="after-bench-cluster-")
        self.tmp = Path(self._tmp.name)
        self.cluster = Cluster(couchdb_home() / "couchdb.sh", self.tmp / "cluster",
                               free_port_range(6))
        self.url = self.cluster.urls()
        self.workers: list[Worker] = []

    def __enter__(self) -> ClusterBench:
        self.cluster.start()
        return self

    def __exit__(self, *exc) -> None:
        self.kill_workers()
        try:
            self.cluster.stop()
        finally:
            self._tmp.cleanup()

    def kill_workers(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers.clear()

    def database(self, prefix: str) -> Store:
        store = Store(self.cluster.urls(), f"{prefix}-{os.urandom(3).hex()}", timeout=120)
        schema.setup(store)
        return store

    def drop(self, store: Store) -> None:
        for db in (store.db, f"{store.db}_runs", f"{store.db}_workers"):
            try:
                store.delete_database(db)
            except Exception:
                pass
        store.close()

    def worker_on(self, store: Store, k: int | None, name: str, *options: str,
                  only: bool = False) -> Worker:
        """A worker process whose first node is ``k`` (``only``: the one node it knows)."""
        self.url = self.cluster.url(k) if only else self.cluster.urls(first=k)
        try:
            return Worker(self, store.db, name, *options)
        finally:
            self.url = self.cluster.urls()


def feed_delay(bench: ClusterBench, count: int) -> dict:
    store = bench.database("feed")
    results = {}
    try:
        writer = Store(bench.cluster.url(1), store.db)
        for feed_node in (3, 1):
            reader = Store(bench.cluster.url(feed_node), store.db)
            seen: dict[str, float] = {}
            arrived = threading.Event()

            def on_change(change, seen=seen, arrived=arrived):
                seen.setdefault(change["id"], time.perf_counter())
                arrived.set()

            follower = ChangesFollower(reader, on_change, since=reader.update_seq(),
                                       include_docs=False, heartbeat=1.0).start()
            delays = []
            try:
                time.sleep(0.5)
                for i in range(count):
                    docid = f"n{feed_node}-{i:04d}"
                    arrived.clear()
                    put_at = time.perf_counter()
                    writer.put({"_id": docid, "status": "done"})
                    deadline = time.monotonic() + 10
                    while docid not in seen and time.monotonic() < deadline:
                        arrived.wait(0.5)
                        arrived.clear()
                    if docid not in seen:
                        raise TimeoutError(f"{docid} never came on the feed")
                    delays.append((seen[docid] - put_at) * 1000)
                    time.sleep(0.01)
            finally:
                follower.stop()
                reader.close()
            results[feed_node] = delays
        writer.close()
    finally:
        bench.drop(store)
    return results


def throughput(bench: ClusterBench, processes: int, total: int) -> dict:
    store = bench.database(f"tp{processes}")
    name = "tp"
    try:
        workers = [bench.worker_on(store, k, name) for k in range(1, processes + 1)]
        for worker in workers:
            worker.wait_ready()
        time.sleep(6)  # one heartbeat (5 s): every process knows the others
        now = utcnow()
        docs = [task_doc(f"t{i:06d}", name, now) for i in range(total)]
        started = time.perf_counter()
        bulk_insert(store, docs)
        elapsed = wait_done(store, workers, name, total, 120 + total / 5) - started
        return {"rate": total / elapsed, "elapsed": elapsed}
    finally:
        bench.kill_workers()
        bench.drop(store)


def failover(bench: ClusterBench, only_own_node: bool) -> dict:
    """300 tasks due over 6 s from 3 s on; node 2 SIGKILLed 1.5 s after the first is due,
    started again 6 s later."""
    store = bench.database("fo")
    name = "fo"
    options = ("--poll", "1", "--heartbeat", "0.5", "--lease", "3")
    try:
        workers = [bench.worker_on(store, k, name, *options, only=only_own_node)
                   for k in (1, 2, 3)]
        for worker in workers:
            worker.wait_ready()
        time.sleep(1.5)
        base = utcnow() + timedelta(seconds=3)
        docs = [task_doc(f"k{i:03d}", name, base + timedelta(milliseconds=20 * i))
                for i in range(300)]
        with Store(bench.cluster.url(1), store.db) as node1:
            bulk_insert(node1, docs)
            while utcnow() < base + timedelta(seconds=1.5):
                time.sleep(0.02)
            # what the process on node 2 holds: the waiting tasks of its partitions (a task
            # held is written nowhere; its partition's lease names the process)
            leases = node1.find_all({"type": "part", "name": name}, db=workers_db(store.db))
            theirs = {d["partition"] for d in leases
                      if f":{workers[1].pid}:" in (d.get("owner") or "")}
            held = {d["_id"] for d in all_docs(node1)
                    if d.get("status") == "waiting" and partition_of(d["_id"]) in theirs}
        bench.cluster.kill(2)
        killed = time.monotonic()
        time.sleep(max(0.0, 6 - (time.monotonic() - killed)))
        bench.cluster.revive(2)
        with Store(bench.cluster.url(1), store.db) as node1:
            deadline = time.monotonic() + 120
            while True:
                docs_now = {d["_id"]: d for d in all_docs(node1)}
                if all(d.get("status") == "done" for d in docs_now.values()) \
                        and len(docs_now) == 300:
                    break
                if time.monotonic() > deadline:
                    stuck = sorted((d.get("status"), i) for i, d in docs_now.items()
                                   if d.get("status") != "done")
                    raise TimeoutError(f"{len(stuck)} tasks not done: {stuck[:10]}")
                time.sleep(0.2)
        late = {i: (parse_date(d["after"]["last_run"]["ended"])
                    - parse_date(d["date"])).total_seconds() for i, d in docs_now.items()}
        held_late = [late[i] for i in held]
        others = [v for i, v in late.items() if i not in held]
        return {"held": len(held), "held_max": max(held_late, default=float("nan")),
                "others_max": max(others, default=float("nan"))}
    finally:
        bench.kill_workers()
        bench.drop(store)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer tasks, fewer samples")
    args = parser.parse_args(argv)
    count = 50 if args.quick else 200
    total = 300 if args.quick else 1000
    lines = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    with ClusterBench(args.quick) as bench:
        say(f"after on a 3-node CouchDB 3.4.3 cluster (n=3 q=2), {os.cpu_count()} cores")
        delays = feed_delay(bench, count)
        for node, values in delays.items():
            where = "across nodes (PUT on node 1, feed on node 3)" if node == 3 else \
                "same node (PUT and feed on node 1)"
            say(f"feed delay {where}: p50 {percentile(values, 50):.1f} ms, "
                f"p99 {percentile(values, 99):.1f} ms ({len(values)} PUTs)")
        validated = validation.rate(bench, "after")
        say(f"validated _bulk_docs write rate of this cluster (task documents, set-up db): "
            f"{validated:,.0f} docs/s")
        rates = {}
        for processes in (1, 3):
            result = throughput(bench, processes, total)
            rates[processes] = result["rate"]
            say(f"throughput, {processes} process{'es' if processes > 1 else ''} "
                f"({'one per node' if processes > 1 else 'on node 1'}): "
                f"{result['rate']:.0f} tasks/s ({total} no-op tasks in "
                f"{result['elapsed']:.1f} s), {result['rate'] / validated:.2f}x the "
                "validated write rate")
        say(f"3 processes / 1 process: {rates[3] / rates[1]:.2f}x "
            f"({'met' if rates[3] >= rates[1] else 'NOT met'}: goal >= 1)")
        for only in (False, True):
            result = failover(bench, only_own_node=only)
            how = ("each process knows only its own node" if only
                   else "every process lists the 3 nodes (failover)")
            say(f"node 2 SIGKILLed, back 6 s later, {how}: the "
                f"{result['held']} tasks held by the process on node 2 done at most "
                f"{result['held_max']:.1f} s after their date (the others: "
                f"{result['others_max']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
