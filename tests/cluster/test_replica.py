"""A worker on a replica (issue 25 item 7), with two real CouchDB single nodes: a central one
and a site's. ``after replicate shop`` at the site sets up the continuous, filtered
replications; the site's worker runs the tasks posted centrally, also while the link is down
(the test removes the replications and writes them again); the results and run records flow
back when it returns; a task edited on both sides meanwhile is resolved to CouchDB's winner
on both; and each occurrence ran once across the site's pool of 3 processes (the name is
served from the site only).

In tests/cluster beside the cluster's tests: it needs CouchDB nodes of its own (started here,
on free ports, stopped by pid), so it is collected where the CouchDB release is, never
skipped."""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from after.client import Client
from after.couch.store import Store
from after.rules.dates import format_date, parse_date, utcnow

from ..acceptance.conftest import Cli, recorded, wait_for_peers
from ..servers import CouchDBNode
from .conftest import wait_until

DB = "tasks"
FAST = {"AFTER_WORKER_POLL": "1", "AFTER_WORKER_HEARTBEAT": "0.5", "AFTER_WORKER_LEASE": "3"}
POOL = 3  # processes of the name at the site
SPREAD = 9  # one-off tasks run while the link is down, spread over the pool


@pytest.fixture
def nodes(tmp_path):
    """Two CouchDB single nodes, central and site, stopped by pid at the end."""
    started = []
    try:
        for name in ("central", "site"):
            node = CouchDBNode(tmp_path / name)
            node.start()
            started.append(node)
        yield started
    finally:
        for node in started:
            node.stop()


def documented(central: CouchDBNode, site: CouchDBNode) -> str:
    """What docs/replicas.rst shows ``after replicate shop`` print, for these two nodes."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "replicas.rst").read_text()
    block = text.split("   $ after replicate shop\n", 1)[1].split("\n\n", 1)[0]
    lines = [line[3:] for line in block.splitlines()]
    return "\n".join(lines).replace(
        "https://central.example.com:6984", f"http://127.0.0.1:{central.port}").replace(
        "http://127.0.0.1:5984", f"http://127.0.0.1:{site.port}") + "\n"


def task(docid: str, out: Path, delay: float, **fields) -> dict:
    return {"_id": docid, "worker": "shop", "status": "waiting", "job": {
        "name": "record", "arguments": [str(out)]},
        "date": format_date(utcnow() + timedelta(seconds=delay)), **fields}


def test_a_site_runs_its_tasks_while_the_link_is_down(nodes, tmp_path):
    central_node, site_node = nodes
    out = tmp_path / "runs.jsonl"
    (tmp_path / "c").mkdir()
    (tmp_path / "s").mkdir()
    at_centre = Cli(central_node.url, DB, tmp_path / "c", tmp_path)
    at_site = Cli(site_node.url, DB, tmp_path / "s", tmp_path)
    assert at_centre.run("setup").returncode == 0
    link = at_site.run("replicate", "shop", AFTER_CENTRAL_URL=central_node.url)
    assert link.returncode == 0, link.stderr
    assert "secret" not in link.stdout + link.stderr  # never a password
    assert link.stdout == documented(central_node, site_node)
    workers = [at_site.spawn("start", "shop", **FAST) for _ in range(POOL)]
    wait_for_peers(at_site, "shop", POOL)  # they agree who claims which partition
    central, site = Store(central_node.url, DB), Store(site_node.url, DB)
    # the runs recorded (an intent, written when a task is held, is not a run)
    runs_at = lambda store, docid: [r for r in store.find_all(  # noqa: E731
        {"task": docid}, db=f"{DB}_runs") if r.get("outcome") != "intended"]
    try:
        # online: posted centrally, run at the site, its end and record back at the centre
        central.put(task("first", out, 1))
        wait_until(lambda: central.get("first")["status"] == "done", 30, "first, done")
        wait_until(lambda: runs_at(central, "first"), 10, "its run record at the centre")
        # the site's processes are seen at the centre (their heartbeats, never a lease; a
        # replication starts within CouchDB's startup jitter, 5 s at most)
        beats = wait_until(lambda: len(seen := list(central.find_all(
            {"name": "shop"}, db=f"{DB}_workers"))) == POOL and seen, 15,
            "the heartbeats of the site's 3 processes at the centre")
        assert {d["type"] for d in beats} == {"worker"}

        # tasks due later, and one the centre will edit while the site runs it
        central.put(task("later-once", out, 10))
        central.put(task("later-every", out, 8, repeat={"seconds": 1, "limit": 4}))
        spread = [f"later-{k}" for k in range(SPREAD)]
        central.bulk_docs([task(docid, out, 9) for docid in spread])
        central.put(task("edited", out, 1, repeat={"seconds": 1}))
        for docid in ("later-once", "later-every", "edited", *spread):
            wait_until(lambda d=docid: site.get_or_none(d), 15, f"{docid} at the site")
        wait_until(lambda: site.get("edited").get("after", {}).get("runs"), 15, "edited runs")

        # the link goes down
        down = at_site.run("replicate", "shop", "--stop")
        assert down.returncode == 0 and "5 replications" in down.stdout, down.stdout
        time.sleep(1)
        with Client(central_node.url, DB, jobs=False) as client:
            client.cancel("edited")  # centrally, while apart: a conflicting edit
        later = ("later-every", "later-once", *spread)
        wait_until(lambda: all(site.get(d)["status"] == "done" for d in later), 30,
                   "the runs while down")
        # ...which ran on time at the site, while the centre knew nothing of them, shared
        # by the site's processes
        lines = [line for line in recorded(out) if line["id"].startswith("later")]
        assert len(lines) == 5 + SPREAD
        assert len({line["pid"] for line in lines}) >= 2, lines
        for line in lines:
            assert parse_date(line["at"]) - parse_date(line["date"]) < timedelta(seconds=1.5)
        assert central.get("later-once")["status"] == "waiting"
        assert central.get("edited")["status"] == "canceled"
        assert runs_at(central, "later-every") == []

        # the link returns: results and run records flow back, conflicts are resolved
        back = at_site.run("replicate", "shop", AFTER_CENTRAL_URL=central_node.url)
        assert back.returncode == 0 and back.stdout.count("(written)") == 5, back.stdout
        wait_until(lambda: all(central.get(d)["status"] == "done" for d in later), 30,
                   "results back")
        wait_until(lambda: len(runs_at(central, "later-every")) == 4
                   and all(len(runs_at(central, d)) == 1 for d in later[1:]), 30,
                   "run records back")

        def resolved():  # one live revision left, the same on both sides
            here = site.get("edited", conflicts=True)
            there = central.get("edited", conflicts=True)
            return "_conflicts" not in here and "_conflicts" not in there \
                and here["_rev"] == there["_rev"] and here

        edited = wait_until(resolved, 30, "the conflict resolved on both sides")
        # CouchDB's winner, the site's longer history of runs: the centre's cancel lost
        assert edited["status"] != "canceled" and edited["after"]["runs"] >= 2
        leaves = site.leaves("edited")
        assert sum(not leaf.get("_deleted") for leaf in leaves) == 1
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(30)
        central.close()
        site.close()
    # exactly once across the pool: the name is served from the site only
    occurrences = Counter((line["id"], line["occurrence"]) for line in recorded(out))
    assert occurrences and max(occurrences.values()) == 1
