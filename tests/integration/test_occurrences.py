"""Run now, backfill, jitter and occurrence ids with a worker, against the real server
(pouchdb-server and CouchDB)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from after.client import Client, StateError, TaskError
from after.couch.store import Conflict, Forbidden
from after.rules import occurrence as occ
from after.rules import task as rules
from after.rules.dates import format_date, parse_date, utcnow


@pytest.fixture
def client(store, couch_url):
    with Client(couch_url, store.db) as client:
        yield client


def hourly(harness, docid="hourly", delay=3600.0, **repeat):
    """A task repeating every hour whose next run is ``delay`` seconds away."""
    return harness.put(docid, delay=delay, repeat={"hours": 1, **repeat})


def test_run_now_runs_once_more_and_keeps_the_schedule(harness, client, store):
    parent = hourly(harness)
    harness.start()
    asked = client.run_now("hourly")
    assert asked["_id"].startswith("hourly:manual:")
    harness.wait_status(asked["_id"], "done")
    [line] = harness.recorded()
    assert line["id"] == asked["_id"]
    when = parse_date(asked["date"])
    assert line["occurrence"] == occ.key("hourly", when, occ.MANUAL)
    after = store.get("hourly")
    assert (after["date"], after["status"]) == (parent["date"], "waiting")  # untouched
    # run records are written by their own thread, after the task: wait for them
    [run] = harness.wait(lambda: client.runs("hourly"), what="the run record")
    assert (run["kind"], run["parent"], run["outcome"]) == ("manual", "hourly", "done")
    assert run["occurrence"] == line["occurrence"]
    assert run["occurrence_date"] == asked["date"]
    # a second request is a second extra run
    second = client.run_now("hourly")
    assert second["_id"] != asked["_id"]
    harness.wait_status(second["_id"], "done")
    assert len(harness.recorded()) == 2
    runs = harness.wait(lambda: len(r := client.runs("hourly")) == 2 and r, what="2 records")
    assert [r["kind"] for r in runs] == ["manual", "manual"]


def test_backfill_runs_each_occurrence_of_the_window_once(harness, client, store):
    parent = hourly(harness, delay=1800)
    first = parse_date(parent["date"])
    wanted = [first - timedelta(hours=k) for k in (3, 2, 1)]
    start, end = wanted[0] - timedelta(minutes=5), wanted[-1]  # --to is inclusive
    harness.start()
    done = client.backfill("hourly", start, end)
    assert done["occurrences"] == [format_date(t) for t in wanted]
    assert sorted(done["created"]) == [f"hourly:backfill:{format_date(t)}" for t in wanted]
    assert done["existing"] == []
    for docid in done["created"]:
        harness.wait_status(docid, "done")
    lines = harness.recorded()
    # the job's task.date is the occurrence's, and its id that occurrence's
    assert sorted(parse_date(line["date"]) for line in lines) == wanted
    assert {line["occurrence"] for line in lines} == {occ.key("hourly", t) for t in wanted}
    runs = harness.wait(lambda: len(r := client.runs("hourly")) == 3 and r, what="3 records")
    assert sorted(r["occurrence_date"] for r in runs) == [format_date(t) for t in wanted]
    assert {r["kind"] for r in runs} == {"backfill"}
    # idempotent by occurrence: asked again (and for a wider window), none runs twice
    again = client.backfill("hourly", start - timedelta(hours=1), end)
    assert again["created"] == [f"hourly:backfill:{format_date(first - timedelta(hours=4))}"]
    assert sorted(again["existing"]) == sorted(done["created"])
    harness.wait_status(again["created"][0], "done")
    harness.settled(harness.workers[0][0], *done["created"], *again["created"])
    assert len(harness.recorded()) == 4
    assert store.get("hourly")["date"] == parent["date"]  # the schedule is untouched


def test_backfill_refuses_what_it_cannot_do(harness, client):
    hourly(harness)
    harness.put("once", delay=60)
    now = utcnow()
    with pytest.raises(TaskError, match=r"^from: the window .* holds more than 1000 "):
        client.backfill("hourly", now - timedelta(days=60), now)
    with pytest.raises(TaskError, match=r"^to: .* is in the future"):
        client.backfill("hourly", now - timedelta(days=1), now + timedelta(hours=1))
    with pytest.raises(TaskError, match=r"^to: .* is before from"):
        client.backfill("hourly", now - timedelta(days=1), now - timedelta(days=2))
    with pytest.raises(TaskError, match=r"^from: "):
        client.backfill("hourly", "yesterday", now)
    with pytest.raises(StateError, match="does not repeat"):
        client.backfill("once", now - timedelta(days=1), now)
    extra = client.run_now("hourly")
    with pytest.raises(StateError, match="is itself a manual run of task hourly"):
        client.run_now(extra["_id"])
    # nothing was written for any of them
    assert not [d for d in harness.store.prefixed("hourly:backfill:")]


def test_an_extra_run_by_plain_http_is_one_document_write(harness, store):
    """CouchDB's HTTP API is the public API: run now is one PUT, and a second PUT of the
    same occurrence is a 409, so it runs once."""
    hourly(harness)
    when = format_date(utcnow())
    doc = {"_id": f"hourly:manual:{when}", "worker": "w", "date": when,
           "job": {"name": "record", "arguments": [str(harness.record_file)]},
           "status": "waiting",
           "occurrence": {"task": "hourly", "kind": "manual", "date": when}}
    store.put(dict(doc))
    with pytest.raises(Conflict):
        store.put(dict(doc))
    with pytest.raises(Forbidden, match="occurrence: the id must be"):
        store.put({**doc, "_id": "hourly-now"})
    harness.start()
    harness.wait_status(doc["_id"], "done")
    assert [line["id"] for line in harness.recorded()] == [doc["_id"]]


def test_jitter_moves_each_run_to_its_jittered_instant(harness, client, store):
    doc = harness.put("jittery", delay=1.5, repeat={"seconds": 2, "jitter": 1.5, "limit": 3})
    harness.start()
    harness.wait_status("jittery", "done", timeout=30)
    runs = harness.wait(lambda: len(r := client.runs("jittery")) == 3 and r, what="3 records")
    runs.sort(key=lambda r: r["number"])
    assert len(runs) == 3
    nominal = [parse_date(doc["date"]) + timedelta(seconds=2 * k) for k in range(3)]
    for run, date in zip(runs, nominal, strict=True):
        due = occ.jittered("jittery", date, 1.5)
        assert run["occurrence_date"] == format_date(date)
        assert run["scheduled"] == format_date(due)  # held for its jittered instant
        assert parse_date(run["started"]) >= due  # and not run before it
        assert run["occurrence"] == occ.key("jittery", date)
    assert len({parse_date(r["scheduled"]) - d for r, d in zip(runs, nominal)}) > 1


def test_every_retry_of_an_occurrence_keeps_its_id(harness, client):
    doc = harness.put("flaky", job="fail", arguments=["boom"], retry={"limit": 2, "delay": 0.2})
    harness.start()
    harness.wait_status("flaky", "error", timeout=20)
    runs = harness.wait(lambda: len(r := client.runs("flaky")) == 3 and r, what="3 records")
    assert [r["attempt"] for r in runs] == [3, 2, 1]
    assert {r["occurrence"] for r in runs} == {occ.key("flaky", parse_date(doc["date"]))}


def test_show_and_the_task_document_keep_the_nominal_date(client, store):
    client.schedule("hello", worker="w", every="6h", jitter=3600, id="spread",
                    at=utcnow() + timedelta(days=1))
    doc = store.get("spread")
    assert doc["repeat"] == {"hours": 6, "jitter": 3600}
    runs = Client.next_runs(doc, 3)
    assert runs[0] == occ.jittered("spread", parse_date(doc["date"]), 3600)
    with pytest.raises(TaskError, match="^jitter: applies to a repeating task only"):
        client.schedule("hello", worker="w", jitter=5)
    with pytest.raises(TaskError, match="^repeat: jitter must be a number of seconds"):
        client.schedule("hello", worker="w", every="1h", jitter=-5)
    assert rules.parse(doc).due == runs[0]


def test_the_documented_plain_http_write_is_a_valid_extra_run(store):
    """The run-now document of docs/tasks.rst, PUT as written to the real server."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "tasks.rst").read_text()
    block = text.split(".. code-block:: http\n\n", 1)[1].split("\n\n", 1)[0]
    request, body = block.strip().split("\n", 1)
    method, path = request.split()
    doc = {"_id": path.split("/", 2)[2], **json.loads(body)}
    assert method == "PUT" and path.startswith("/tasks/")
    spec = rules.parse(doc)
    assert (spec.occurrence.task, spec.occurrence.kind) == ("nightly-sync", "manual")
    store.put(dict(doc))
    with pytest.raises(Conflict):  # the same occurrence asked twice: one document
        store.put(dict(doc))


