"""Catch-up policies with a real worker (issue 25 item 3), on pouchdb-server and CouchDB: a
repeating task whose date passed while no worker ran it (a worker that starts late, a name
paused) runs what its policy says, and each occurrence not run is recorded ``missed``."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from after.client import Client
from after.rules.dates import format_date, parse_date, utcnow

HOUR = timedelta(hours=1)


@pytest.fixture
def client(store, couch_url):
    with Client(couch_url, store.db, jobs=False) as client:
        yield client


def hourly_due_since(harness, docid: str, **fields):
    """A task every hour whose date is 5 h 30 min ago: occurrences 0 to 5 are due."""
    first = parse_date(format_date(utcnow() - 5 * HOUR - 30 * timedelta(minutes=1)))
    harness.put(docid, date=format_date(first), repeat={"hours": 1}, **fields)
    return [first + k * HOUR for k in range(6)]


def caught_up(harness, docid: str, runs: int, missed: int):
    """The task once it is back on time, its run records (done, then missed) by date."""
    def done():
        doc = harness.store.get(docid)
        info = doc.get("after") or {}
        return info.get("runs", 0) == runs and info.get("missed", 0) == missed \
            and parse_date(doc["date"]) > utcnow() and doc

    doc = harness.wait(done, timeout=20, what=f"{docid} caught up")
    records = harness.wait_runs(docid, runs + missed)
    by = {outcome: sorted(parse_date(r["occurrence_date"]) for r in records
                          if r["outcome"] == outcome) for outcome in ("done", "missed")}
    return doc, by


def test_latest_runs_the_latest_occurrence_due_once(harness):
    due = hourly_due_since(harness, "latest")
    worker = harness.start()
    doc, by = caught_up(harness, "latest", runs=1, missed=5)
    harness.settled(worker, "latest")
    assert by == {"done": [due[5]], "missed": due[:5]}
    [line] = harness.recorded()  # the job saw the latest occurrence's date
    assert parse_date(line["date"]) == due[5]
    assert parse_date(doc["date"]) == due[5] + HOUR  # then on from its next after now
    missed = [r for r in harness.runs("latest") if r["outcome"] == "missed"]
    assert missed[0]["error"]["message"].startswith("missed: ")
    assert "catch-up latest runs the latest occurrence due instead" in \
        missed[0]["error"]["message"]


def test_all_runs_each_occurrence_due_in_turn(harness):
    due = hourly_due_since(harness, "all", catchup={"policy": "all"})
    worker = harness.start()
    doc, by = caught_up(harness, "all", runs=6, missed=0)
    harness.settled(worker, "all")
    assert by["done"] == due
    assert [parse_date(line["date"]) for line in harness.recorded()] == due  # in date order
    assert parse_date(doc["date"]) == due[5] + HOUR


def test_all_with_max_and_window(harness):
    most = hourly_due_since(harness, "most", catchup={"policy": "all", "max": 2})
    near = hourly_due_since(harness, "near", catchup={"policy": "all", "window": 7200})
    harness.start()
    _, by_most = caught_up(harness, "most", runs=2, missed=4)
    _, by_near = caught_up(harness, "near", runs=2, missed=4)
    assert by_most == {"done": most[4:], "missed": most[:4]}
    assert by_near == {"done": near[4:], "missed": near[:4]}  # 1.5 h and 0.5 h late


def test_none_runs_no_missed_occurrence(harness):
    due = hourly_due_since(harness, "none", catchup={"policy": "none"})
    harness.put("fresh", repeat={"hours": 1}, catchup={"policy": "none"})  # due now: on time
    worker = harness.start()
    doc, by = caught_up(harness, "none", runs=0, missed=6)
    harness.wait_status("fresh", "waiting")
    harness.wait(lambda: harness.store.get("fresh")["after"].get("runs") == 1, what="fresh")
    harness.settled(worker, "none", "fresh")
    assert by == {"done": [], "missed": due}
    assert [line["id"] for line in harness.recorded()] == ["fresh"]
    assert parse_date(doc["date"]) == due[5] + HOUR


def test_a_worker_name_paused_then_resumed_catches_up_by_each_policy(harness, client):
    """A pause of the name is like a worker down: on resume, ``all`` runs every occurrence
    that fell due meanwhile, in turn, and ``latest`` one; then both are back on time."""
    client.pause_worker("w")
    worker = harness.start()
    start = parse_date(format_date(utcnow() + timedelta(seconds=0.5)))
    for docid, policy in (("every-all", "all"), ("every-latest", "latest")):
        harness.put(docid, date=format_date(start), repeat={"seconds": 1},
                    catchup={"policy": policy})
    time.sleep(4)
    client.resume_worker("w")
    def on_time(docid):  # its last run started within a second, its next is ahead
        doc = harness.store.get(docid)
        started = ((doc.get("after") or {}).get("last_run") or {}).get("started")
        return started is not None and parse_date(doc["date"]) > utcnow() \
            and parse_date(started) > utcnow() - timedelta(seconds=1)

    for docid in ("every-all", "every-latest"):
        harness.wait(lambda d=docid: on_time(d), timeout=20, what=f"{docid} on time again")
    time.sleep(1.5)  # a run or two on time
    harness.stop(worker)
    lines = harness.recorded()
    ran = {docid: [parse_date(line["date"]) for line in lines if line["id"] == docid]
           for docid in ("every-all", "every-latest")}
    # all: every occurrence from the first, once, in order, no gap
    assert ran["every-all"][0] == start
    assert ran["every-all"] == [start + timedelta(seconds=k)
                                for k in range(len(ran["every-all"]))]
    # latest: the occurrences of the pause but the last were recorded missed, not run
    records = harness.runs("every-latest")
    missed = sorted(parse_date(r["occurrence_date"]) for r in records
                    if r["outcome"] == "missed")
    assert missed and missed[0] == start
    assert not set(missed) & set(ran["every-latest"])
    assert len(ran["every-latest"]) < len(ran["every-all"])


def test_a_task_paused_then_resumed_runs_none_of_its_pause_whatever_its_policy(harness,
                                                                                client):
    """The user's pause of a task says "do not run it": ``all`` does not run the
    occurrences of the pause either (``after backfill`` does, on demand)."""
    harness.start()
    harness.put("held-back", repeat={"seconds": 1}, catchup={"policy": "all"},
                date=format_date(utcnow() + timedelta(seconds=30)))
    client.pause("held-back")
    harness.wait_status("held-back", "paused")
    time.sleep(0.1)
    doc = client.get("held-back")
    doc["date"] = format_date(utcnow() - timedelta(seconds=5))  # as if paused 5 s ago
    harness.store.put(doc)
    resumed = client.resume("held-back")
    assert parse_date(resumed["date"]) > utcnow() - timedelta(seconds=1)
    harness.wait(lambda: harness.store.get("held-back")["after"].get("runs"), what="a run")
    assert all(parse_date(line["date"]) >= parse_date(resumed["date"])
               for line in harness.recorded())


def test_the_audit_of_a_worker_name_paused_then_resumed(harness, client):
    """After a pause of the name is over, the audit reads the records of the one catch-up
    made on resume: with the default policy each occurrence of the pause but the latest is
    ``missed`` (and why), the latest ran late, on resume; none is ``never``."""
    client.pause_worker("w")
    worker = harness.start()
    start = parse_date(format_date(utcnow() + timedelta(seconds=0.5)))
    harness.put("audited", date=format_date(start), repeat={"seconds": 1})
    time.sleep(3)
    client.resume_worker("w")
    resumed = utcnow()
    harness.wait(lambda: harness.store.get("audited").get("after", {}).get("runs"),
                 timeout=20, what="audited caught up")
    harness.stop(worker)
    ran = min(parse_date(r["occurrence_date"]) for r in harness.runs("audited")
              if r["outcome"] == "done")
    assert ran >= resumed - timedelta(seconds=1)
    report = client.audit(task="audited", start=start, end=ran, late=0)
    [audit] = report.tasks
    verdicts = [entry.verdict for entry in audit.entries]
    assert len(verdicts) >= 3 and set(verdicts[:-1]) == {"missed"}, verdicts
    assert verdicts[-1] == "late", verdicts
    assert audit.entries[0].date == start
    assert "catch-up latest runs the latest occurrence due instead" in audit.entries[0].reason
    assert report.counts["never"] == 0
