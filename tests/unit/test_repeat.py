"""after.rules.repeat: parsing the repeat field and computing next occurrences, time passed in."""

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from after.rules.repeat import CronRule, IntervalRule, RepeatError, Rule, parse_repeat


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


JAN31 = utc(2026, 1, 31, 10)


def first_next(value: object, anchor: datetime) -> datetime | None:
    """The occurrence after the anchor's own run, asked right at the anchor."""
    rule = parse_repeat(value)
    assert rule is not None
    return rule.next_date(anchor, anchor, anchor, runs=1)


# --- units -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"years": 1}, utc(2027, 1, 31, 10)),
        ({"y": 1}, utc(2027, 1, 31, 10)),
        ({"months": 1}, utc(2026, 2, 28, 10)),
        ({"M": 1}, utc(2026, 2, 28, 10)),
        ({"weeks": 1}, utc(2026, 2, 7, 10)),
        ({"w": 1}, utc(2026, 2, 7, 10)),
        ({"days": 2}, utc(2026, 2, 2, 10)),
        ({"d": 2}, utc(2026, 2, 2, 10)),
        ({"hours": 3}, utc(2026, 1, 31, 13)),
        ({"h": 3}, utc(2026, 1, 31, 13)),
        ({"minutes": 90}, utc(2026, 1, 31, 11, 30)),
        ({"m": 90}, utc(2026, 1, 31, 11, 30)),
        ({"seconds": 45}, utc(2026, 1, 31, 10, 0, 45)),
        ({"s": 45}, utc(2026, 1, 31, 10, 0, 45)),
        ({"milliseconds": 1250}, utc(2026, 1, 31, 10, 0, 1, 250000)),
        ({"ms": 1250}, utc(2026, 1, 31, 10, 0, 1, 250000)),
        ({"months": 1, "days": 7}, utc(2026, 3, 7, 10)),
        ({"d": 1, "h": 1, "m": 1, "s": 1, "ms": 1}, utc(2026, 2, 1, 11, 1, 1, 1000)),
        ({"days": 0, "hours": 1}, utc(2026, 1, 31, 11)),
        ({"days": 7.0}, utc(2026, 2, 7, 10)),
    ],
)
def test_every_unit_and_shorthand(value: dict, expected: datetime) -> None:
    result = first_next(value, JAN31)
    assert result == expected
    assert result is not None and result.tzinfo is UTC


def test_case_matters_between_months_and_minutes() -> None:
    assert first_next({"M": 2}, JAN31) == utc(2026, 3, 31, 10)
    assert first_next({"m": 2}, JAN31) == utc(2026, 1, 31, 10, 2)


def test_integral_float_is_stored_as_int() -> None:
    rule = parse_repeat({"days": 7.0, "limit": 2.0})
    assert rule == IntervalRule(days=7, limit=2)
    assert type(rule.days) is int and type(rule.limit) is int


def test_parse_none_is_no_rule() -> None:
    assert parse_repeat(None) is None


# --- ISO 8601 durations -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("P1M7D", {"months": 1, "days": 7}),
        ("PT30S", {"seconds": 30}),
        ("P1W", {"weeks": 1}),
        ("PT1.5S", {"seconds": 1, "microseconds": 500000}),
        ("PT1,25S", {"seconds": 1, "microseconds": 250000}),
        ("PT1.0000019S", {"seconds": 1, "microseconds": 1}),
        ("P1Y2M3DT4H5M6S", {"years": 1, "months": 2, "days": 3, "hours": 4, "minutes": 5,
                            "seconds": 6}),
        ("P1Y", {"years": 1}),
        ("P2M", {"months": 2}),
        ("PT2M", {"minutes": 2}),
        ("PT1H", {"hours": 1}),
        ("P1DT12H", {"days": 1, "hours": 12}),
        ("PT1.5H", {"hours": 1, "minutes": 30}),
        ("P0.5D", {"hours": 12}),
        ("P1.5W", {"weeks": 1, "days": 3, "hours": 12}),
        ("P1W2D", {"weeks": 1, "days": 2}),
        ("P0DT1S", {"seconds": 1}),
        ("PT36H", {"hours": 36}),
    ],
)
def test_iso_durations(text: str, fields: dict) -> None:
    assert parse_repeat(text) == IntervalRule(**fields)