def test_the_views_key_a_jittered_task_by_its_jittered_instant(store):
    """The workers' ``due`` view (what a poll finds) and the dashboard's ``upcoming`` view
    (its timeline) run the jitter in the server's JavaScript and agree with Python."""
    from after.dashboard import design as dashboard
    from after.rules.dates import to_ms

    dashboard.install(store)
    docs = [{"_id": f"j{n}", "worker": "views", "date": "2027-01-04T00:00:00.000Z",
             "job": {"name": "hello"}, "status": "waiting",
             "repeat": {"hours": 1, "jitter": 3600}} for n in range(5)]
    docs.append({**docs[0], "_id": "plain", "repeat": {"hours": 1}})
    store.bulk_docs(docs)
    wanted = sorted((to_ms(rules.parse(doc).due), doc["_id"]) for doc in docs)
    assert len({ms for ms, _ in wanted}) == 6  # each moved differently, "plain" not at all
    due = store.view("after", "due", startkey=["views", "waiting", 0],
                     endkey=["views", "waiting", {}])
    assert [(row["key"][2], row["id"]) for row in due] == wanted
    upcoming = store.view("dashboard", "upcoming", reduce=False)
    assert sorted((row["key"], row["id"]) for row in upcoming) == wanted


def test_an_isolated_run_gets_its_occurrence_id_too(harness):
    doc = harness.put("alone", isolation="process")
    harness.start()
    harness.wait_status("alone", "done", timeout=30)
    [line] = harness.recorded()
    assert line["child"] is not None  # it ran in a child process
    assert line["occurrence"] == occ.key("alone", parse_date(doc["date"]))


