"""Issue 25 items 1 and 2 on the 3-node cluster, one worker process per node: ``after
cancel`` through any node stops jobs that run (each run recorded once, ``canceled``, with
its duration), and ``after pause NAME`` through one node is acknowledged by the processes of
every node and holds a task due just after it returned until ``after resume``. Figures
printed: run with ``-s`` to see them."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

from after.config import workers_db
from after.couch import registry as peers
from after.rules.dates import format_date, parse_date, utcnow

from ..acceptance.conftest import beats, recorded, task_doc
from .conftest import wait_until
from .test_cluster_pool import all_docs, no_conflicts_left, post, start_pool


def test_cancel_through_any_node_stops_jobs_running_on_three_nodes(ccli):
    processes = start_pool(ccli, "ccan")
    ids = [f"long{i}" for i in range(6)]
    post(ccli, [{"_id": i, "worker": "ccan", "date": format_date(utcnow()),
                 "job": {"name": "wait", "arguments": [60]}, "status": "waiting"}
                for i in ids])
    def all_in(status: str) -> dict[str, dict] | None:
        docs = all_docs(ccli, ids)
        return docs if len(docs) == 6 and all(d["status"] == status
                                              for d in docs.values()) else None

    running = wait_until(lambda: all_in("running"), 30, "6 runs going")
    owners = {d["after"]["owner"] for d in running.values()}
    for n, docid in enumerate(ids):  # through node 1, 2, 3, 1, ...
        done = ccli.run("cancel", docid, AFTER_COUCHDB_URL=ccli.cluster.url(n % 3 + 1))
        assert done.returncode == 0, done.stderr
        assert "its running job is told to stop" in done.stdout
    asked = time.monotonic()
    canceled = wait_until(lambda: all_in("canceled"), 20, "6 canceled")
    took = time.monotonic() - asked
    for doc in canceled.values():
        last = doc["after"]["last_run"]
        assert last["outcome"] == "canceled" and 0 < last["duration_ms"] < 20_000, last
        assert doc["after"]["runs"] == 1
    no_conflicts_left(ccli, ids)

    def records() -> list[dict]:
        with ccli.node_store(1) as store:
            return [r for r in store.find_all({"task": {"$in": ids}}, db=f"{ccli.db}_runs")
                    if r.get("outcome") != "intended"]

    wait_until(lambda: len({r["task"] for r in records()}) == 6, 20, "6 run records")
    time.sleep(1)  # a duplicate record would be written by now
    found = records()
    assert Counter(r["task"] for r in found) == {i: 1 for i in ids}
    assert {r["outcome"] for r in found} == {"canceled"}
    print(f"\n[cluster cancel] 6 jobs running on {len(owners)} of {len(processes)} processes "
          f"(one per node), canceled through the 3 nodes: all ended within {took:.2f}s, "
          "one run record each")


def test_a_name_paused_through_one_node_holds_on_every_node_until_resumed(ccli, tmp_path):
    out = tmp_path / "runs.jsonl"
    processes = start_pool(ccli, "cpaws")
    held = [task_doc(f"h{i}", "cpaws", out, delay=6) for i in range(9)]
    post(ccli, held)
    wait_until(lambda: sum(int(b.get("held") or 0) for b in beats(ccli, "cpaws").values())
               >= 9, 30, "9 held")
    paused = ccli.run("pause", "cpaws", AFTER_COUCHDB_URL=ccli.cluster.url(2))
    returned = utcnow()
    assert paused.returncode == 0, paused.stderr
    assert "acknowledged by its 3 live processes" in paused.stdout
    with ccli.node_store(3) as store:  # what every node's process says, read on another
        beats_now = peers.registry(store, workers_db(ccli.db), "cpaws")
    assert sorted(b["pid"] for b in beats_now if b.get("paused")) == \
        sorted(p.pid for p in processes)
    # a task due just after the pause returned, written through another node
    due = [task_doc("just-after", "cpaws", out, delay=0.3)]
    with ccli.node_store(3) as store:
        store.bulk_docs(due)
    last = max(parse_date(d["date"]) for d in held + due) + timedelta(seconds=1.5)
    while utcnow() < last:
        time.sleep(0.1)
    assert recorded(out) == []
    assert {d["status"] for d in all_docs(ccli, [d["_id"] for d in held + due]).values()} \
        == {"waiting"}

    resuming = utcnow()
    resumed = ccli.run("resume", "cpaws", AFTER_COUCHDB_URL=ccli.cluster.url(1))
    assert resumed.returncode == 0, resumed.stderr
    wait_until(lambda: len(recorded(out)) >= 10, 30, "10 runs once resumed")
    time.sleep(1)  # a duplicate would be recorded by now
    runs = recorded(out)
    assert Counter(r["id"] for r in runs) == {d["_id"]: 1 for d in held + due}
    assert all(parse_date(r["at"]) >= resuming for r in runs)
    print(f"\n[cluster pause] paused through node 2, acknowledged by the processes of the 3 "
          f"nodes; nothing ran for {(last - returned).total_seconds():.1f}s (a task due "
          "0.3 s after it returned, 9 held ones due); resumed through node 1: 10 runs, once "
          f"each, per process {sorted(Counter(r['pid'] for r in runs).values())}")
