"""Occurrence ids, jitter, the windows of a backfill and the one-off tasks of extra runs:
pure, with dates passed in (issue 16 items 3, 7, 8, 10)."""

from __future__ import annotations

import json
import string
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from after.dashboard.design import UPCOMING_MAP
from after.rules import occurrence as occ
from after.rules import task as rules
from after.rules.dates import format_date, from_ms, parse_date, to_ms
from after.rules.repeat import parse_repeat
from after.worker import decide as d
from after.worker import runs as r

from ..js import node
from ..strategies import fractional

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ME = r.Identity("billing", "billing@here:1:abc", "here", 1)

ids = st.text(min_size=1, max_size=40).filter(lambda s: not s.startswith("_"))
dates = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9000, 1, 1),
                     timezones=st.just(UTC)).map(lambda t: from_ms(to_ms(t)))
jitters = st.one_of(st.integers(1, occ.MAX_BACKFILL * 86400),
                    st.floats(0.001, 31622400, allow_nan=False).filter(
                        lambda f: not f.is_integer()))


def task(**fields) -> dict:
    doc = {"_id": "weekly", "worker": "billing", "date": "2026-12-01T09:00:00.000Z",
           "job": {"name": "report", "arguments": []}, "status": "waiting"}
    doc.update(fields)
    return doc


# -- occurrence ids ------------------------------------------------------------------------


@given(ids, dates)
def test_an_occurrence_id_is_a_uuid_fixed_by_the_task_and_the_date(task_id, date):
    key = occ.key(task_id, date)
    assert uuid.UUID(key).version == 5
    assert key == occ.key(task_id, date + timedelta(microseconds=999 - date.microsecond % 1000))
    assert key != occ.key(task_id, date + timedelta(milliseconds=1))
    assert key != occ.key(task_id + "x", date)
    assert key != occ.key(task_id, date, occ.MANUAL)  # an extra run is another occurrence
    assert key == occ.key(task_id, date, occ.BACKFILL)  # a backfill of it is that one


@given(ids, ids, dates, dates)
def test_different_occurrences_have_different_ids(a, b, one, two):
    if (a, to_ms(one)) != (b, to_ms(two)):
        assert occ.key(a, one) != occ.key(b, two)


def test_a_takeover_that_gives_the_occurrence_up_says_why_in_its_record():
    """Interrupted too often in a row (rules.INTERRUPTED_RERUNS): the task ends error, and
    the run's record says so too, not only "interrupted" (the chaos checker read the record
    and called the occurrence never run)."""
    doc = task()
    spec = rules.parse(doc)
    current = doc
    for number in range(1, rules.INTERRUPTED_RERUNS + 2):
        write = r.take_over(rules.start(rules.claim(current, "other@x:2:y", spec.date, NOW),
                                        "other@x:2:y", NOW, number), spec, "other@x:2:y",
                            ME, NOW)
        current = write.doc
    assert current["status"] == rules.ERROR
    assert write.run["error"]["message"] == rules.info(current)["error"]
    assert "times in a row" in write.run["error"]["message"]


def test_every_attempt_retry_and_rerun_of_an_occurrence_has_its_id():
    doc = task(retry={"limit": 2}, repeat={"days": 1})
    spec = rules.parse(doc)
    key = spec.occurrence_id
    held = rules.start(rules.claim(doc, ME.process, spec.date, NOW), ME.process, NOW, 1)
    failed = rules.finish(held, spec, rules.Outcome(rules.FAILED, NOW, NOW, error="x"), NOW)
    assert failed["status"] == rules.SCHEDULED  # a retry, same occurrence
    assert rules.parse(failed).occurrence_id == key
    crashed = r.take_over(rules.start(failed, "other@x:2:y", NOW, 1), spec, "other@x:2:y",
                          ME, NOW)  # its process died mid-run
    assert crashed.doc["status"] == rules.SCHEDULED
    assert rules.parse(crashed.doc).occurrence_id == key
    assert crashed.run["occurrence"] == key
    assert crashed.run["occurrence_date"] == "2026-12-01T09:00:00.000Z"
    done = rules.finish(held, spec, rules.Outcome(rules.OK, NOW, NOW), NOW)
    assert done["date"] == "2026-12-02T09:00:00.000Z"  # the next occurrence: another id
    assert rules.parse(done).occurrence_id != key


