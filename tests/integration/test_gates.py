"""Calendars and concurrency caps (after.worker.gates) with a worker on the real servers."""

from __future__ import annotations

import time
from datetime import timedelta

from after.config import workers_db
from after.couch.caps import in_use
from after.rules.dates import format_date, parse_date, utcnow


def today() -> str:
    return utcnow().date().isoformat()


def overlap(runs: list[dict]) -> int:
    """The most runs going at once, from the run records' starts and ends."""
    edges = sorted([(parse_date(r["started"]), 1) for r in runs]
                   + [(parse_date(r["ended"]), -1) for r in runs])
    most = going = 0
    for _, step in edges:
        going += step
        most = max(most, going)
    return most


# -- calendars -------------------------------------------------------------------------------

def test_an_excluded_day_is_skipped_and_recorded(harness):
    harness.start()
    doc = harness.put("holiday", delay=0.5, repeat={"days": 1, "exclude": [
        {"from": today(), "to": today()}]})
    [run] = harness.wait(lambda: harness.runs("holiday"), what="the skipped run")
    assert run["outcome"] == "skipped" and "is excluded" in run["error"]["message"]
    assert run["scheduled"] == doc["date"]
    task = harness.wait_status("holiday", "waiting")
    assert parse_date(task["date"]) == parse_date(doc["date"]) + timedelta(days=1)
    assert task["after"]["skipped"] == 1 and task["after"]["last_run"]["outcome"] == "skipped"
    assert "runs" not in task["after"] or task["after"]["runs"] == 0
    assert harness.recorded() == []  # the job never ran


def test_a_shared_calendar_is_read_when_due_and_its_edits_count_without_restart(harness,
                                                                               store):
    harness.start()
    calendar = {"_id": "calendar:office", "dates": [today()]}
    store.put(calendar)
    harness.put("shut", delay=0.5, repeat={"days": 1, "exclude": {"calendar": "office"}})
    [run] = harness.wait(lambda: harness.runs("shut"), what="the skipped run")
    assert run["outcome"] == "skipped" and "calendar office" in run["error"]["message"]
    calendar["dates"] = ["2020-01-01"]  # open today after all
    store.put(calendar)
    harness.put("open", delay=3, repeat={"days": 1, "exclude": {"calendar": "office"}})
    harness.wait(lambda: harness.runs("open"), timeout=20, what="the run")
    assert [r["outcome"] for r in harness.runs("open")] == ["done"]
    task = harness.wait(lambda: (doc := store.get("open")).get("after", {}).get("runs") and doc,
                        what="the run counted")
    assert task["status"] == "waiting" and len(harness.recorded()) == 1


def test_a_missing_calendar_ends_the_task_in_error(harness):
    harness.start()
    harness.put("lost", delay=0.3, repeat={"days": 1, "exclude": {"calendar": "nowhere"}})
    task = harness.wait_status("lost", "error")
    assert task["after"]["error"] == ("repeat.exclude: no calendar 'nowhere' (create the "
                                      "document calendar:nowhere in the tasks database)")
    assert harness.recorded() == []


def test_a_bad_calendar_document_is_refused_by_the_database(store):
    from after.couch.store import Forbidden

    try:
        store.put({"_id": "calendar:bad", "dates": ["2026-02-30"]})
    except Forbidden as exc:
        assert str(exc) == "dates[0]: '2026-02-30' is not a date (YYYY-MM-DD)"
    else:
        raise AssertionError("the calendar was accepted")


# -- concurrency caps ------------------------------------------------------------------------

def test_a_cap_of_one_runs_its_tasks_one_at_a_time_in_date_order(harness, store):
    harness.start(pool=4)
    base = utcnow() + timedelta(seconds=1)
    for i in range(4):
        harness.put(f"cap{i}", job="sleep", arguments=[0.4],
                    date=format_date(base + timedelta(milliseconds=10 * i)),
                    concurrency={"key": "one", "limit": 1})
    for i in range(4):
        harness.wait_status(f"cap{i}", "done", timeout=20)
    runs = [harness.wait(lambda i=i: harness.runs(f"cap{i}"), what="its run record")[0]
            for i in range(4)]
    assert overlap(runs) == 1
    assert [r["task"] for r in sorted(runs, key=lambda r: r["started"])] == [
        "cap0", "cap1", "cap2", "cap3"]
    # lateness from the occurrence's date: the last waited for three runs
    assert runs[3]["lateness_ms"] >= 3 * 400 - 50
    assert abs(runs[3]["lateness_ms"] - (parse_date(runs[3]["started"]) - parse_date(
        runs[3]["scheduled"])).total_seconds() * 1000) < 1
    harness.wait(lambda: [s["holder"] for s in in_use(store, workers_db(store.db))] == [None],
                 what="the slot to be free")