def test_iso_duration_next_dates() -> None:
    assert first_next("P1M7D", JAN31) == utc(2026, 3, 7, 10)
    assert first_next("PT1.5S", JAN31) == utc(2026, 1, 31, 10, 0, 1, 500000)
    assert first_next("P1Y2M3DT4H5M6S", JAN31) == utc(2027, 4, 3, 14, 5, 6)


def test_every_object_carries_limit_and_until() -> None:
    rule = parse_repeat({"every": "P1D", "limit": 3, "until": "2026-03-01"})
    assert rule == IntervalRule(days=1, limit=3, until=utc(2026, 3, 1))


@pytest.mark.parametrize(
    "text", ["P", "PT", "P1DT", "1D", "P1D ", "p1d", "P-1D", "-P1D", "P1H", "PT1D", "P1S",
             "P1D1M", "PT1S1M", "P1.D", "P.5D", "P1DT1H1M1S1S", "", "every day", "P1MT"],
)
def test_iso_duration_rejects_bad_syntax(text: str) -> None:
    with pytest.raises(RepeatError) as caught:
        parse_repeat(text)
    assert str(caught.value) == (
        f"repeat: {text!r} is not an ISO 8601 duration (like P1D, PT30M, P1M7D or PT0.5S)"
    )


@pytest.mark.parametrize("text", ["P1.5Y", "P1.5M", "PT1.5H30M", "P1.5DT1H"])
def test_iso_duration_fraction_only_on_last_fixed_component(text: str) -> None:
    with pytest.raises(RepeatError) as caught:
        parse_repeat(text)
    assert str(caught.value) == (
        f"repeat: {text!r}: only the last component may have a fraction, and not years or months"
    )


@pytest.mark.parametrize("value", ["P0D", "PT0S", "P0Y0M0W0DT0H0M0S", "PT0.0000001S",
                                   {"days": 0}, {"d": 0, "ms": 0}, {"every": "PT0S"}])
def test_zero_interval_is_an_error(value: object) -> None:
    with pytest.raises(RepeatError) as caught:
        parse_repeat(value)
    assert str(caught.value) == "repeat: the interval is zero; at least one unit must be above 0"


# --- anchoring --------------------------------------------------------------------------


def test_month_end_anchoring_does_not_drift() -> None:
    rule = parse_repeat({"months": 1})
    assert rule.upcoming(JAN31, JAN31, 5) == [
        utc(2026, 2, 28, 10), utc(2026, 3, 31, 10), utc(2026, 4, 30, 10),
        utc(2026, 5, 31, 10), utc(2026, 6, 30, 10),
    ]
    # the worker asks again after the Feb 28 run: March 31, not March 28
    feb28 = utc(2026, 2, 28, 10)
    assert rule.next_date(JAN31, feb28, feb28 + timedelta(seconds=3), runs=2) == utc(
        2026, 3, 31, 10
    )


def test_months_and_days_are_multiplied_from_the_anchor() -> None:
    rule = parse_repeat({"months": 1, "days": 7})
    assert rule.upcoming(JAN31, JAN31, 3) == [
        utc(2026, 3, 7, 10),  # Feb 28 + 7 days
        utc(2026, 4, 14, 10),  # Mar 31 + 14 days
        utc(2026, 5, 21, 10),  # Apr 30 + 21 days
    ]


def test_leap_day_plus_one_year() -> None:
    feb29 = utc(2028, 2, 29, 9)
    rule = parse_repeat({"years": 1})
    assert rule.upcoming(feb29, feb29, 4) == [
        utc(2029, 2, 28, 9), utc(2030, 2, 28, 9), utc(2031, 2, 28, 9), utc(2032, 2, 29, 9),
    ]
    assert parse_repeat("P1Y").next_date(feb29, feb29, feb29, runs=1) == utc(2029, 2, 28, 9)