def test_an_extra_run_is_a_one_off_task_of_its_parent_occurrence():
    parent = task(repeat={"days": 1, "jitter": 60}, retry=2, timeout=30, max_delay=5)
    when = datetime(2026, 11, 3, 9, tzinfo=UTC)
    doc = occ.extra_doc(parent, occ.BACKFILL, when)
    assert doc == {
        "_id": "weekly:backfill:2026-11-03T09:00:00.000Z", "worker": "billing",
        "date": "2026-11-03T09:00:00.000Z", "job": parent["job"], "status": "waiting",
        "occurrence": {"task": "weekly", "kind": "backfill",
                       "date": "2026-11-03T09:00:00.000Z"},
        "retry": 2, "timeout": 30}  # no repeat, no max_delay (a backfill is late by design)
    spec = rules.parse(doc)
    assert spec.occurrence == rules.Occurrence("weekly", "backfill", when)
    assert spec.occurrence_id == occ.key("weekly", when) == rules.parse(
        task(date="2026-11-03T09:00:00Z")).occurrence_id  # the occurrence it runs
    manual = rules.parse(occ.extra_doc(parent, occ.MANUAL, when))
    assert manual.occurrence_id == occ.key("weekly", when, occ.MANUAL) != spec.occurrence_id
    record = r.run_record(doc, spec, rules.Outcome(rules.OK, NOW, NOW), ME)
    assert (record["task"], record["kind"], record["parent"], record["occurrence"],
            record["occurrence_date"]) == (doc["_id"], "backfill", "weekly",
                                           spec.occurrence_id, "2026-11-03T09:00:00.000Z")


def test_the_job_receives_the_occurrence_id():
    from after.worker.runner import Runner
    from after.worker.state import Run
    spec = rules.parse(task())
    run = Run("weekly", "t.1", task(), spec, to_ms(spec.date))
    Runner.prepare(run)
    assert run.context.occurrence == spec.occurrence_id


# -- jitter ---------------------------------------------------------------------------------


@settings(max_examples=300)
@given(ids, dates, jitters)
def test_jitter_is_in_range_and_deterministic(task_id, date, jitter):
    offset = occ.jitter_ms(task_id, to_ms(date), jitter)
    assert 0 <= offset < jitter * 1000
    assert offset == occ.jitter_ms(task_id, to_ms(date), jitter)
    assert occ.jittered(task_id, date, jitter) == date + timedelta(milliseconds=offset)


def test_jitter_spreads_occurrences_over_the_window():
    offsets = [occ.jitter_ms(f"task-{n}", to_ms(NOW), 600) for n in range(2000)]
    tenths = [sum(1 for o in offsets if k * 60000 <= o < (k + 1) * 60000) for k in range(10)]
    assert min(tenths) > 150 and max(tenths) < 250  # about 200 in each tenth
    per_day = {occ.jitter_ms("one", to_ms(NOW + timedelta(days=k)), 600) for k in range(100)}
    assert len(per_day) > 95  # and moves each occurrence of one task differently
    assert occ.jitter_ms("x", to_ms(NOW), 0) == 0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(ids, dates, jitters), min_size=20, max_size=40))
def test_the_dashboard_view_computes_the_same_jitter(samples):
    rows = [[i, to_ms(t), j] for i, t, j in samples]
    script = (f"{occ.JS_JITTER}\nconst samples = {json.dumps(rows)};\n"
              "console.log(JSON.stringify(samples.map(([i, t, j]) => jitterMs(i, t, j))));")
    assert node(script) == [occ.jitter_ms(i, to_ms(t), j) for i, t, j in samples]


def test_the_upcoming_view_emits_the_jittered_instant():
    docs = [task(repeat={"hours": 1, "jitter": 900}), task(_id="plain", repeat={"hours": 1}),
            task(_id="held", status="scheduled", repeat={"hours": 1, "jitter": 900},
                 after={"due": "2026-12-01T09:07:00.000Z"})]
    script = (f"const map = {UPCOMING_MAP};\nconst out = [];\nconst emit = (k) => out.push(k);\n"
              f"{json.dumps(docs)}.forEach((doc) => map(doc));\n"
              "console.log(JSON.stringify(out));")
    assert node(script) == [to_ms(rules.parse(docs[0]).due), to_ms(NOW),
                            to_ms(NOW + timedelta(minutes=7))]