def test_a_slot_is_freed_when_its_run_fails_or_times_out(harness, store):
    harness.start(pool=4)
    harness.put("boom", job="fail", arguments=["no"], delay=0.5,
                concurrency={"key": "k", "limit": 1})
    harness.wait_status("boom", "error")
    harness.put("slow", job="sleep", arguments=[30], delay=0.2, timeout=0.5,
                concurrency={"key": "k", "limit": 1})
    harness.wait_status("slow", "error")
    harness.put("after", job="sleep", arguments=[0], delay=0.2,
                concurrency={"key": "k", "limit": 1})
    doc = harness.wait_status("after", "done", timeout=10)
    assert doc["after"]["last_run"]["outcome"] == "done"
    harness.wait(lambda: [s["holder"] for s in in_use(store, workers_db(store.db))] == [None],
                 what="the slot to be free")


def test_a_graceful_stop_frees_the_slots_it_holds(harness, store):
    worker = harness.start(grace=0.5)
    harness.put("long", job="sleep", arguments=[3], delay=0.2,
                concurrency={"key": "g", "limit": 2})
    harness.wait_status("long", "running")
    [slot] = in_use(store, workers_db(store.db))
    assert slot["holder"] == worker.id and slot["task"] == "long"
    harness.stop(worker)
    assert [s["holder"] for s in in_use(store, workers_db(store.db))] == [None]


def test_a_free_cap_costs_a_few_round_trips_of_lateness(harness):
    """Figures: ``pytest tests/integration/test_gates.py -k round_trips -s``."""
    harness.start(pool=4)
    base = utcnow() + timedelta(seconds=1.5)
    for i in range(10):
        harness.put(f"c{i}", job="noop", arguments=[], concurrency={"key": "free", "limit": 5},
                    date=format_date(base + timedelta(seconds=0.3 * i)))
        harness.put(f"p{i}", job="noop", arguments=[],
                    date=format_date(base + timedelta(seconds=0.3 * i + 0.1)))
    for i in range(10):
        harness.wait_status(f"c{i}", "done")
        harness.wait_status(f"p{i}", "done")
    def lateness(docid: str) -> float:
        return harness.wait(lambda: harness.runs(docid), what="its run")[0]["lateness_ms"]

    capped = sorted(lateness(f"c{i}") for i in range(10))
    plain = sorted(lateness(f"p{i}") for i in range(10))
    print(f"\n[caps] lateness of 10 runs under a free cap: median {capped[5]:.1f} ms, max "
          f"{capped[-1]:.1f} ms; without a cap: median {plain[5]:.1f} ms, max {plain[-1]:.1f} ms")
    assert capped[5] < 250  # its slot is taken as it falls due, not at a retry or a poll


def test_an_excluded_span_is_skipped_in_one_step(harness, store):
    """Issue 24 item 11: a 1 s repeat whose exclusion covers the whole calendar wrote a
    skipped run record every few seconds, for ever; one covering today wrote one a second
    until midnight. Now each excluded span is one record: the series moves past it (to
    tomorrow), or ends when nothing is left past it."""
    harness.start()
    forever = harness.put("forever", delay=0.5, repeat={"seconds": 1, "exclude": [
        {"from": "0001-01-01", "to": "9999-12-31"}]})
    today_only = harness.put("today", delay=0.5, repeat={"seconds": 1, "exclude": [
        {"from": today(), "to": today()}]})
    task = harness.wait_status("forever", "done", timeout=10)
    moved = harness.wait(lambda: (d := store.get("today"))["date"] != today_only["date"] and d,
                         what="the task past today")
    harness.past(format_date(parse_date(forever["date"]) + timedelta(seconds=4)))
    [run] = harness.runs("forever")
    assert run["outcome"] == "skipped" and run["scheduled"] == forever["date"]
    assert "no occurrence is left past" in run["error"]["message"]
    assert task["after"]["skipped"] == 1
    [run] = harness.runs("today")
    assert run["outcome"] == "skipped" and "to the next one past the excluded days" in \
        run["error"]["message"]
    tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
    assert moved["date"].startswith(f"{tomorrow}T00:00:0")  # the first second of tomorrow
    assert moved["status"] == "waiting"
    assert harness.recorded() == []  # the job never ran