def test_leap_day_monthly_through_february() -> None:
    anchor = utc(2028, 1, 29)
    rule = parse_repeat({"M": 1})
    assert rule.upcoming(anchor, anchor, 2) == [utc(2028, 2, 29), utc(2028, 3, 29)]


def test_days_are_24_hours_in_utc() -> None:
    anchor = utc(2026, 3, 28, 8)  # 09:00 in Paris the day before DST starts
    assert first_next({"days": 1}, anchor) == utc(2026, 3, 29, 8)  # 10:00 in Paris: use cron


def test_future_anchor_is_the_next_occurrence() -> None:
    anchor = utc(2026, 12, 1, 9)
    rule = parse_repeat({"days": 1})
    assert rule.upcoming(anchor, utc(2026, 11, 25), 2) == [anchor, utc(2026, 12, 2, 9)]
    assert rule.upcoming(anchor, anchor, 1) == [utc(2026, 12, 2, 9)]
    assert rule.upcoming(anchor, anchor, 0) == []


def test_occurrence_passing_year_9999_ends_the_series() -> None:
    anchor = utc(2026, 1, 1)
    rule = parse_repeat({"years": 5000})
    assert rule.next_date(anchor, anchor, anchor, runs=1) == utc(7026, 1, 1)
    assert rule.next_date(anchor, utc(7026, 1, 1), utc(7026, 1, 1), runs=2) is None
    assert rule.upcoming(anchor, anchor, 5) == [utc(7026, 1, 1)]


# --- downtime ---------------------------------------------------------------------------


def test_downtime_skips_missed_periods_to_the_future() -> None:
    anchor = utc(2026, 1, 1, 9)
    rule = parse_repeat({"days": 1})
    # the worker was down from Jan 1 until Mar 15 noon; it ran the overdue Jan 1 once
    assert rule.next_date(anchor, anchor, utc(2026, 3, 15, 12), runs=1) == utc(2026, 3, 16, 9)


def test_now_exactly_on_an_occurrence_gives_the_following_one() -> None:
    anchor = utc(2026, 1, 1, 9)
    rule = parse_repeat({"days": 1})
    assert rule.next_date(anchor, anchor, utc(2026, 3, 15, 9), runs=1) == utc(2026, 3, 16, 9)


def test_now_before_scheduled_uses_scheduled() -> None:
    anchor = utc(2026, 1, 1, 9)
    rule = parse_repeat({"hours": 1})
    scheduled = utc(2026, 1, 1, 12)
    assert rule.next_date(anchor, scheduled, utc(2026, 1, 1, 11, 59), runs=4) == utc(2026, 1, 1, 13)