def test_a_jittered_task_is_held_for_its_jittered_instant():
    doc = task(repeat={"hours": 1, "jitter": 1800})
    spec = rules.parse(doc)
    offset = spec.due - spec.date
    assert timedelta(0) < offset < timedelta(minutes=30)
    view = d.View(me=ME, horizon_ms=60_000, owned=frozenset(range(64)))
    assert d.decide(doc, view, spec.due - timedelta(minutes=2)) == [d.Drop("weekly")]
    [hold] = d.decide(doc, view, spec.due - timedelta(seconds=30))
    assert hold.due_ms == to_ms(spec.due)
    started = r.begin(doc, spec, spec.due, ME.process, spec.due)
    assert started["after"]["due"] == format_date(spec.due)
    assert started["date"] == doc["date"]  # the date stays the nominal one


def test_after_a_run_the_next_occurrence_is_the_first_whose_jittered_instant_is_ahead():
    doc = task(repeat={"minutes": 1, "jitter": 59})
    spec = rules.parse(doc)
    anchor = spec.date
    # a run late in its jitter ends after the next nominal date: that occurrence still runs
    later = spec.date + timedelta(minutes=1)
    ahead = rules.parse(task(date=format_date(later), repeat=doc["repeat"])).due
    now = later + (ahead - later) / 2
    assert rules.next_occurrence(spec, anchor, now, 1) == later
    # once its jittered instant has passed, it is skipped, as without jitter
    assert rules.next_occurrence(spec, anchor, ahead, 1) > later
    plain = rules.parse(task(repeat={"minutes": 1}))
    assert rules.next_occurrence(plain, anchor, now, 1) == later + timedelta(minutes=1)


def test_show_lists_the_jittered_next_runs():
    from after.client import Client
    doc = task(repeat={"hours": 6, "jitter": 3600})
    runs = Client.next_runs(doc, 4)
    nominal = [NOW + timedelta(hours=6 * k) for k in range(4)]
    assert runs == [occ.jittered("weekly", n, 3600) for n in nominal]
    assert all(timedelta(0) <= r - n < timedelta(hours=1) for r, n in zip(runs, nominal))
    assert runs != nominal


def test_a_rule_describes_its_jitter():
    assert parse_repeat({"days": 1, "jitter": 90}).describe() == "every 1 day, jitter 90s"


# -- backfill windows -------------------------------------------------------------------------


def test_a_window_holds_the_rules_occurrences_before_the_anchor_too():
    monthly = parse_repeat({"months": 1})
    anchor = datetime(2026, 1, 31, 9, tzinfo=UTC)
    found = monthly.between(anchor, datetime(2025, 10, 1, tzinfo=UTC),
                            datetime(2026, 3, 31, 9, tzinfo=UTC), 1000)
    assert [format_date(t)[:10] for t in found] == [
        "2025-10-31", "2025-11-30", "2025-12-31", "2026-01-31", "2026-02-28", "2026-03-31"]


def test_a_window_is_inclusive_and_bounded():
    hourly = parse_repeat({"hours": 1, "until": "2026-12-01T05:00:00Z"})
    found = hourly.between(NOW, NOW - timedelta(hours=10), NOW - timedelta(hours=2), 1000)
    assert found[0] == NOW - timedelta(hours=10)
    assert found[-1] == NOW - timedelta(hours=4)  # until 05:00, inclusive
    assert len(parse_repeat({"s": 1}).between(NOW, NOW, NOW + timedelta(days=1), 1000)) == 1001
    assert hourly.between(NOW, NOW, NOW - timedelta(hours=1), 1000) == []


def test_a_cron_window_follows_the_time_zone():
    rule = parse_repeat({"cron": "0 9 * * 1-5", "tz": "Europe/Paris"})
    found = rule.between(NOW, datetime(2026, 1, 1, tzinfo=UTC),
                         datetime(2026, 1, 6, 8, tzinfo=UTC), 1000)
    assert [format_date(t) for t in found] == [
        "2026-01-01T08:00:00.000Z", "2026-01-02T08:00:00.000Z", "2026-01-05T08:00:00.000Z",
        "2026-01-06T08:00:00.000Z"]


