"""Pause and resume (of a task, of a worker name), overlap and priority, with a worker in a
thread against each real test server."""

from __future__ import annotations

import time
from datetime import timedelta

from after.client import Client
from after.couch import pausing
from after.couch.store import Conflict
from after.rules.dates import format_date, parse_date, utcnow


def client_of(harness) -> Client:
    return Client(harness.url, harness.store.db)


def dates_run(harness, docid: str) -> list:
    return [parse_date(r["date"]) for r in harness.recorded() if r["id"] == docid]


# -- a task -----------------------------------------------------------------------------------


def test_a_paused_task_is_let_go_and_a_plain_resume_runs_no_catch_up(harness, store):
    worker = harness.start()
    harness.put("tick", delay=0.3, repeat={"seconds": 1})
    harness.wait(lambda: len(dates_run(harness, "tick")) >= 1, what="a first run")
    with client_of(harness) as client:
        client.pause("tick")
    harness.wait(lambda: "tick" not in worker.held, what="the task let go")
    time.sleep(0.3)  # a run whose start was already written when the pause came may end
    ran = len(dates_run(harness, "tick"))
    time.sleep(3)  # three occurrences fall in the pause
    assert len(dates_run(harness, "tick")) == ran  # nothing ran while paused
    paused = store.get("tick")
    assert paused["status"] == "paused" and "owner" not in paused["after"]

    paused["status"] = "waiting"  # a resume with plain HTTP
    resumed_at = utcnow()
    store.put(paused)
    harness.wait(lambda: len(dates_run(harness, "tick")) > ran, what="a run after the resume")
    after_resume = dates_run(harness, "tick")[ran]
    # its next occurrence after now: none of those that fell in the pause ran late
    assert after_resume > resumed_at - timedelta(seconds=0.05), (after_resume, resumed_at)
    assert after_resume - resumed_at <= timedelta(seconds=1.05)
    assert "paused" not in store.get("tick")["after"]


def test_a_pause_and_a_resume_written_with_plain_http_run_no_catch_up(harness, store):
    """A pause written with curl (no ``after.paused``) is stamped by the worker that sees
    it; the ``waiting`` written later is a resume: no catch-up run of what fell in it."""
    worker = harness.start()
    harness.put("curl", delay=0.3, repeat={"seconds": 1})
    harness.wait(lambda: len(dates_run(harness, "curl")) >= 1, what="a first run")
    while True:
        doc = store.get("curl")
        try:
            store.put({**doc, "status": "paused"})  # the pause, with plain HTTP
            break
        except Conflict:
            continue
    stamped = harness.wait(lambda: (d := store.get("curl"))["after"].get("paused") and d,
                           what="the pause stamped by the worker")
    assert stamped["status"] == "paused" and "curl" not in worker.held
    time.sleep(0.3)  # a run already going when the pause came may end
    ran = len(dates_run(harness, "curl"))
    time.sleep(2.5)  # occurrences fall in the pause
    assert len(dates_run(harness, "curl")) == ran
    paused = store.get("curl")
    paused["status"] = "waiting"  # the resume, with plain HTTP
    resumed_at = utcnow()
    store.put(paused)
    harness.wait(lambda: len(dates_run(harness, "curl")) > ran, what="a run after the resume")
    after_resume = dates_run(harness, "curl")[ran]
    assert after_resume > resumed_at - timedelta(seconds=0.05), (after_resume, resumed_at)
    assert "paused" not in store.get("curl")["after"]


def test_a_task_paused_while_it_runs_finishes_and_stays_paused(harness, store):
    harness.start()
    harness.put("long", job="record_slowly", arguments=[str(harness.record_file), 1.5],
                delay=0.2, repeat={"minutes": 1})
    harness.wait(lambda: dates_run(harness, "long"), what="the run to begin")
    harness.wait_status("long", "running")  # shown running (past ``visible``)
    with client_of(harness) as client:
        doc = client.pause("long")
    assert doc["status"] == "paused" and doc["after"].get("started")
    done = harness.wait(lambda: (d := store.get("long"))["after"].get("runs") == 1 and d,
                        what="the run recorded")
    assert done["status"] == "paused"
    assert done["after"]["last_run"]["outcome"] == "done" and "owner" not in done["after"]
    [run] = harness.wait(lambda: harness.runs("long"), what="the run record")
    assert run["outcome"] == "done"
    with client_of(harness) as client:
        resumed = client.resume("long")
    assert resumed["status"] == "waiting" and parse_date(resumed["date"]) > utcnow()