def test_downtime_with_millisecond_interval_is_computed_not_iterated() -> None:
    anchor = utc(2026, 1, 1)
    rule = parse_repeat({"s": 1, "ms": 1})
    now = utc(2027, 1, 1, 0, 0, 0, 500)
    # 365 days = 31,536,000 s; the occurrence k = 31,504,496 falls at k * 1.001 s
    k = -(-int((now - anchor).total_seconds() * 1_000_000) // 1_001_000)
    expected = anchor + timedelta(microseconds=k * 1_001_000)
    assert rule.next_date(anchor, anchor, now, runs=1) == expected > now


def test_downtime_with_monthly_interval_over_decades() -> None:
    anchor = utc(2000, 1, 31, 6)
    rule = parse_repeat({"M": 1})
    assert rule.next_date(anchor, anchor, utc(2026, 11, 25), runs=1) == utc(2026, 11, 30, 6)
    assert rule.next_date(anchor, anchor, utc(2026, 11, 30, 6), runs=1) == utc(2026, 12, 31, 6)


def test_non_utc_inputs_are_converted() -> None:
    paris = datetime(2026, 1, 1, 10, tzinfo=__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    result = parse_repeat({"h": 1}).next_date(paris, paris, paris, runs=1)
    assert result == utc(2026, 1, 1, 10)
    assert result.tzinfo is UTC


# --- limit and until --------------------------------------------------------------------


def test_limit_counts_runs_including_the_one_just_finished() -> None:
    anchor = utc(2026, 1, 1)
    rule = parse_repeat({"days": 1, "limit": 5})
    day4 = utc(2026, 1, 4)
    assert rule.next_date(anchor, day4, day4, runs=4) == utc(2026, 1, 5)
    assert rule.next_date(anchor, utc(2026, 1, 5), utc(2026, 1, 5), runs=5) is None
    assert rule.next_date(anchor, anchor, anchor, runs=6) is None


def test_limit_one_means_a_single_run() -> None:
    anchor = utc(2026, 1, 1)
    assert parse_repeat({"every": "P1D", "limit": 1}).next_date(anchor, anchor, anchor, 1) is None


def test_until_is_inclusive() -> None:
    anchor = utc(2026, 1, 1)
    rule = parse_repeat({"days": 1, "until": "2026-01-03"})
    assert rule.until == utc(2026, 1, 3)
    assert rule.next_date(anchor, utc(2026, 1, 2), utc(2026, 1, 2), runs=2) == utc(2026, 1, 3)
    assert rule.next_date(anchor, utc(2026, 1, 3), utc(2026, 1, 3), runs=3) is None


def test_until_a_millisecond_before_the_occurrence_stops() -> None:
    anchor = utc(2026, 1, 1)
    rule = parse_repeat({"days": 1, "until": "2026-01-01T23:59:59.999Z"})
    assert rule.next_date(anchor, anchor, anchor, runs=1) is None


def test_until_after_downtime_ends_the_series() -> None:
    anchor = utc(2026, 1, 1)
    rule = parse_repeat({"days": 1, "until": "2026-01-10"})
    assert rule.next_date(anchor, anchor, utc(2026, 2, 1), runs=1) is None


def test_upcoming_ignores_limit_and_until() -> None:
    anchor = utc(2026, 1, 1)
    rule = parse_repeat({"days": 1, "limit": 1, "until": "2026-01-01"})
    assert rule.upcoming(anchor, anchor, 2) == [utc(2026, 1, 2), utc(2026, 1, 3)]


# --- describe and shape -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"days": 7}, "every 7 days"),
        ({"d": 1}, "every 1 day"),
        ("P1M7D", "every 1 month and 7 days"),
        ("P1Y2M3DT4H5M6S", "every 1 year, 2 months, 3 days, 4 hours, 5 minutes and 6 seconds"),
        ("P2W", "every 2 weeks"),
        ({"ms": 1500}, "every 1500 milliseconds"),
        ("PT1.000001S", "every 1 second and 1 microsecond"),
        ({"days": 1, "limit": 5}, "every 1 day, 5 runs at most"),
        ({"days": 1, "limit": 1}, "every 1 day, 1 run at most"),
        ({"every": "PT1H", "until": "2027-01-01"}, "every 1 hour, until 2027-01-01T00:00:00.000Z"),
        ({"cron": "0 9 * * 1-5", "tz": "Europe/Paris"}, "cron 0 9 * * 1-5 (Europe/Paris)"),
        ({"cron": "0  9 * * *"}, "cron 0 9 * * * (UTC)"),
        ({"cron": "@daily", "limit": 2}, "cron @daily (UTC), 2 runs at most"),
    ],
)
def test_describe(value: object, text: str) -> None:
    assert parse_repeat(value).describe() == text


def test_rules_are_frozen_and_typed() -> None:
    rule = parse_repeat({"days": 1})
    assert isinstance(rule, Rule) and isinstance(rule, IntervalRule)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.days = 2  # type: ignore[misc]
    cron = parse_repeat({"cron": "0 9 * * *", "tz": "Europe/Paris", "limit": 3})
    assert cron == CronRule(expr="0 9 * * *", tz="Europe/Paris", limit=3)
    assert hash(cron) == hash(CronRule(expr="0 9 * * *", tz="Europe/Paris", limit=3))


