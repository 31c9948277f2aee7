"""A concurrency cap on a 3-node CouchDB cluster: three processes, each on its own node,
take slot documents through different nodes (after.gates). Figures printed with ``-s``."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from after.config import workers_db
from after.rules.dates import format_date, utcnow

from ..acceptance.test_caps import capped, overlap
from .conftest import wait_until
from .test_cluster_pool import all_docs, no_conflicts_left, post, run_records, start_pool


def test_a_cap_holds_across_three_nodes(ccli):
    processes = start_pool(ccli, "capped")
    due = format_date(utcnow() + timedelta(seconds=3))
    docs = [{**capped(f"c{i:02}", "capped", 0.5, 2), "date": due} for i in range(20)]
    post(ccli, docs)
    ids = [d["_id"] for d in docs]
    wait_until(lambda: all(d["status"] == "done" for d in all_docs(ccli, ids).values())
               and len(all_docs(ccli, ids)) == 20, 90, "20 done")
    runs = wait_until(lambda: len(r := [x for x in run_records(ccli) if x["task"] in ids])
                      >= 20 and all(x["outcome"] != "intended" for x in r) and r, 30,
                      "20 run records, no intent")  # (the task is written done first)
    most = overlap(runs)
    print(f"\n[cluster caps] 20 tasks of 0.5 s, limit 2, 3 processes on 3 nodes: most at once "
          f"{most}, outcomes {dict(Counter(r['outcome'] for r in runs))}, per process "
          f"{sorted(Counter(r['pid'] for r in runs).values())}")
    assert Counter(r["outcome"] for r in runs) == {"done": 20}
    assert most <= 2
    assert {p.pid for p in processes} >= {r["pid"] for r in runs}
    no_conflicts_left(ccli, ids)
    with ccli.node_store(1) as store:
        slots = store.prefixed("slot:reports#", db=workers_db(ccli.db))
    assert [s["holder"] for s in slots] == [None, None]


def test_a_rate_holds_across_three_nodes(ccli):
    """Issue 25, item 5: 12 tasks due at once, ``"rate": {"key": "api", "limit": 3,
    "per": 2}``, three processes each on its own node taking the tokens through it."""
    from after.rules.dates import parse_date

    from ..acceptance.conftest import task_doc
    from ..integration.test_gates import most_in_any

    start_pool(ccli, "rated")
    due = format_date(utcnow() + timedelta(seconds=3))
    docs = [{**task_doc(f"a{i:02}", "rated", "unused",
                        rate={"key": "api", "limit": 3, "per": 2}),
             "job": {"name": "noop", "arguments": []}, "date": due} for i in range(12)]
    post(ccli, docs)
    ids = [d["_id"] for d in docs]
    wait_until(lambda: all(d["status"] == "done" for d in all_docs(ccli, ids).values())
               and len(all_docs(ccli, ids)) == 12, 90, "12 done")
    runs = wait_until(lambda: len(r := [x for x in run_records(ccli) if x["task"] in ids])
                      >= 12 and all(x["outcome"] != "intended" for x in r) and r, 30,
                      "12 run records, no intent")  # (the task is written done first)
    starts = [parse_date(r["started"]) for r in runs]
    most = most_in_any(starts, 2)
    print(f"\n[cluster rate] 12 tasks, api:3/2s, 3 processes on 3 nodes: at most {most} began "
          f"in any 2 s, the last {(max(starts) - min(starts)).total_seconds():.1f}s after the "
          f"first, per process {sorted(Counter(r['pid'] for r in runs).values())}")
    assert sorted(r["task"] for r in runs) == ids
    assert most == 3
    no_conflicts_left(ccli, ids)


def test_a_debounced_task_rewritten_through_three_nodes_runs_once(ccli, tmp_path):
    """Issue 25, item 5: a task with ``"debounce": 2`` written through node 1, then
    rewritten through node 2 and node 3 within the window: one run, after the last write,
    with what it said."""
    import time

    from ..acceptance.conftest import recorded, task_doc

    out = tmp_path / "runs.jsonl"
    start_pool(ccli, "quiet")
    doc = task_doc("digest", "quiet", out, debounce=2)
    for k in (1, 2, 3):
        with ccli.node_store(k) as store:
            if k > 1:
                time.sleep(0.5)
                doc = {**wait_until(lambda store=store: store.get_or_none("digest"), 10,
                                    "the task on this node"), "date": format_date(utcnow())}
                doc["job"] = {"name": "record", "arguments": [str(out), f"node{k}"]}
            store.put(doc)
    last = utcnow()
    wait_until(lambda: all_docs(ccli, ["digest"]).get("digest", {}).get("status") == "done",
               30, "digest done")
    time.sleep(1)
    [run] = recorded(out)
    from after.rules.dates import parse_date
    late = (parse_date(run["at"]) - last).total_seconds()
    print(f"\n[cluster debounce] written through nodes 1, 2, 3, 0.5 s apart, debounce 2 s: "
          f"1 run, {late:.2f}s after the last write, args {run['args']}")
    assert run["args"] == ["node3"] and 2 - 0.2 <= late < 4
    no_conflicts_left(ccli, ["digest"])
