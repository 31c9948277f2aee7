"""after.rules.dates: the accepted ISO 8601 grammar, UTC everywhere, epoch ms, CLI times."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from after.rules.dates import (
    ISO_DATE_RE,
    SHORTHANDS,
    DateError,
    format_date,
    from_ms,
    parse_date,
    parse_when,
    to_ms,
    utcnow,
)

NOW = datetime(2026, 11, 25, 8, 0, 0, 250000, tzinfo=UTC)
PLUS_ONE = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T09:00", datetime(2026, 12, 1, 9, tzinfo=UTC)),
        ("2026-12-01 09:00", datetime(2026, 12, 1, 9, tzinfo=UTC)),
        ("2026-12-01T09:00:05", datetime(2026, 12, 1, 9, 0, 5, tzinfo=UTC)),
        ("2026-12-01T09:00:00Z", datetime(2026, 12, 1, 9, tzinfo=UTC)),
        ("2026-12-01T09:00:00.5Z", datetime(2026, 12, 1, 9, 0, 0, 500000, tzinfo=UTC)),
        ("2026-12-01T09:00:00.123Z", datetime(2026, 12, 1, 9, 0, 0, 123000, tzinfo=UTC)),
        ("2026-12-01T09:00:00.123456", datetime(2026, 12, 1, 9, 0, 0, 123456, tzinfo=UTC)),
        # digits past the microsecond are truncated, not rounded
        ("2026-12-01T09:00:00.1234567999Z", datetime(2026, 12, 1, 9, 0, 0, 123456, tzinfo=UTC)),
        ("2026-12-01T09:00:00+02:00", datetime(2026, 12, 1, 7, tzinfo=UTC)),
        ("2026-12-01T09:00:00+0200", datetime(2026, 12, 1, 7, tzinfo=UTC)),
        ("2026-12-01T09:00+02", datetime(2026, 12, 1, 7, tzinfo=UTC)),
        ("2026-12-01T09:00:00-05:30", datetime(2026, 12, 1, 14, 30, tzinfo=UTC)),
        ("2026-12-01T01:00:00+03:00", datetime(2026, 11, 30, 22, tzinfo=UTC)),
        ("2028-02-29", datetime(2028, 2, 29, tzinfo=UTC)),
    ],
)
def test_parse_date_accepts_the_grammar(text: str, expected: datetime) -> None:
    parsed = parse_date(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)
    assert parsed.tzinfo is UTC


def test_parse_date_without_offset_is_utc_not_local() -> None:
    assert parse_date("2026-07-01T12:00:00").tzinfo is UTC
    assert to_ms(parse_date("1970-01-01T00:00:01")) == 1000


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026-13-01", " (month must be in 1..12)"),
        ("2026-02-30", " (day is out of range for month)"),
        ("2026-02-29", " (day is out of range for month)"),
        ("2026-00-10", " (month must be in 1..12)"),
        ("2026-12-01T24:00", " (hour must be in 0..23)"),
        ("2026-12-01T09:60", " (minute must be in 0..59)"),
        ("2026-12-01T09:00:60", " (second must be in 0..59)"),
        ("2026-12-01T09:00+24:00", " (offset must be within -23:59..+23:59)"),
        ("2026-12-01T09:00+02:60", " (offset must be within -23:59..+23:59)"),
        ("0000-01-01", " (year 0 is out of range)"),
        ("", ""),
        ("2026-12-1", ""),
        ("20261201", ""),
        ("2026-W49-1", ""),
        ("2026-335", ""),
        ("2026-12-01T09", ""),
        ("2026-12-01t09:00", ""),
        ("2026-12-01T09:00z", ""),
        ("2026-12-01T09:00:00.Z", ""),
        ("2026-12-01T09:00:00,5Z", ""),
        ("2026-12-01T0900", ""),
        ("2026-12-01  09:00", ""),
        (" 2026-12-01", ""),
        ("2026-12-01\n", ""),
        ("2026-12-01T09:00:00+2", ""),
        ("2026-12-01T09:00:00 +02:00", ""),
        ("２０２６-12-01", ""),
        ("tomorrow", ""),
    ],
)
def test_parse_date_rejects_with_exact_message(text: str, reason: str) -> None:
    with pytest.raises(DateError) as caught:
        parse_date(text)
    assert str(caught.value) == f"date: {text!r} is not an ISO 8601 date or date-time{reason}"


def test_parse_date_error_names_the_field() -> None:
    with pytest.raises(DateError, match=r"^repeat\.until: '2026-13-01' is not"):
        parse_date("2026-13-01", field="repeat.until")


@pytest.mark.parametrize(
    ("value", "shown"),
    [(5, "int 5"), (None, "NoneType None"), (1.5, "float 1.5"), (["2026-12-01"], "list")],
)
def test_parse_date_rejects_non_strings(value: object, shown: str) -> None:
    with pytest.raises(DateError) as caught:
        parse_date(value, field="date")
    message = str(caught.value)
    assert message.startswith(f"date: expected an ISO 8601 date or date-time string, got {shown}")


def test_date_error_is_a_value_error() -> None:
    assert issubclass(DateError, ValueError)


def test_regex_is_anchored_and_simple() -> None:
    assert ISO_DATE_RE.pattern.startswith("^") and ISO_DATE_RE.pattern.endswith("$")
    # no Python-only constructs the JavaScript mirror could not copy
    for construct in ("(?P<", "\\d", "\\Z", "(?<"):
        assert construct not in ISO_DATE_RE.pattern
    assert ISO_DATE_RE.match("2026-12-01T09:00:00.000Z")


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        (datetime(2026, 12, 1, 9, tzinfo=UTC), "2026-12-01T09:00:00.000Z"),
        (datetime(2026, 12, 1, 9, 0, 0, 123999, tzinfo=UTC), "2026-12-01T09:00:00.123Z"),
        (datetime(2026, 12, 1, 9), "2026-12-01T09:00:00.000Z"),
        (datetime(2026, 12, 1, 10, tzinfo=PLUS_ONE), "2026-12-01T09:00:00.000Z"),
        (datetime(2, 1, 1, tzinfo=UTC), "0002-01-01T00:00:00.000Z"),
    ],
)
def test_format_date(dt: datetime, text: str) -> None:
    assert format_date(dt) == text


def test_format_then_parse_round_trips_at_ms_precision() -> None:
    dt = datetime(2026, 3, 29, 1, 2, 3, 456000, tzinfo=UTC)
    assert parse_date(format_date(dt)) == dt


def test_to_ms_and_from_ms() -> None:
    assert to_ms(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert to_ms(datetime(2026, 12, 1, 9, tzinfo=UTC)) == 1_796_115_600_000
    assert to_ms(datetime(2026, 12, 1, 9, 0, 0, 1999, tzinfo=UTC)) == 1_796_115_600_001
    assert to_ms(datetime(2026, 12, 1, 9)) == 1_796_115_600_000
    assert to_ms(datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC)) == -1
    assert from_ms(1_796_115_600_001) == datetime(2026, 12, 1, 9, 0, 0, 1000, tzinfo=UTC)
    assert from_ms(0).tzinfo is UTC
    assert from_ms(to_ms(NOW)) == NOW


def test_utcnow_is_aware_utc() -> None:
    before = datetime.now(UTC)
    now = utcnow()
    assert now.tzinfo is UTC
    assert before <= now <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("now", timedelta(0)),
        ("  now ", timedelta(0)),
        ("+30s", timedelta(seconds=30)),
        ("+15m", timedelta(minutes=15)),
        ("+6h", timedelta(hours=6)),
        ("+2d", timedelta(days=2)),
        ("+1w", timedelta(weeks=1)),
        ("+500ms", timedelta(milliseconds=500)),
        ("+1h30m", timedelta(hours=1, minutes=30)),
        ("+1m1ms", timedelta(minutes=1, milliseconds=1)),
        ("+1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("+0s", timedelta(0)),
    ],
)
def test_parse_when_relative(text: str, delta: timedelta) -> None:
    assert parse_when(text, NOW) == NOW + delta


def test_parse_when_converts_now_to_utc() -> None:
    paris_now = NOW.astimezone(PLUS_ONE)
    result = parse_when("+1h", paris_now)
    assert result == datetime(2026, 11, 25, 9, 0, 0, 250000, tzinfo=UTC)
    assert result.tzinfo is UTC


def test_parse_when_absolute() -> None:
    assert parse_when("2026-12-01T09:00:00+01:00", NOW) == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert parse_when("2026-12-01", NOW) == datetime(2026, 12, 1, tzinfo=UTC)


def test_parse_when_out_of_range_date_keeps_the_precise_message() -> None:
    with pytest.raises(DateError) as caught:
        parse_when("2026-02-30", NOW)
    expected = (
        "when: '2026-02-30' is not an ISO 8601 date or date-time (day is out of range for month)"
    )
    assert str(caught.value) == expected


@pytest.mark.parametrize(
    "text", ["", "soon", "+", "+5", "+5x", "-5m", "+1.5h", "+5 m", "5m", "Now", "+1mo", 5, None]
)
def test_parse_when_rejects(text: object) -> None:
    with pytest.raises(DateError) as caught:
        parse_when(text, NOW)
    assert str(caught.value) == (
        f"when: {text!r} is not 'now', a relative time (+30s, +15m, +6h, +2d, +1w, +1M, "
        "+500ms, +1h30m) or an ISO 8601 date or date-time"
    )


def test_relative_times_and_every_share_one_grammar_with_calendar_months_and_years() -> None:
    from after.client import every_units

    assert parse_when("+1M", NOW) == NOW.replace(year=NOW.year + (NOW.month == 12),
                                                 month=NOW.month % 12 + 1)
    assert parse_when("+1y2d", NOW) == NOW.replace(year=NOW.year + 1) + timedelta(days=2)
    assert parse_when("+1h1h", NOW) == NOW + timedelta(hours=2)  # a unit twice adds up
    assert every_units("1y2d") == {"years": 1, "days": 2}
    expected = {"1M": NOW.replace(month=1, year=NOW.year + 1) if NOW.month == 12
                else NOW.replace(month=NOW.month + 1),
                "1h30m": NOW + timedelta(minutes=90), "500ms": NOW + timedelta(seconds=0.5),
                "2w": NOW + timedelta(days=14)}
    for text, when in expected.items():
        assert parse_when(f"+{text}", NOW) == when
        assert set(every_units(text)) <= set(SHORTHANDS.values())


def test_parse_when_too_far() -> None:
    with pytest.raises(DateError, match=r"^when: '\+99999999999w' is too far in the future$"):
        parse_when("+99999999999w", NOW)