# --- bad input --------------------------------------------------------------------------

UNIT_HELP = (
    "(use years, months, weeks, days, hours, minutes, seconds, milliseconds"
    " or y, M, w, d, h, m, s, ms)"
)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"dayz": 1}, f"repeat: unknown unit 'dayz' {UNIT_HELP}"),
        ({"D": 1}, f"repeat: unknown unit 'D' {UNIT_HELP}"),
        ({"Days": 1}, f"repeat: unknown unit 'Days' {UNIT_HELP}"),
        ({"days": 1, "tz": "UTC"}, f"repeat: unknown unit 'tz' {UNIT_HELP}"),
        ({"days": -1}, "repeat: days must be a non-negative integer, got -1"),
        ({"d": 1.5}, "repeat: d must be a non-negative integer, got 1.5"),
        ({"days": True}, "repeat: days must be a non-negative integer, got True"),
        ({"days": "7"}, "repeat: days must be a non-negative integer, got '7'"),
        ({"days": None}, "repeat: days must be a non-negative integer, got None"),
        ({"d": 1, "days": 2}, "repeat: 'd' and 'days' are the same unit"),
        ({"days": 1, "limit": 0}, "repeat: limit must be a positive integer, got 0"),
        ({"days": 1, "limit": -2}, "repeat: limit must be a positive integer, got -2"),
        ({"days": 1, "limit": 2.5}, "repeat: limit must be a positive integer, got 2.5"),
        ({"days": 1, "limit": True}, "repeat: limit must be a positive integer, got True"),
        ({"days": 1, "limit": "5"}, "repeat: limit must be a positive integer, got '5'"),
        ({"days": 1, "until": "2026-13-01"},
         "repeat.until: '2026-13-01' is not an ISO 8601 date or date-time "
         "(month must be in 1..12)"),
        ({"days": 1, "until": 5},
         "repeat.until: expected an ISO 8601 date or date-time string, got int 5"),
        ({"days": 10**12}, "repeat: the interval is too large"),
        ({"years": 10000}, "repeat: the interval is too large"),
        ({}, 'repeat: no units given (e.g. {"days": 1}, {"every": "P1D"} or '
             '{"cron": "0 9 * * *"})'),
        ({"limit": 3}, 'repeat: no units given (e.g. {"days": 1}, {"every": "P1D"} or '
                       '{"cron": "0 9 * * *"})'),
        ([1], "repeat: expected an object of units, an ISO 8601 duration string or a cron "
              "object, got list [1]"),
        (7, "repeat: expected an object of units, an ISO 8601 duration string or a cron "
            "object, got int 7"),
        (True, "repeat: expected an object of units, an ISO 8601 duration string or a cron "
               "object, got bool True"),
        ({"every": 7}, "repeat: every must be an ISO 8601 duration string, got 7"),
        ({"every": "P1D", "days": 1},
         "repeat: unknown key 'days' in a every rule (allowed: every, exclude, jitter, limit, "
         "until)"),
        ({"every": "1 day"},
         "repeat: '1 day' is not an ISO 8601 duration (like P1D, PT30M, P1M7D or PT0.5S)"),
    ],
)
def test_bad_values_have_exact_messages(value: object, message: str) -> None:
    with pytest.raises(RepeatError) as caught:
        parse_repeat(value)
    assert str(caught.value) == message


def test_repeat_error_is_a_value_error() -> None:
    assert issubclass(RepeatError, ValueError)


# --- cron -------------------------------------------------------------------------------


def cron(expr: str, tz: str | None = None, **extra: object) -> Rule:
    value: dict = {"cron": expr, **extra}
    if tz is not None:
        value["tz"] = tz
    rule = parse_repeat(value)
    assert isinstance(rule, CronRule)
    return rule