@settings(max_examples=100)
@given(st.integers(1, 48), dates, st.integers(-500, 500), st.integers(0, 60))
def test_a_window_holds_exactly_the_occurrences_within_it(hours, anchor, shift, span):
    rule = parse_repeat({"hours": hours})
    start = anchor + timedelta(hours=shift, minutes=17)
    end = start + timedelta(hours=span)
    try:
        found = rule.between(anchor, start, end, 1000)
    except OverflowError:
        return
    expected = [anchor + timedelta(hours=hours * k) for k in range(-600, 600)
                if start <= anchor + timedelta(hours=hours * k) <= end]
    assert found == expected


OWNER = {"owner": "billing@here:1:abc"}
GOING = {**OWNER, "started": "2026-12-01T08:00:01.000Z", "run": 3}
PAST = "2026-12-01T08:00:00.000Z"  # an hour before NOW: an overdue occurrence
HOURS = "2026-12-01T08:00:00.000Z", "2026-12-01T08:30:00.000Z", "2026-12-01T09:00:00.000Z"


@pytest.mark.parametrize(("fields", "own"), [
    # overdue at 08:00 and 09:00: the task runs the latest as soon as a worker can
    ({"status": "waiting"}, [HOURS[2]]),
    ({"status": "scheduled", "after": OWNER}, [PAST]),  # held, or a retry of it waiting
    ({"status": "reschedule", "after": OWNER}, [PAST]),  # the date the user wrote
    ({"status": "running", "after": GOING}, [PAST]),  # its run is going
    ({"status": "paused", "after": GOING}, [PAST]),  # paused while it ran: still going
    ({"status": "cancel", "after": GOING}, [PAST]),  # canceled while it ran: still going
    ({"status": "paused"}, []),  # resumes from its next occurrence after now
    ({"status": "cancel", "after": OWNER}, []),  # will not run it
    ({"status": "done"}, []),
    ({"status": "error"}, []),
    ({"status": "canceled"}, []),
    ({"status": "waiting", "max_delay": 60}, [HOURS[2]]),  # 08:00 recorded missed
    ({"status": "waiting", "max_delay": 7200}, [HOURS[2]]),
    ({"status": "waiting", "repeat": {"hours": 1, "until": PAST}, "max_delay": 60}, []),
    ({"status": "scheduled", "after": OWNER, "max_delay": 60}, []),
    ({"status": "waiting", "repeat": {"hours": 1, "exclude": ["2026-12-01"]}}, []),
    ({"status": "waiting", "repeat": {"hours": 1, "exclude": {"calendar": "off"}}}, []),
    ({"status": "waiting", "repeat": {"hours": 1, "exclude": {"calendar": "on"}}},
     [HOURS[2]]),
    # issue 25: a catch-up runs the latest occurrence due (latest, the default), or none
    # more than 60s late (none), or each of them (all)
    ({"status": "waiting", "repeat": {"minutes": 30}}, [HOURS[2]]),
    ({"status": "waiting", "repeat": {"minutes": 30}, "catchup": {"policy": "none"}},
     [HOURS[2]]),
    ({"status": "waiting", "repeat": {"minutes": 45}, "catchup": {"policy": "none"}}, []),
    ({"status": "waiting", "repeat": {"minutes": 30}, "catchup": {"policy": "all"}},
     list(HOURS)),
    ({"status": "waiting", "repeat": {"minutes": 30},
      "catchup": {"policy": "all", "max": 2}}, list(HOURS[1:])),
    ({"status": "waiting", "repeat": {"minutes": 30},
      "catchup": {"policy": "all", "window": 1800}}, list(HOURS[1:])),
    ({"status": "waiting", "repeat": {"minutes": 30}, "catchup": {"policy": "all"},
      "max_delay": 1800}, list(HOURS[1:])),
    ({"status": "waiting", "repeat": {"minutes": 30, "exclude": {"calendar": "off"}},
      "catchup": {"policy": "all"}}, []),
])
def test_a_backfill_leaves_the_task_the_occurrences_it_runs_itself(fields, own):
    doc = task(**{"date": PAST, "repeat": {"hours": 1}, **fields})
    calendars = {"off": parse_repeat({"d": 1, "exclude": ["2026-12-01"]}).exclude,
                 "on": parse_repeat({"d": 1, "exclude": ["2026-12-02"]}).exclude}
    found = rules.own_occurrences(doc, rules.parse(doc), NOW, calendars)
    assert found == [parse_date(at) for at in own]


