"""Calendars and exclusions (after.rules.calendar), the skip of an excluded occurrence
(after.worker.gates.screen) and next runs that honour exclusions: pure, at a fixed ``NOW``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from after.client import Client
from after.rules import calendar as cal
from after.rules import task as rules
from after.rules.repeat import RepeatError, parse_repeat
from after.worker import runs as r
from after.worker.gates import screen
from after.worker.runs import Kind

from ..strategies import fractional

NOW = datetime(2026, 12, 24, 9, 0, tzinfo=UTC)
ME = r.Identity(name="w", process="w@here:1:aaaaaa", host="here", pid=1)

days = st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31))
ranges = st.tuples(days, days).map(lambda pair: tuple(sorted(pair)))


def held(repeat, at=NOW):
    """A repeating task held by this process, its occurrence ``at`` due."""
    return {"_id": "t", "_rev": "2-x", "worker": "w", "status": "scheduled",
            "date": at.isoformat().replace("+00:00", "Z"), "repeat": repeat,
            "job": {"name": "hello", "arguments": []},
            "after": {"owner": ME.process, "due": at.isoformat().replace("+00:00", "Z")}}


# -- what a day is -------------------------------------------------------------------------

@given(st.lists(days, max_size=20), st.lists(ranges, max_size=5), days)
def test_a_day_is_excluded_exactly_when_it_is_listed_or_within_a_range(listed, spans, day):
    items = [d.isoformat() for d in listed] + [
        {"from": low.isoformat(), "to": high.isoformat()} for low, high in spans]
    exclusion = cal.parse_exclude(items)
    wanted = day in listed or any(low <= day <= high for low, high in spans)
    assert exclusion.covers(day) is wanted


@given(ranges)
def test_a_range_is_inclusive_at_both_ends_and_nothing_beyond(span):
    low, high = span
    exclusion = cal.parse_exclude([{"from": low.isoformat(), "to": high.isoformat()}])
    assert exclusion.covers(low) and exclusion.covers(high)
    assert not exclusion.covers(low - timedelta(days=1))
    assert not exclusion.covers(high + timedelta(days=1))


@given(days, days)
def test_a_backward_range_is_refused_naming_it(a, b):
    low, high = min(a, b), max(a, b)
    if low == high:
        return
    with pytest.raises(cal.CalendarError) as caught:
        cal.parse_exclude([{"from": high.isoformat(), "to": low.isoformat()}])
    assert str(caught.value) == (f"repeat.exclude[0]: from {high.isoformat()} is after to "
                                 f"{low.isoformat()}")


@given(st.text(max_size=12))
def test_only_a_real_yyyy_mm_dd_date_is_a_day(text):
    try:
        day = date.fromisoformat(text)
        real = len(text) == 10 and day.isoformat() == text
    except ValueError:
        real = False
    try:
        cal.parse_exclude([text])
        accepted = True
    except cal.CalendarError as exc:
        accepted = False
        assert str(exc).startswith("repeat.exclude[0]: ") and "not a date" in str(exc)
    assert accepted is real


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                 st.text(max_size=5), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.sampled_from(["x", "to", "from"]), st.integers(),
                                 max_size=2)))
def test_any_json_value_is_accepted_or_refused_in_one_line_naming_exclude(value):
    try:
        parse_repeat({"days": 1, "exclude": value})
    except RepeatError as exc:
        assert str(exc).startswith("repeat.exclude") and "\n" not in str(exc)


def test_the_day_is_the_tasks_time_zone_day():
    # 23:30 UTC on the 24th is the 25th in Paris
    late = datetime(2026, 12, 24, 23, 30, tzinfo=UTC)
    exclusion = cal.parse_exclude(["2026-12-25"])
    assert cal.excluded(exclusion, late, "UTC", {}) is None
    assert cal.excluded(exclusion, late, "Europe/Paris", {}) == (
        "skipped: 2026-12-25 is excluded (repeat.exclude)")
    rule = parse_repeat({"cron": "30 0 * * *", "tz": "Europe/Paris", "exclude": ["2026-12-25"]})
    assert rule.zone == "Europe/Paris"
    assert parse_repeat({"days": 1}).zone == "UTC"


def test_a_shared_calendar_is_asked_by_name_and_missing_ones_are_named():
    exclusion = cal.parse_exclude({"calendar": "fr"})
    fr = cal.parse_calendar({"_id": "calendar:fr", "dates": [{"from": "2026-12-24",
                                                               "to": "2026-12-26"}]})
    assert cal.excluded(exclusion, NOW, "UTC", {"fr": fr}) == (
        "skipped: 2026-12-24 is excluded (calendar fr)")
    assert cal.excluded(exclusion, NOW + timedelta(days=3), "UTC", {"fr": fr}) is None
    assert cal.missing(exclusion, {"fr": fr}) is None
    assert cal.missing(exclusion, {}) == ("repeat.exclude: no calendar 'fr' (create the "
                                          "document calendar:fr in the tasks database)")


def test_a_calendar_document_is_checked_as_one():
    assert cal.calendar_name("calendar:x") == "x" and cal.calendar_name("task") is None
    with pytest.raises(cal.CalendarError, match=r"^dates\[0\]: unknown key 'calendar'"):
        cal.parse_calendar({"_id": "calendar:x", "dates": [{"calendar": "y"}]})
    with pytest.raises(cal.CalendarError, match=r"^status: unknown field of a calendar"):
        cal.parse_calendar({"_id": "calendar:x", "dates": [], "status": "waiting"})


# -- the worker's decision when an occurrence falls due ------------------------------------

def test_an_occurrence_on_an_excluded_day_is_recorded_skipped_and_the_next_one_follows():
    doc = held({"days": 1, "exclude": ["2026-12-24"]})
    spec = rules.parse(doc)
    [write] = screen(doc, spec, {}, ME, NOW)
    assert write.kind is Kind.FINISH and write.outcome.outcome == rules.SKIPPED
    assert write.doc["status"] == "waiting"
    assert write.doc["date"] == "2026-12-25T09:00:00.000Z"
    info = write.doc["after"]
    assert info["skipped"] == 1 and "runs" not in info and "owner" not in info
    assert info["last_run"]["outcome"] == "skipped"
    assert write.run["outcome"] == "skipped"
    assert rules.instant(write.run["scheduled"]) == rules.instant(doc["date"])
    assert write.run["error"]["message"] == "skipped: 2026-12-24 is excluded (repeat.exclude)"


def test_an_occurrence_on_another_day_runs():
    doc = held({"days": 1, "exclude": ["2026-12-25"]})
    assert screen(doc, rules.parse(doc), {}, ME, NOW) is None


def test_a_skipped_last_occurrence_ends_the_series_done_not_error():
    doc = held({"days": 1, "limit": 1, "exclude": ["2026-12-24"]})
    [write] = screen(doc, rules.parse(doc), {}, ME, NOW)
    assert write.doc["status"] == "done"


def test_a_missing_calendar_ends_the_task_in_error_with_what_to_create():
    doc = held({"days": 1, "exclude": {"calendar": "holidays-fr"}})
    [write] = screen(doc, rules.parse(doc), {}, ME, NOW)
    assert write.kind is Kind.ERROR and write.doc["status"] == "error"
    assert write.doc["after"]["error"].startswith("repeat.exclude: no calendar 'holidays-fr'")


def test_a_gated_task_is_asked_at_its_instant_not_made_ready_ahead():
    doc = {**held({"days": 1, "exclude": ["2026-12-25"]}), "status": "waiting"}
    assert r.gated(rules.parse(doc))
    capped = {**doc, "repeat": None, "concurrency": {"key": "k", "limit": 1}}
    assert r.gated(rules.parse(capped))
    assert not r.gated(rules.parse({**doc, "repeat": None}))


# -- next runs shown by `after show` ---------------------------------------------------------

def test_next_runs_leave_out_excluded_days_of_the_task_and_of_its_calendars():
    doc = {**held({"days": 1, "exclude": ["2026-12-25", {"calendar": "fr"}]}),
           "status": "waiting"}
    fr = cal.parse_calendar({"_id": "calendar:fr", "dates": [{"from": "2026-12-27",
                                                               "to": "2026-12-28"}]})
    runs = [r.date().isoformat() for r in Client.next_runs(doc, 4, {"fr": fr})]
    assert runs == ["2026-12-24", "2026-12-26", "2026-12-29", "2026-12-30"]
    # without the calendar document (not found), only the task's own days are left out
    runs = [r.date().isoformat() for r in Client.next_runs(doc, 3)]
    assert runs == ["2026-12-24", "2026-12-26", "2026-12-27"]


@given(st.lists(st.integers(0, 40), max_size=30))
def test_next_runs_are_exactly_the_days_not_excluded(offsets):
    excluded_days = {(NOW + timedelta(days=n)).date() for n in offsets}
    doc = {**held({"days": 1, "exclude": sorted(x.isoformat() for x in excluded_days)}),
           "status": "waiting"}
    got = [r.date() for r in Client.next_runs(doc, 5)]
    wanted = [day for day in ((NOW + timedelta(days=n)).date() for n in range(80))
              if day not in excluded_days][:5]
    assert got == wanted


# -- the database's validate_doc_update says what task.parse says, on generated values -------

_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
_day_like = st.one_of(
    days.map(date.isoformat),
    st.builds("{:04d}-{:02d}-{:02d}".format, st.integers(0, 9999), st.integers(0, 13),
              st.integers(0, 32)),
    _text)
# Finite floats that JavaScript prints as Python does (no exponent above 1e16, no integral
# float where an integer is allowed: JavaScript cannot tell 2.0 from 2, as for retry).
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6),
                    fractional, _text)
_item = st.one_of(
    _day_like, _scalar,
    st.fixed_dictionaries({"from": _day_like, "to": _day_like}),
    st.dictionaries(st.sampled_from(["from", "to", "calendar", "x"]),
                    st.one_of(_day_like, _scalar), max_size=3),
    st.fixed_dictionaries({"calendar": st.one_of(_text, _scalar)}))
_exclude = st.one_of(_scalar, _item, st.lists(_item, max_size=4))
_concurrency = st.one_of(
    _scalar, st.dictionaries(st.sampled_from(["key", "limit", "x"]),
                             st.one_of(_scalar, _text), max_size=3))


@settings(max_examples=10, deadline=None)
@given(st.data())
def test_the_vdu_and_parse_agree_on_generated_excludes_calendars_and_caps(data):
    from .test_validation_corpus import python_says, vdu_says

    base = {"_id": "t", "worker": "w", "date": "2026-12-01T09:00:00Z", "status": "waiting",
            "job": {"name": "hello", "arguments": []}}
    docs = [{**base, "repeat": {"days": 1, "exclude": data.draw(_exclude)}} for _ in range(60)]
    docs += [{**base, "concurrency": data.draw(_concurrency)} for _ in range(60)]
    docs += [{"_id": "calendar:c", "dates": data.draw(_exclude)} for _ in range(60)]
    said = vdu_says(docs)
    assert [(doc, python_says(doc)) for doc in docs] == list(zip(docs, said, strict=True))