def chain(rule: Rule, start: datetime, count: int) -> list[datetime]:
    """Successive next_date calls as a worker makes them, each run ending 1 second later."""
    dates, scheduled, runs = [], start, 1
    for _ in range(count):
        scheduled = rule.next_date(start, scheduled, scheduled + timedelta(seconds=1), runs)
        dates.append(scheduled)
        runs += 1
    return dates


def test_cron_default_tz_is_utc() -> None:
    rule = cron("0 9 * * *")
    assert rule.tz == "UTC"
    assert rule.upcoming(utc(2026, 1, 1), utc(2026, 1, 1, 9), 2) == [
        utc(2026, 1, 2, 9), utc(2026, 1, 3, 9)
    ]


def test_cron_weekdays_in_paris() -> None:
    rule = cron("0 9 * * 1-5", "Europe/Paris")
    friday = utc(2026, 11, 27, 8)  # 09:00 CET
    assert rule.next_date(friday, friday, friday, runs=1) == utc(2026, 11, 30, 8)  # Monday


def test_cron_six_fields_means_trailing_seconds() -> None:
    rule = cron("0 9 * * * 30")
    assert rule.upcoming(utc(2026, 1, 1), utc(2026, 1, 1, 9), 2) == [
        utc(2026, 1, 1, 9, 0, 30), utc(2026, 1, 2, 9, 0, 30)
    ]


def test_cron_every_second() -> None:
    rule = cron("* * * * * *")
    start = utc(2026, 1, 1, 0, 0, 0, 400000)
    assert rule.upcoming(utc(2026, 1, 1), start, 2) == [utc(2026, 1, 1, 0, 0, 1),
                                                         utc(2026, 1, 1, 0, 0, 2)]


def test_cron_sub_second_now_is_strict() -> None:
    rule = cron("0 9 * * *")
    anchor = utc(2026, 1, 1)
    assert rule.next_date(anchor, anchor, utc(2026, 1, 1, 8, 59, 59, 999000), 1) == utc(
        2026, 1, 1, 9
    )
    assert rule.next_date(anchor, anchor, utc(2026, 1, 1, 9, 0, 0, 1000), 1) == utc(2026, 1, 2, 9)


def test_cron_alias() -> None:
    assert cron("@hourly").upcoming(utc(2026, 1, 1), utc(2026, 1, 1, 0, 30), 1) == [
        utc(2026, 1, 1, 1)
    ]


def test_cron_downtime_skips_to_the_future() -> None:
    rule = cron("0 9 * * *", "Europe/Paris")
    anchor = utc(2026, 1, 5, 8)
    assert rule.next_date(anchor, anchor, utc(2026, 6, 1, 12), runs=1) == utc(2026, 6, 2, 7)


def test_cron_limit_and_until() -> None:
    rule = cron("0 9 * * *", until="2026-01-03T09:00:00Z", limit=10)
    anchor = utc(2026, 1, 1, 9)
    assert rule.next_date(anchor, utc(2026, 1, 2, 9), utc(2026, 1, 2, 9), 2) == utc(2026, 1, 3, 9)
    assert rule.next_date(anchor, utc(2026, 1, 3, 9), utc(2026, 1, 3, 9), 3) is None
    assert rule.next_date(anchor, anchor, anchor, 10) is None


def test_cron_future_anchor_runs_first() -> None:
    anchor = utc(2026, 12, 1, 9, 17)
    assert cron("0 9 * * *").upcoming(anchor, utc(2026, 11, 25), 2) == [anchor, utc(2026, 12, 2, 9)]


# DST: Europe/Paris 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
# America/New_York 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.


def test_paris_nine_oclock_stays_local_across_both_changes() -> None:
    rule = cron("0 9 * * *", "Europe/Paris")
    assert chain(rule, utc(2026, 3, 27, 8), 3) == [
        utc(2026, 3, 28, 8), utc(2026, 3, 29, 7), utc(2026, 3, 30, 7)
    ]
    assert chain(rule, utc(2026, 10, 23, 7), 3) == [
        utc(2026, 10, 24, 7), utc(2026, 10, 25, 8), utc(2026, 10, 26, 8)
    ]