def test_extra_run_ids_name_the_task_the_kind_and_the_date():
    assert occ.extra_id("a:b", "manual", "2026-12-01T09:00:00.000Z") == \
        "a:b:manual:2026-12-01T09:00:00.000Z"
    doc = task(_id="x:manual:2026-12-01T09:00:00.000Z",
               occurrence={"task": "x", "kind": "manual", "date": "2026-12-01T09:00:00.000Z"})
    assert rules.parse(doc).occurrence.kind == "manual"
    with pytest.raises(rules.TaskError, match="^occurrence: the id must be"):
        rules.parse({**doc, "_id": "x"})


@settings(max_examples=50)
@given(st.text(string.printable, min_size=1, max_size=30), dates,
       st.sampled_from(occ.KINDS))
def test_an_extra_run_of_any_task_is_a_valid_task(task_id, date, kind):
    doc = occ.extra_doc(task(_id=task_id, repeat={"days": 1}), kind, date)
    spec = rules.parse(doc)
    assert (spec.occurrence.task, spec.occurrence.kind, spec.occurrence.date) == (
        task_id, kind, date)
    assert spec.repeat is None


# -- the two validators agree on generated values --------------------------------------------

# (integral floats left out: JavaScript reads 5.0 as 5, and the VDU shows it so, a limit
# after/couch/schema.py documents for every field; text of printable characters: how each repr
# escapes the others is the shared repr's business, tested with the corpus)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 40, 2 ** 40),
                    fractional,
                    st.text(string.printable + "é漢", max_size=12),
                    st.lists(st.integers(-2 ** 40, 2 ** 40), max_size=2))
occurrence_dates = st.one_of(dates.map(format_date), st.just("2026-11-31"), scalars)
occurrences = st.one_of(scalars, st.fixed_dictionaries(
    {}, optional={"task": st.one_of(st.sampled_from(["weekly", ""]), scalars),
                  "kind": st.one_of(st.sampled_from(occ.KINDS), scalars),
                  "date": occurrence_dates, "when": scalars}))
repeats = st.one_of(st.none(), st.fixed_dictionaries(
    {"hours": st.just(1)}, optional={"jitter": st.one_of(scalars, jitters)}),
    st.fixed_dictionaries({"cron": st.just("0 9 * * *")}, optional={"jitter": scalars}))


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(occurrences, repeats, st.booleans()), min_size=10, max_size=30))
def test_parse_and_the_vdu_say_the_same_of_generated_jitters_and_occurrences(cases):
    from after.client import check

    from .test_validation_corpus import vdu_says
    docs = []
    for occurrence, repeat, right_id in cases:
        doc = task(repeat=repeat, occurrence=occurrence)
        if right_id and isinstance(occurrence, dict) and isinstance(occurrence.get("date"), str):
            doc["_id"] = occ.extra_id(str(occurrence.get("task")), str(occurrence.get("kind")),
                                      occurrence["date"])
        docs.append(doc)

    def python_says(doc):
        try:
            check(doc)
        except rules.TaskError as exc:
            return str(exc)
        return None

    assert vdu_says(docs) == [python_says(doc) for doc in docs]


def test_a_reschedule_that_keeps_the_date_of_a_held_jittered_task_keeps_its_series():
    """A held jittered task's ``next_run`` is its jittered instant: a ``reschedule`` that
    did not move the date (say, a new ``retry``) must not restart the series (on the 31st,
    a restarted monthly series drifts to the 28th)."""
    doc = task(date="2027-02-28T09:00:00.000Z", repeat={"months": 1, "jitter": 3600},
               after={"anchor": "2027-01-31T09:00:00.000Z"})
    spec = rules.parse(doc)
    held = rules.claim(doc, ME.process, spec.due, NOW)
    assert held["after"]["next_run"] != held["date"]  # the jittered instant
    kept = rules.claim({**held, "status": rules.RESCHEDULE, "retry": 2}, ME.process, spec.due,
                       NOW)
    assert kept["after"]["anchor"] == "2027-01-31T09:00:00.000Z"
    moved = rules.claim({**held, "status": rules.RESCHEDULE, "date": "2027-03-01T09:00:00Z"},
                        ME.process, NOW, NOW)
    assert "anchor" not in moved["after"]  # a new date starts a new series
