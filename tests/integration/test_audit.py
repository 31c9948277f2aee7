"""``after audit`` against what a real worker did, on pouchdb-server and CouchDB: a task
every 2 seconds run by a worker (the Worker of the test harness), its first occurrence missed
on purpose (``max_delay``), one of its runs recorded twice by a record written by hand, and
the occurrences after the worker stopped never run: the audit says each."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from after import audit as a
from after.client import Client, TaskError
from after.rules import occurrence as occ
from after.rules.dates import format_date, parse_date, utcnow

PERIOD = 2.0
LATE = 2.0  # generous: a run on this shared machine starts within milliseconds of its date


@pytest.fixture
def client(store, couch_url):
    with Client(couch_url, store.db) as client:
        yield client


def test_the_audit_says_what_a_worker_did(harness, client, store):
    harness.start()  # ready first: a slow start would miss the second occurrence too
    first = parse_date(format_date(utcnow() - timedelta(seconds=1.5)))  # past max_delay
    harness.put("every2", repeat={"seconds": int(PERIOD)}, max_delay=1,
                date=format_date(first))
    runs = harness.wait_runs("every2", count=4, timeout=30)  # the missed one, then 3 runs
    harness.stop()
    assert runs[0]["outcome"] == "missed"
    done = [r for r in runs if r["outcome"] == "done"]
    # one of the runs recorded twice: a record written by hand for the same occurrence
    doubled = done[1]
    store.put({**{k: v for k, v in doubled.items() if k != "_rev"},
               "_id": doubled["_id"] + "-again", "number": doubled["number"] + 1000,
               "process": "elsewhere@host:1:x"}, db=f"{store.db}_runs")
    # the worker is gone: let two more occurrences fall due, and pass the late threshold
    stopped = utcnow()
    time.sleep(2 * PERIOD + LATE)
    now = utcnow()

    report = client.audit("w", start=first, end=now, late=LATE, now=now)
    [task] = report.tasks
    assert task.task == "every2" and task.error is None and task.extra == ()
    verdicts = {e.date: e for e in task.entries}
    assert verdicts[first].verdict == "missed"
    assert verdicts[first].reason.startswith("missed: would have started")
    twice = verdicts[parse_date(doubled["occurrence_date"])]
    assert (twice.verdict, twice.reason) == ("twice", "ran 2 runs of attempt 1")
    for run in done:
        entry = verdicts[parse_date(run["occurrence_date"])]
        assert entry.verdict == ("twice" if run is doubled else "on_time"), entry
        assert run["_id"] in entry.runs
    # the job's own record of each run names the same occurrences
    assert {line["occurrence"] for line in harness.recorded()} == {
        occ.key("every2", e.date) for e in task.entries if e.verdict in ("on_time", "twice")}
    # the occurrences after it stopped, due past the threshold, never ran; the first of them
    # still waits in the task
    after_stop = [e for e in task.entries if e.due > stopped + timedelta(seconds=0.5)
                  and e.due < now - timedelta(seconds=LATE)]
    assert len(after_stop) >= 1 and {e.verdict for e in after_stop} == {"never"}
    counts = report.counts
    assert counts["missed"] == 1 and counts["twice"] == 1 and counts["on_time"] >= 2
    assert counts["never"] >= 2 and counts["late"] == 0
    assert sum(counts[v] for v in a.VERDICTS) == len(task.entries)
    # one task alone, by its id, says the same
    alone = client.audit(task="every2", start=first, end=now, late=LATE, now=now)
    assert [e.as_json() for e in alone.tasks[0].entries] == [e.as_json() for e in task.entries]


def test_extra_runs_are_read_with_their_task(harness, client, store):
    """A backfill and a manual run (documents of their own, run records naming the task as
    ``parent``) are read with the task, by name and by id."""
    start = utcnow() - timedelta(hours=3)
    harness.put("hourly", repeat={"hours": 1}, date=format_date(start + timedelta(hours=4)),
                after={"anchor": format_date(start)})
    harness.start()
    backfilled = client.backfill("hourly", start, start + timedelta(minutes=5))["created"]
    manual = client.run_now("hourly")["_id"]
    for docid in (*backfilled, manual):
        harness.wait_status(docid, "done")
    harness.wait(lambda: len(client.runs("hourly")) == 2, what="2 run records")
    harness.stop()
    now = utcnow()
    for report in (client.audit("w", start=start, end=now, now=now),
                   client.audit(task="hourly", start=start, end=now, now=now)):
        [task] = report.tasks
        assert [e.verdict for e in task.entries] == ["backfilled", "never", "never", "pending"]
        assert [x["kind"] for x in task.extra] == ["manual"]


def test_bad_windows_are_refused(client, store):
    with pytest.raises(TaskError, match="to: .* is before from"):
        client.audit(start="2026-01-02", end="2026-01-01")
    with pytest.raises(TaskError, match="from: 'yesterday' is not"):
        client.audit(start="yesterday")
    with pytest.raises(TaskError, match="late: must be 0 or more seconds"):
        client.audit(late=-1)
    with pytest.raises(TaskError, match="worker: "):
        client.audit("not a name")


def test_the_metrics_count_missed_and_doubled_occurrences(harness, store):
    """``/metrics`` of a worker: the gauges of its name's audit (missed or never run, run
    twice), made at a scrape."""
    import httpx

    from after.metrics import serve_metrics

    worker = harness.start()  # ready first, as above
    first = parse_date(format_date(utcnow() - timedelta(seconds=1.5)))
    harness.put("every2", repeat={"seconds": int(PERIOD)}, max_delay=1,
                date=format_date(first))
    runs = harness.wait_runs("every2", count=2, timeout=30)  # the missed one, then a run
    done = next(r for r in runs if r["outcome"] == "done")
    store.put({**{k: v for k, v in done.items() if k != "_rev"}, "_id": done["_id"] + "-2"},
              db=f"{store.db}_runs")
    server = serve_metrics(worker, 0)
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=30).text
    finally:
        server.shutdown()
    assert 'after_audit_missed_occurrences{worker="w"} 1.0' in text
    assert 'after_audit_duplicate_occurrences{worker="w"} 1.0' in text


def test_the_run_records_are_read_through_their_indexes(store):
    """The audit's queries of ``<db>_runs`` use the indexes ``after setup`` makes, not a
    scan of every record (``_explain`` on both servers)."""
    window = {"$gte": "2026-01-01T00:00:00.000Z", "$lte": "2026-01-02T00:00:00.000Z"}
    for selector, name in (({"worker": "w", "scheduled": window}, "by-worker-scheduled"),
                           ({"task": "t", "scheduled": window}, "by-task-scheduled")):
        explained = store.request("POST", f"{store.db}_runs/_explain",
                                  body={"selector": selector}).json()
        assert explained["index"]["name"] == name, explained["index"]