def test_paris_nonexistent_time_runs_once_at_the_end_of_the_gap() -> None:
    rule = cron("30 2 * * *", "Europe/Paris")
    # 02:30 CET on Mar 28 = 01:30Z; Mar 29 02:30 does not exist: 03:00 CEST = 01:00Z
    assert chain(rule, utc(2026, 3, 28, 1, 30), 3) == [
        utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)
    ]
    # asked from inside the night, before the gap: still that day, once
    anchor = utc(2026, 3, 28, 1, 30)
    assert rule.next_date(anchor, anchor, utc(2026, 3, 29, 0, 59), 1) == utc(2026, 3, 29, 1)
    assert rule.next_date(anchor, anchor, utc(2026, 3, 29, 1), 1) == utc(2026, 3, 30, 0, 30)


def test_paris_ambiguous_time_runs_once() -> None:
    rule = cron("30 2 * * *", "Europe/Paris")
    # Oct 25 02:30 happens at 00:30Z (CEST) and again at 01:30Z (CET): run at the first only
    assert chain(rule, utc(2026, 10, 24, 0, 30), 3) == [
        utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)
    ]
    anchor, first = utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30)
    for now in (utc(2026, 10, 25, 0, 31), utc(2026, 10, 25, 1), utc(2026, 10, 25, 1, 29)):
        assert rule.next_date(anchor, first, now, runs=2) == utc(2026, 10, 26, 1, 30)


def test_paris_half_hourly_fires_at_every_instant_through_both_changes() -> None:
    rule = cron("*/30 * * * *", "Europe/Paris")
    anchor = utc(2026, 1, 1)
    fall = rule.upcoming(anchor, utc(2026, 10, 25, 0, 10), 6)
    assert fall == [utc(2026, 10, 25, 0, 30) + timedelta(minutes=30 * i) for i in range(6)]
    spring = rule.upcoming(anchor, utc(2026, 3, 29, 0, 10), 4)
    assert spring == [utc(2026, 3, 29, 0, 30) + timedelta(minutes=30 * i) for i in range(4)]


def test_new_york_nine_oclock_stays_local_across_both_changes() -> None:
    rule = cron("0 9 * * *", "America/New_York")
    assert chain(rule, utc(2026, 3, 6, 14), 3) == [
        utc(2026, 3, 7, 14), utc(2026, 3, 8, 13), utc(2026, 3, 9, 13)
    ]
    assert chain(rule, utc(2026, 10, 30, 13), 3) == [
        utc(2026, 10, 31, 13), utc(2026, 11, 1, 14), utc(2026, 11, 2, 14)
    ]


def test_new_york_nonexistent_time_runs_once_at_the_end_of_the_gap() -> None:
    rule = cron("30 2 * * *", "America/New_York")
    # Mar 8 02:30 does not exist: 03:00 EDT = 07:00Z
    assert chain(rule, utc(2026, 3, 6, 7, 30), 3) == [
        utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)
    ]


def test_new_york_ambiguous_time_runs_once() -> None:
    rule = cron("30 1 * * *", "America/New_York")
    # Nov 1 01:30 happens at 05:30Z (EDT) and 06:30Z (EST): run at the first only
    assert chain(rule, utc(2026, 10, 31, 5, 30), 3) == [
        utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30), utc(2026, 11, 3, 6, 30)
    ]
    anchor, first = utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30)
    for now in (utc(2026, 11, 1, 5, 45), utc(2026, 11, 1, 6), utc(2026, 11, 1, 6, 29)):
        assert rule.next_date(anchor, first, now, runs=2) == utc(2026, 11, 2, 6, 30)