def test_a_task_paused_just_before_its_date_does_not_run(harness, store):
    """Issue 25 item 2, as found: a task paused 0.97 s before its date still ran. Held on
    the timer (its run fenced for its date), paused 0.97, 0.5 and 0.2 s before: none runs,
    and each stays paused with nothing written by the worker."""
    worker = harness.start()
    puts = {f"p{int(margin * 100)}": (margin, harness.put(f"p{int(margin * 100)}",
                                                          delay=1.5 + i * 1.2))
            for i, margin in enumerate((0.97, 0.5, 0.2))}
    harness.wait(lambda: all(docid in worker.held for docid in puts), what="all held")
    with client_of(harness) as client:
        for docid, (margin, put) in puts.items():
            harness.past(put["date"], margin=-margin)
            assert client.pause(docid)["status"] == "paused"
    last = max(put["date"] for _, put in puts.values())
    harness.past(last, margin=0.5)
    harness.settled(worker, *puts)
    assert harness.recorded() == []
    for docid in puts:
        doc = store.get(docid)
        assert doc["status"] == "paused" and not doc["after"].get("runs"), doc


def test_a_one_off_task_whose_date_passed_in_the_pause_runs_on_resume(harness, store):
    harness.start()
    harness.put("once", delay=1.0)
    with client_of(harness) as client:
        client.pause("once")
        harness.past(store.get("once")["date"], margin=0.5)
        assert harness.recorded() == []
        client.resume("once")
    harness.wait_status("once", "done")
    assert len(dates_run(harness, "once")) == 1


# -- a worker name --------------------------------------------------------------------------


def test_a_paused_name_starts_nothing_lets_go_what_it_held_and_resumes(harness, store):
    worker = harness.start()
    harness.put("held", delay=3)
    harness.wait(lambda: "held" in worker.held, what="the task held")
    with client_of(harness) as client:
        client.pause_worker("w")
        assert list(client.paused_workers()) == ["w"]
        harness.wait(lambda: worker.status()["paused"], timeout=3, what="the pause seen")
        harness.wait_status("held", "waiting")
        assert "held" not in worker.held
        new = harness.put("new", delay=0)
        time.sleep(1.5)
        assert store.get("new")["status"] == "waiting" and harness.recorded() == []
        assert worker.status()["paused"] is True
        harness.past(store.get("held")["date"])
        assert harness.recorded() == []
        assert client.resume_worker("w") is True
        assert client.resume_worker("w") is False
    harness.wait_status("new", "done")
    harness.wait_status("held", "done")
    assert sorted(r["id"] for r in harness.recorded()) == ["held", "new"]
    assert new["_id"] == "new"


def test_a_process_started_while_its_name_is_paused_starts_nothing(harness, store):
    pausing.pause(store, f"{store.db}_workers", "w", utcnow())
    worker = harness.start()
    harness.wait(lambda: worker.status()["paused"], timeout=3, what="the pause seen")
    harness.put("early", delay=0)
    time.sleep(1.5)
    assert store.get("early")["status"] == "waiting"
    pausing.resume(store, f"{store.db}_workers", "w")
    harness.wait_status("early", "done")


# -- overlap --------------------------------------------------------------------------------


def outcomes(harness, docid: str) -> list[tuple[str, str]]:
    return [(r["outcome"], r["scheduled"]) for r in
            sorted(harness.runs(docid), key=lambda r: parse_date(r["scheduled"]))]


def test_skip_records_the_occurrences_that_fell_during_a_run(harness, store):
    harness.start()
    first = parse_date(format_date(utcnow() + timedelta(seconds=0.5)))
    harness.put("slow", job="record_slowly", arguments=[str(harness.record_file), 2.4],
                date=format_date(first), repeat={"seconds": 1, "limit": 2})
    harness.wait_status("slow", "done", timeout=20)
    runs = harness.wait(lambda: len(harness.runs("slow")) == 4 and harness.runs("slow"),
                        what="four run records")
    at = [format_date(first + timedelta(seconds=k)) for k in range(4)]
    got = sorted((parse_date(r["scheduled"]), r["outcome"]) for r in runs)
    assert [o for _, o in got] == ["done", "skipped", "skipped", "done"], got
    assert [format_date(s) for s, _ in got] == at
    assert store.get("slow")["after"]["skipped"] == 2
    assert len(dates_run(harness, "slow")) == 2


