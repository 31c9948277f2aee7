"""Catch-up policies across a pool of 3 processes of one worker name, started with the CLI
(issue 25, item 3): the name is paused (``after pause``), occurrences of two tasks every
second go by, the name is resumed (``after resume``). ``all`` then runs each occurrence of
the pause once across the pool, in turn; ``none`` runs none of them and records each
``missed``. The scenario is shared with the cluster (tests/cluster/test_cluster_catchup.py).
Figures printed: run with ``-s`` to see them."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

from after.rules.dates import format_date, parse_date, utcnow

from .conftest import recorded, task_doc, wait_for
from .test_pool import start_pool

SECOND = timedelta(seconds=1)
ALL_RUNS = 6  # the `all` series: 6 occurrences, about 3 of them during the pause
NONE_RUNS = 2  # the `none` series ends after 2 runs (its missed occurrences count none)


def paused_series(cli, name: str, out, write, read_docs, read_runs) -> dict:
    """Pause ``name``, write its two series (``write(docs)``) due during the pause, resume
    it 3.2 s later, wait until both are done; check what ran and what was recorded.
    ``read_docs(ids)``: the documents by id; ``read_runs()``: every run record."""
    paused = cli.run("pause", name)
    assert paused.returncode == 0 and "acknowledged by its 3 live processes" in paused.stdout, \
        paused.stdout + paused.stderr
    start = parse_date(format_date(utcnow() + 0.5 * SECOND))
    every = {"seconds": 1}
    docs = [{**task_doc(f"{name}-all", name, out, repeat={**every, "limit": ALL_RUNS},
                        catchup={"policy": "all"}), "date": format_date(start)},
            {**task_doc(f"{name}-none", name, out, repeat={**every, "limit": NONE_RUNS},
                        catchup={"policy": "none"}, max_delay=0.5),
             "date": format_date(start)}]
    write(docs)
    time.sleep(max(0.0, (start + 3.2 * SECOND - utcnow()).total_seconds()))
    resumed_at = utcnow()
    resumed = cli.run("resume", name)
    assert resumed.returncode == 0, resumed.stderr
    ids = [d["_id"] for d in docs]
    wait_for(lambda: all(d.get("status") == "done" for d in read_docs(ids).values()),
             timeout=30, what="both series done")
    assert recorded(out) and all(parse_date(r["at"]) >= resumed_at for r in recorded(out))
    # (a task is written done before its last run's record goes over its intent)
    records = wait_for(lambda: len(r := [x for x in read_runs() if x.get("task") in ids])
                       >= ALL_RUNS + NONE_RUNS + 3
                       and all(x["outcome"] != "intended" for x in r) and r,
                       timeout=20, what="run records, no intent")
    ran = {i: Counter(parse_date(r["date"]) for r in recorded(out) if r["id"] == i)
           for i in ids}
    by = {(r["task"], r["outcome"]): [] for r in records}
    for r in records:
        by[(r["task"], r["outcome"])].append(parse_date(r["occurrence_date"]))

    # all: each occurrence from the first, once, across the pool; none recorded missed
    every_one = [start + k * SECOND for k in range(ALL_RUNS)]
    assert sorted(ran[f"{name}-all"]) == every_one and set(ran[f"{name}-all"].values()) == {1}
    assert sorted(by[(f"{name}-all", "done")]) == every_one
    assert (f"{name}-all", "missed") not in by
    # none: what fell due during the pause is missed, each once, and never ran
    missed = sorted(by[(f"{name}-none", "missed")])
    during = [start + k * SECOND for k in range(3)]  # due at least 0.2 s before the resume
    assert missed[:3] == during and len(missed) == len(set(missed)), missed
    assert not set(missed) & set(ran[f"{name}-none"])
    assert sum(ran[f"{name}-none"].values()) == NONE_RUNS
    assert set(ran[f"{name}-none"].values()) == {1}
    pids = Counter(r["pid"] for r in recorded(out))
    print(f"\n[catch-up] name {name} paused 3.2 s: all ran {ALL_RUNS} occurrences once, none "
          f"recorded {len(missed)} missed and ran {NONE_RUNS}; runs per process "
          f"{sorted(pids.values())}")
    return {"missed": missed, "ran": ran}


def test_all_and_none_after_a_name_pause_across_3_processes(cli, tasks, tmp_path):
    start_pool(cli, "catchers", 3)

    def read_docs(ids):
        return {i: tasks.get(i) for i in ids}

    paused_series(cli, "catchers", tmp_path / "runs.jsonl", tasks.bulk_docs, read_docs,
                  lambda: list(tasks.find_all({"type": "run"}, db=f"{cli.db}_runs")))