def test_new_york_hourly_keeps_the_repeated_hour() -> None:
    rule = cron("0 * * * *", "America/New_York")
    got = rule.upcoming(utc(2026, 1, 1), utc(2026, 11, 1, 4, 30), 4)
    assert got == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 6), utc(2026, 11, 1, 7),
                   utc(2026, 11, 1, 8)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"cron": "0 25 * * *"},
         "repeat: invalid cron expression '0 25 * * *' ([0 25 * * *] is not acceptable, "
         "out of range)"),
        ({"cron": "0 9 * *"},
         "repeat: cron '0 9 * *' must have 5 fields (minute hour day month weekday), "
         "or 6 with seconds last"),
        ({"cron": "0 9 * * * * 2027"},
         "repeat: cron '0 9 * * * * 2027' must have 5 fields (minute hour day month weekday), "
         "or 6 with seconds last"),
        ({"cron": "0 9 31 2 *"}, "repeat: cron '0 9 31 2 *' never matches a date"),
        ({"cron": "H 9 * * *"},
         "repeat: cron 'H 9 * * *' uses H or R (hashed or random), not supported"),
        ({"cron": "R 9 * * *"},
         "repeat: cron 'R 9 * * *' uses H or R (hashed or random), not supported"),
        ({"cron": "r 9 * * *"},
         "repeat: cron 'r 9 * * *' uses H or R (hashed or random), not supported"),
        ({"cron": "0 H(0-5) * * *"},
         "repeat: cron '0 H(0-5) * * *' uses H or R (hashed or random), not supported"),
        ({"cron": "@reboot"},
         "repeat: invalid cron expression '@reboot' (Exactly 5, 6 or 7 columns has to be "
         "specified for iterator expression.)"),
        ({"cron": ""}, "repeat: cron must be a cron expression string, got ''"),
        ({"cron": 5}, "repeat: cron must be a cron expression string, got 5"),
        ({"cron": "0 9 * * *", "tz": "Europe/Pari"},
         "repeat: unknown time zone 'Europe/Pari' (use an IANA name like Europe/Paris or UTC)"),
        ({"cron": "0 9 * * *", "tz": "../../etc/passwd"},
         "repeat: unknown time zone '../../etc/passwd' (use an IANA name like Europe/Paris "
         "or UTC)"),
        ({"cron": "0 9 * * *", "tz": 1}, "repeat: tz must be an IANA time zone name, got 1"),
        ({"cron": "0 9 * * *", "days": 1},
         "repeat: unknown key 'days' in a cron rule (allowed: cron, dst, exclude, jitter, limit, "
         "tz, until)"),
        ({"cron": "0 9 * * *", "limit": 0}, "repeat: limit must be a positive integer, got 0"),
    ],
)
def test_cron_bad_values_have_exact_messages(value: dict, message: str) -> None:
    with pytest.raises(RepeatError) as caught:
        parse_repeat(value)
    assert str(caught.value) == message


def test_cron_month_and_day_names_are_not_mistaken_for_hash() -> None:
    rule = cron("0 9 * MAR THU")
    assert rule.upcoming(utc(2026, 1, 1), utc(2026, 1, 1), 1) == [utc(2026, 3, 5, 9)]
    rule = cron("0 9 * mar fri")
    assert rule.upcoming(utc(2026, 1, 1), utc(2026, 1, 1), 1) == [utc(2026, 3, 6, 9)]


@pytest.mark.parametrize("value", [{"ms": 1}, {"ms": 999}, "PT0.5S", {"every": "PT0.999S"},
                                   {"s": 0, "ms": 500, "limit": 3}])
def test_an_interval_under_a_second_is_refused(value) -> None:
    with pytest.raises(RepeatError, match="is shorter than the minimum interval of 1 second"):
        parse_repeat(value)


@pytest.mark.parametrize("value", [{"s": 1}, {"ms": 1000}, "PT1S", {"M": 1}, {"y": 1}])
def test_an_interval_of_a_second_or_more_is_accepted(value) -> None:
    assert parse_repeat(value) is not None