def test_backfill_leaves_the_task_its_own_pending_occurrence(harness, client, store):
    """Issue 24 item 6: a task every minute dated 10 minutes ago, its worker name paused,
    backfilled from its date to now, then resumed: each occurrence of the window runs once
    (its own overdue date ran twice, as the task and as a backfill copy, with one id). The
    task's own is the one its catch-up runs (issue 25: the latest due, the series' last
    here, so that it stays the latest however long the test takes)."""
    now = utcnow()
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=10)
    window = [first + timedelta(minutes=k) for k in range(11)]
    client.pause_worker("w")
    harness.start()
    harness.put("minutely", repeat={"minutes": 1, "until": format_date(window[-1])},
                date=format_date(first))
    done = client.backfill("minutely", first, now)  # --to now
    assert done["occurrences"] == [format_date(t) for t in window]
    client.resume_worker("w")
    for docid in done["created"]:
        harness.wait_status(docid, "done")
    moved = harness.wait_status("minutely", "done")
    assert moved["after"]["last_run"]["outcome"] == "done"
    harness.settled(harness.workers[0][0], *done["created"])
    lines = harness.recorded()
    assert [line["occurrence"] for line in lines].count(occ.key("minutely", window[-1])) == 1
    assert sorted(parse_date(line["date"]) for line in lines) == window
    # the task ran its own pending occurrence; the backfill asked for the other ten
    assert done["pending"] == [format_date(window[-1])]
    assert sorted(done["created"]) == [f"minutely:backfill:{format_date(t)}"
                                       for t in window[:-1]]
    # the ten the task did not run are recorded missed by its catch-up, and backfilled
    missed = [r for r in harness.runs("minutely") if r["outcome"] == "missed"]
    assert sorted(r["occurrence_date"] for r in missed) == [format_date(t)
                                                           for t in window[:-1]]
    # asked again, the one the task ran is a past occurrence like the others: the ten
    # copies are there, and the eleventh is asked for now (a run again, by request)
    again = client.backfill("minutely", first, window[-1])
    assert again["pending"] == []
    assert again["created"] == [f"minutely:backfill:{format_date(window[-1])}"]