def test_buffer_one_runs_one_of_them_right_after(harness, store):
    harness.start()
    first = parse_date(format_date(utcnow() + timedelta(seconds=0.5)))
    harness.put("buffered", job="record_slowly", arguments=[str(harness.record_file), 2.4],
                date=format_date(first), repeat={"seconds": 1, "limit": 2},
                overlap="buffer_one")
    harness.wait_status("buffered", "done", timeout=20)
    runs = harness.wait(lambda: len(harness.runs("buffered")) == 3
                        and harness.runs("buffered"), what="three run records")
    got = sorted((parse_date(r["scheduled"]), r["outcome"], r["started"]) for r in runs)
    assert [o for _, o, _ in got] == ["done", "skipped", "done"], got
    assert got[2][0] == first + timedelta(seconds=2)  # the latest of those that fell due
    started = parse_date(got[2][2])
    assert started - (first + timedelta(seconds=2.4)) < timedelta(seconds=1)  # right after


# -- priority -------------------------------------------------------------------------------


def test_higher_priorities_start_first_when_the_pool_is_full(harness):
    harness.start(pool=1)
    path = str(harness.record_file)
    harness.put("blocker", job="record_slowly", arguments=[path, 1.5], delay=0.2)
    harness.wait(lambda: dates_run(harness, "blocker"), what="the blocker to start")
    for docid, priority in (("low", -5), ("plain", 0), ("urgent", 9), ("high", 3)):
        harness.put(docid, job="record_slowly", arguments=[path, 0.05], delay=0.2,
                    priority=priority)
    for docid in ("low", "plain", "urgent", "high"):
        harness.wait_status(docid, "done", timeout=20)
    order = [r["id"] for r in harness.recorded()]
    assert order == ["blocker", "urgent", "high", "plain", "low"]


def test_allow_runs_the_occurrences_alongside_each_once(harness, store):
    harness.start()
    first = parse_date(format_date(utcnow() + timedelta(seconds=0.5)))
    harness.put("wide", job="record_slowly", arguments=[str(harness.record_file), 2.2],
                date=format_date(first), repeat={"seconds": 1, "limit": 4}, overlap="allow")
    harness.wait_status("wide", "done", timeout=20)
    runs = harness.wait(lambda: len(r := harness.runs("wide")) == 4 and r,
                        what="four run records")
    assert sorted(r["number"] for r in runs) == [1, 2, 3, 4]
    assert {r["outcome"] for r in runs} == {"done"}
    assert sorted(parse_date(r["scheduled"]) for r in runs) == [
        first + timedelta(seconds=k) for k in range(4)]
    ran = sorted(dates_run(harness, "wide"))
    assert ran == [first + timedelta(seconds=k) for k in range(4)]  # each once, as its own
    starts = sorted(parse_date(r["started"]) for r in runs)
    ends = sorted(parse_date(r["ended"]) for r in runs)
    assert starts[1] < ends[0] and starts[2] < ends[0]  # side by side
    assert all(s - w < timedelta(seconds=0.5) for s, w in zip(starts, ran, strict=True))
    final = store.get("wide")["after"]
    assert final["runs"] == 4 and final["successes"] == 4 and "going" not in final


def test_allow_a_run_cut_by_a_stop_is_recorded_interrupted_and_taken_off_the_task(harness,
                                                                                  store):
    worker = harness.start(grace=0.5)
    harness.put("cut", job="record_slowly", arguments=[str(harness.record_file), 4],
                delay=0.2, repeat={"hours": 1}, overlap="allow")
    harness.wait(lambda: worker.state.detached and worker.runner.begun, what="the run detached")
    harness.stop(worker)
    doc = store.get("cut")
    assert doc["status"] == "waiting" and "going" not in doc["after"]
    assert doc["after"]["last_run"]["outcome"] == "interrupted"
    [run] = harness.wait(lambda: harness.runs("cut"), what="the run record")
    assert run["outcome"] == "interrupted" and run["number"] == 1


def test_allow_a_detached_run_past_its_timeout_is_recorded_timeout(harness, store):
    harness.start()
    harness.put("hung", job="record_slowly", arguments=[str(harness.record_file), 3],
                delay=0.2, repeat={"hours": 1}, overlap="allow", timeout=0.5)
    [run] = harness.wait(lambda: harness.runs("hung"), what="the run record")
    assert run["outcome"] == "timeout" and "0.5s" in run["error"]["message"]
    doc = store.get("hung")
    assert "going" not in doc["after"] and doc["after"]["failures"] == 1
    assert doc["status"] in ("waiting", "scheduled")  # its next occurrence, an hour on
