"""Dates: parsing, formatting and epoch milliseconds, all in UTC.

Decisions:

- The accepted grammar is ``ISO_DATE_RE``, a plain regex that the CouchDB design document
  (JavaScript) mirrors character for character: ASCII digits only, ``T`` or one space
  between date and time, upper-case ``T`` and ``Z`` only, no week or ordinal dates, no
  basic (separator-less) format, no ``24:00`` and no leap second ``:60``.
- A date alone is midnight UTC; a date-time without an offset is UTC, never the local zone.
- Fractions of a second keep microseconds; digits past the sixth are truncated, not rounded.
- The regex only gates the shape; ``datetime`` itself validates the calendar (month 13,
  February 30), so nothing here hand-rolls calendar rules.
- Every datetime returned is aware and in UTC; naive input to ``format_date`` and ``to_ms``
  is taken as UTC.
- ``utcnow`` is the only function that reads the clock; everything else takes ``now``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from dateutil.relativedelta import relativedelta

__all__ = [
    "ISO_DATE_RE",
    "DateError",
    "format_date",
    "from_ms",
    "parse_date",
    "parse_when",
    "shorthand",
    "to_ms",
    "utcnow",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Mirrored by the design document's JavaScript: keep it free of Python-only syntax.
ISO_DATE_RE = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?"
    r"(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?$"
)

# The one duration shorthand of After: ``30s``, ``15m``, ``6h``, ``7d``, ``1w``, ``1M``
# (months: ``m`` is minutes), ``1y``, ``500ms``, combined (``1h30m``). Relative times are
# it after a ``+`` (``after add --at +1h30m``); ``every`` (the Client, ``after add --every``)
# and the keys of a ``repeat`` object of units (after.rules.repeat) use it as well.
SHORTHANDS = {
    "y": "years", "M": "months", "w": "weeks", "d": "days",
    "h": "hours", "m": "minutes", "s": "seconds", "ms": "milliseconds",
}
SHORTHAND_RE = re.compile(r"(?:[0-9]+(?:ms|[yMwdhms]))+")
_SHORTHAND_PART_RE = re.compile(r"([0-9]+)(ms|[yMwdhms])")


def shorthand(text: object) -> list[tuple[str, int]] | None:
    """``"1h30m"`` as ``[("hours", 1), ("minutes", 30)]``, in the order written; None when
    ``text`` is not a duration shorthand."""
    if not isinstance(text, str) or not SHORTHAND_RE.fullmatch(text):
        return None
    return [(SHORTHANDS[unit], int(n)) for n, unit in _SHORTHAND_PART_RE.findall(text)]



class DateError(ValueError):
    """A value is not a date After accepts; the message names the field and the value."""


def _not_iso(field: str, value: str, reason: str = "") -> DateError:
    suffix = f" ({reason})" if reason else ""
    return DateError(f"{field}: {value!r} is not an ISO 8601 date or date-time{suffix}")


def _offset(text: str | None) -> timezone:
    """Turn ``Z``, ``±HH:MM``, ``±HHMM`` or ``±HH`` into a fixed-offset timezone."""
    if text is None or text == "Z":
        return UTC
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError("offset must be within -23:59..+23:59")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)


def parse_date(value: object, field: str = "date") -> datetime:
    """Parse an ISO 8601 date or date-time (see ``ISO_DATE_RE``) into an aware UTC datetime."""
    if not isinstance(value, str):
        raise DateError(
            f"{field}: expected an ISO 8601 date or date-time string, "
            f"got {type(value).__name__} {value!r}"
        )
    match = ISO_DATE_RE.fullmatch(value)
    if match is None:
        raise _not_iso(field, value)
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    microsecond = int((fraction or "")[:6].ljust(6, "0"))
    try:
        parsed = datetime(
            int(year), int(month), int(day),
            int(hour or 0), int(minute or 0), int(second or 0), microsecond,
            tzinfo=_offset(offset),
        )
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise _not_iso(field, value, str(exc)) from None


def _as_utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def format_date(dt: datetime) -> str:
    """Canonical form ``2026-12-01T09:00:00.000Z`` (UTC, milliseconds; naive means UTC)."""
    dt = _as_utc(dt)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T"
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


def to_ms(dt: datetime) -> int:
    """Epoch milliseconds (floored; naive means UTC)."""
    return (_as_utc(dt) - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    """The aware UTC datetime for epoch milliseconds."""
    return EPOCH + timedelta(milliseconds=ms)


def utcnow() -> datetime:
    """The current time, aware UTC. The one place in After's pure logic that reads the clock."""
    return datetime.now(UTC)


def parse_when(text: object, now: datetime, field: str = "when") -> datetime:
    """Parse a CLI time: ``now``, ``+30s``/``+15m``/``+6h``/``+2d``/``+1w``/``+500ms``
    (combinable: ``+1h30m``; repeated units add up), or anything ``parse_date`` accepts."""
    if isinstance(text, str):
        stripped = text.strip()
        if stripped == "now":
            return _as_utc(now)
        parts = shorthand(stripped[1:]) if stripped.startswith("+") else None
        if parts is not None:
            amounts: dict[str, int] = {}
            for unit, n in parts:  # (a unit given twice adds up)
                amounts[unit] = amounts.get(unit, 0) + n
            try:
                return _as_utc(now) + relativedelta(
                    years=amounts.pop("years", 0), months=amounts.pop("months", 0),
                    microseconds=1000 * amounts.pop("milliseconds", 0), **amounts)
            except (OverflowError, ValueError):
                raise DateError(f"{field}: {text!r} is too far in the future") from None
        if ISO_DATE_RE.fullmatch(stripped):
            return parse_date(stripped, field)
    raise DateError(
        f"{field}: {text!r} is not 'now', a relative time (+30s, +15m, +6h, +2d, +1w, +1M, "
        "+500ms, +1h30m) or an ISO 8601 date or date-time"
    )
