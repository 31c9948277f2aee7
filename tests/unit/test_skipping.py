"""Excluded days skipped in one step (after.rules.skipping, issue 24 item 11): what an exclusion
makes the worker write is bounded. Pure, at a fixed ``NOW``; the worker's loop over a
series is simulated on after.worker's decisions, against generated exclusions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from after.rules import calendar as cal
from after.rules import skipping
from after.rules import task as rules
from after.rules.dates import format_date, parse_date
from after.rules.repeat import parse_repeat
from after.worker import runs as r
from after.worker.gates import screen as screened

NOW = datetime(2026, 12, 24, 9, 0, tzinfo=UTC)
ME = r.Identity(name="w", process="w@here:1:aaaaaa", host="here", pid=1)


def screen(doc, spec, calendars, me, now):
    """The write the worker makes of an occurrence that fell due, or None: it runs."""
    writes = screened(doc, spec, calendars, me, now)
    return writes[0] if writes else None


def held(repeat, at=NOW, **after):
    """A repeating task held by this process, its occurrence ``at`` due."""
    return {"_id": "t", "_rev": "2-x", "worker": "w", "status": "scheduled",
            "date": format_date(at), "repeat": repeat, "job": {"name": "hello"},
            "after": {"owner": ME.process, "due": format_date(at), **after}}


def skipped(doc, calendars=None, now=NOW):
    write = screen(doc, rules.parse(doc), calendars or {}, ME, now)
    assert write is not None and write.outcome.outcome == rules.SKIPPED
    return write


def test_the_whole_calendar_excluded_is_one_record_and_the_series_ends():
    write = skipped(held({"seconds": 1, "exclude": [{"from": "0001-01-01",
                                                     "to": "9999-12-31"}]}))
    assert write.doc["status"] == "done"
    assert write.run["error"]["message"] == (
        "skipped: 2026-12-24 is excluded (repeat.exclude); no occurrence is left past the "
        "excluded days from 2026-12-24: the series ends")
    assert write.doc["after"]["skipped"] == 1


def test_an_excluded_day_is_one_record_and_the_task_moves_past_it():
    write = skipped(held({"seconds": 1, "exclude": ["2026-12-24"]}))
    assert (write.doc["status"], write.doc["date"]) == ("waiting", "2026-12-25T00:00:00.000Z")
    assert write.run["error"]["message"].endswith(
        "skipped with it: the occurrences to the next one past the excluded days, "
        "2026-12-25T00:00:00.000Z")
    assert "occurrences" in write.doc["after"]  # counted only toward a limit: none here


def test_consecutive_days_ranges_and_calendars_are_one_span():
    shared = cal.parse_calendar({"_id": "calendar:fr", "dates": [
        "2026-12-26", {"from": "2026-12-27", "to": "2026-12-31"}]})
    doc = held({"hours": 6, "exclude": ["2026-12-24", {"from": "2026-12-25", "to": "2026-12-25"},
                                        {"calendar": "fr"}, "2027-01-02"]})
    write = skipped(doc, {"fr": shared})
    assert write.doc["date"] == "2027-01-01T03:00:00.000Z"  # 09:00 + 6 h steps, past the 31st
    assert write.run["error"]["message"].startswith(
        "skipped: 2026-12-24 is excluded (repeat.exclude); skipped with it")
    assert skipping.span_end(date(2026, 12, 24), rules.parse(doc).repeat.exclude,
                             {"fr": shared}) == date(2026, 12, 31)


def test_a_span_in_a_time_zone_ends_at_its_midnight():
    doc = held({"cron": "*/30 * * * *", "tz": "Asia/Tokyo", "exclude": ["2026-12-24"]},
               at=datetime(2026, 12, 24, 1, 0, tzinfo=UTC))  # 10:00 in Tokyo
    write = skipped(doc, now=datetime(2026, 12, 24, 1, 0, tzinfo=UTC))
    assert write.doc["date"] == "2026-12-24T15:00:00.000Z"  # midnight of the 25th, Tokyo


def test_the_next_excluded_after_an_open_day_is_a_span_of_its_own():
    doc = held({"days": 1, "exclude": ["2026-12-25", "2026-12-26"]},
               at=datetime(2026, 12, 23, 9, tzinfo=UTC))
    # the occurrence of the 23rd is skipped for another reason: the next is the 24th, open
    assert skipping.leap(doc, rules.parse(doc), NOW - timedelta(days=1), {}) is None


@pytest.mark.parametrize(("unit", "limit", "status", "date_", "occurrences"), [
    # every minute from 09:00, the 24th excluded: 899 more minutes in it after this one
    ("minutes", 100, "done", None, None),
    ("minutes", 900, "done", None, None),  # the series' last minute is the 24th's last
    ("minutes", 901, "waiting", "2026-12-25T00:00:00.000Z", 900),  # the last one is open
    ("minutes", None, "waiting", "2026-12-25T00:00:00.000Z", 1),  # no limit: not counted
    # every second, a limit far off: counted 10,000 at a time, on from there
    ("seconds", 10 ** 9, "waiting", "2026-12-24T11:46:41.000Z", 1 + skipping.MAX_PASSED),
])
def test_occurrences_passed_count_toward_the_limit(unit, limit, status, date_, occurrences):
    repeat = {unit: 1, "exclude": ["2026-12-24"], **({"limit": limit} if limit else {})}
    write = skipped(held(repeat))
    assert write.doc["status"] == status
    if status == "waiting":
        assert write.doc["date"] == date_
        assert write.doc["after"]["occurrences"] == occurrences
    if limit == 10 ** 9:
        assert "so are the next 10000 occurrences" in write.run["error"]["message"]


def test_until_within_the_span_ends_the_series():
    doc = held({"hours": 1, "until": "2026-12-25T12:00:00Z", "exclude": [
        {"from": "2026-12-24", "to": "2026-12-25"}]})
    assert skipped(doc).doc["status"] == "done"


# -- generated: exclusions, rules and a simulated worker -------------------------------------

BASE = date(2026, 12, 20)
offsets = st.integers(-3, 18)
items = st.one_of(
    offsets.map(lambda k: (BASE + timedelta(days=k)).isoformat()),
    st.tuples(offsets, st.integers(0, 6)).map(lambda p: {
        "from": (BASE + timedelta(days=p[0])).isoformat(),
        "to": (BASE + timedelta(days=p[0] + p[1])).isoformat()}),
    st.sampled_from([{"from": "0001-01-01", "to": (BASE + timedelta(days=2)).isoformat()},
                     {"from": (BASE + timedelta(days=14)).isoformat(), "to": "9999-12-31"}]),
)
rules_ = st.one_of(
    st.sampled_from([{"hours": 1}, {"hours": 5}, {"hours": 25}, {"days": 1}, {"days": 3},
                     {"minutes": 97}, {"weeks": 1}]),
    st.sampled_from([{"cron": "0 9 * * 1-5", "tz": "Europe/Paris"},
                     {"cron": "30 */7 * * *", "tz": "America/New_York"},
                     {"cron": "0 0 * * *", "tz": "Pacific/Kiritimati"}]),
)


def simulate(repeat: dict, start: datetime, horizon: datetime) -> tuple[list, int]:
    """The worker on time at every occurrence, from ``start`` to ``horizon``: the dates it
    ran, and how many skipped records it wrote."""
    doc = held(repeat, at=start)
    ran, records = [], 0
    for _ in range(5000):
        spec = rules.parse(doc)
        if spec.date > horizon:
            break
        now = spec.date
        write = screen(doc, spec, {}, ME, now)
        if write is None:
            ran.append(spec.date)
            doc = rules.finish({**doc, "status": "running"}, spec,
                               rules.Outcome(rules.OK, now, now), now)
        else:
            records += 1
            doc = write.doc
        if doc["status"] != "waiting":
            break
        doc = {**doc, "status": "scheduled"}
    return ran, records


@settings(max_examples=50, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(items, min_size=1, max_size=8), rules_, st.integers(0, 23),
       st.sampled_from([None, 3, 30]))
def test_every_open_occurrence_runs_and_each_excluded_span_is_one_record(
        excludes, repeat, hour, limit):
    repeat = {**repeat, "exclude": excludes, **({"limit": limit} if limit else {})}
    rule = parse_repeat(repeat)
    start = datetime.combine(BASE, datetime.min.time(), tzinfo=UTC) + timedelta(hours=hour)
    if rule.exclude and "cron" in repeat:  # a cron series starts at one of its times
        start = rule.upcoming(start, start - timedelta(seconds=1), 1)[0]
    horizon = start + timedelta(days=20)
    ran, records = simulate(repeat, start, horizon)
    every = [start, *rule.upcoming(start, start, 2000)]
    every = [at for at in every if at <= horizon][:limit or None]
    open_ = [at for at in every if cal.excluded(rule.exclude, at, rule.zone, {}) is None]
    assert ran == open_  # each occurrence on an open day runs, none on an excluded one
    spans = 1 + sum(1 for a, b in zip(every, every[1:], strict=False)
                    if cal.excluded(rule.exclude, a, rule.zone, {}) is None
                    and cal.excluded(rule.exclude, b, rule.zone, {}) is not None)
    assert records <= spans  # one record a run of excluded occurrences, at most


def test_the_issue_case_takes_one_record_a_year_of_seconds_none():
    """A 1 s repeat excluded for the whole calendar: one record, then done (the worker
    wrote one every few seconds for ever)."""
    ran, records = simulate({"seconds": 1, "exclude": [{"from": "0001-01-01",
                                                        "to": "9999-12-31"}]},
                            NOW, NOW + timedelta(days=365))
    assert (ran, records) == ([], 1)


def test_a_parse_of_the_written_date_is_the_leaps():
    write = skipped(held({"minutes": 1, "exclude": [{"from": "2026-12-24",
                                                     "to": "2027-01-01"}]}))
    assert parse_date(write.doc["date"]) == datetime(2027, 1, 2, tzinfo=UTC)