# -- rate limits (issue 25, item 5) ---------------------------------------------------------

def most_in_any(starts: list, seconds: float, slack: float = 0.05) -> int:
    """The most starts within any window of ``seconds`` less ``slack`` (a job thread begins
    a run a few milliseconds after the worker let it: the limit holds on the latter)."""
    starts = sorted(starts)
    return max(sum(1 for b in starts if a <= b < a + timedelta(seconds=seconds - slack))
               for a in starts)


def test_a_rate_lets_limit_runs_begin_in_any_period_the_rest_in_date_order(harness, store):
    """Six tasks due at once, ``"rate": {"key": "mail", "limit": 2, "per": 1.5}``: two begin
    at their date, two 1.5 s later, two 3 s later; every run, none twice; each token
    document says when it may be taken again."""
    harness.start(pool=4)
    base = utcnow() + timedelta(seconds=1)
    for i in range(6):
        harness.put(f"rate{i}", date=format_date(base + timedelta(milliseconds=10 * i)),
                    rate={"key": "mail", "limit": 2, "per": 1.5})
    for i in range(6):
        harness.wait_status(f"rate{i}", "done", timeout=20)
    runs = [harness.wait(lambda i=i: harness.runs(f"rate{i}"), what="its run record")[0]
            for i in range(6)]
    starts = [parse_date(r["started"]) for r in runs]
    assert most_in_any(starts, 1.5) == 2, sorted(starts)
    order = [r["task"] for r in sorted(runs, key=lambda r: r["started"])]
    assert order[:2] == ["rate0", "rate1"] and order[4:] == ["rate4", "rate5"]
    span = (max(starts) - min(starts)).total_seconds()
    assert 3.0 <= span < 4.5, span  # two periods, and little more
    assert sorted(r["id"] for r in harness.recorded()) == [f"rate{i}" for i in range(6)]
    tokens = store.prefixed("rate:mail#", db=workers_db(store.db))
    assert sorted(t["_id"] for t in tokens) == ["rate:mail#0", "rate:mail#1"]
    assert {t["task"] for t in tokens} == {"rate4", "rate5"}
    assert all(parse_date(t["next"]) > parse_date(t["taken"]) for t in tokens)


def test_a_rate_and_a_cap_together_begin_a_run_only_with_both(harness, store):
    """A cap of 1 and a rate of 1 per second on four 0.2 s runs: one at a time, one a
    second (the slot is taken first, so a token goes only to a run that begins)."""
    harness.start(pool=4)
    base = utcnow() + timedelta(seconds=1)
    for i in range(4):
        harness.put(f"both{i}", job="sleep", arguments=[0.2],
                    date=format_date(base + timedelta(milliseconds=10 * i)),
                    concurrency={"key": "both", "limit": 1},
                    rate={"key": "both", "limit": 1, "per": 1})
    for i in range(4):
        harness.wait_status(f"both{i}", "done", timeout=20)
    runs = [harness.wait(lambda i=i: harness.runs(f"both{i}"), what="its run record")[0]
            for i in range(4)]
    assert overlap(runs) == 1
    assert most_in_any([parse_date(r["started"]) for r in runs], 1) == 1


# -- debounce (issue 25, item 5) --------------------------------------------------------------

def test_a_debounced_task_rewritten_twice_runs_once_after_the_last_write(harness, store):
    """``"debounce": 1.5``: a task due now, rewritten twice within the window (as a writer
    does on each event, with the same id), runs once, 1.5 s after the last rewrite, with
    what the last one said."""
    harness.start()
    doc = harness.put("quiet", debounce=1.5, arguments=[str(harness.record_file), "first"])
    for note in ("second", "third"):
        time.sleep(0.5)
        doc = {**store.get("quiet"), "date": format_date(utcnow()),
               "job": {"name": "record", "arguments": [str(harness.record_file), note]}}
        store.put(doc)
    last = utcnow()
    harness.wait_status("quiet", "done", timeout=20)
    [run] = harness.recorded()
    assert run["args"] == ["third"]
    started = parse_date(harness.wait(lambda: harness.runs("quiet"), what="its record")[0][
        "started"])
    assert 1.5 - 0.1 <= (started - last).total_seconds() < 3.5
    time.sleep(0.5)
    assert len(harness.recorded()) == 1  # once
