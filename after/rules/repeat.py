"""Repeat rules: parse a task's ``repeat`` field and compute its next occurrence.

Accepted forms (DESIGN.md):

- an object of units, ``{"months": 1, "days": 7}``, with shorthands ``y M w d h m s ms``
  (case matters: ``M`` is months, ``m`` minutes), plus optional ``limit`` and ``until``;
- an ISO 8601 duration string, ``"P1M7D"``, or ``{"every": "P1M7D", "limit": 3}``;
- ``{"cron": "0 9 * * 1-5", "tz": "Europe/Paris"}`` with optional ``limit`` and ``until``.

Decisions:

- Unit values and ``limit`` are non-negative integers (``limit`` positive); a float is
  accepted only when integral (``7.0``, as some JSON encoders write it); booleans and
  strings are refused. At least one unit must be above zero. A unit given twice (``d`` and
  ``days``) is an error.
- Interval arithmetic is in UTC: a day is 24 hours, months and years are calendar-correct
  (``relativedelta``: Jan 31 + 1 month is Feb 28, and Feb 29 + 1 year is Feb 28). Occurrence
  ``k`` is always ``anchor + k * interval`` computed from the anchor, so month ends do not
  drift. A wall-clock schedule in a time zone ("09:00 in Paris") is a cron rule.
- ISO durations: ``PnYnMnWnDTnHnMnS``; ``W`` may be combined with other units; only the last
  component may have a fraction (``.`` or ``,``), never years or months; fractions finer than
  a microsecond are truncated. Zero, negative and empty durations (``P``, ``PT``) are errors.
- Cron: 5 fields, or 6 where the 6th is seconds (croniter's default); ``@daily``-style
  aliases are allowed; croniter's hashed/random ``H``/``R`` and the 7-field year form are
  refused (an occurrence must be the same on every worker). ``tz`` is an IANA name (default
  UTC).
- Daylight saving time (``dst``, a cron rule with a ``tz``): the expression names local
  wall-clock times (croniter reads it on the zone's wall clock, with no zone); each is then
  placed on the time line by the zone and the rule's :class:`Dst` policy. A local time that
  does not exist (02:30 on a spring-forward day in New York) is ``shift``-ed to the first
  instant after the gap (the moment the clocks jump: 03:00 local), or ``skip``-ped; several
  of a gap's times shifted are one occurrence. A local time that occurs twice (01:30 on a
  fall-back day) runs at its ``first`` instance, its ``last``, or ``both``. By default, an
  expression with a fixed hour field (``30 1 * * *``, a wall-clock appointment) is
  ``shift`` and ``first``: it runs once a day whatever the clocks do; one whose hour field
  is ``*`` (``*/30 * * * *``, ``@hourly``: a periodic rule) is ``skip`` and ``both``: it
  fires at every instant whose local time matches, through the repeated hour too, and at
  none in the hour that does not exist. Those defaults are what earlier versions did
  (croniter's own reading, with the second instance of a fixed time left out), but for one
  thing: croniter left out the second pass of a periodic rule's times in a fold of half an
  hour (Lord Howe Island's 01:40 of the fall-back night), which ``both`` runs. Why the
  first instant after the gap and not the time moved by the gap's length (02:30 to 03:30,
  as java.time and Python's ``fold=0`` do): it is what croniter and ISC cron do ("jobs in
  the skipped interval run immediately after"), so the default stays what it was, and an
  occurrence moved never lands among the expression's own later times. Quartz's CronTrigger
  and Temporal's schedules skip the gap (``skip`` here); Temporal fires a repeated time
  twice (``both``), Quartz once (``first``).
- ``next_date`` returns the first occurrence strictly after both ``scheduled`` and ``now``:
  after downtime, missed periods are skipped, not replayed. ``limit`` counts runs; ``until``
  is inclusive.
- The anchor is an occurrence itself: when it is later than the time asked about, it is the
  next occurrence (for cron too, since a task first runs at its ``date``).
- Every datetime returned is aware UTC.
- ``jitter`` (object forms only, with ``limit`` and ``until``): seconds, 0 to ``MAX_JITTER``
  (a year). The rule's occurrences stay where they are; each is *run* later by a
  deterministic amount in [0, jitter) (:mod:`after.rules.occurrence`), so ``next_date`` and
  ``upcoming`` return nominal dates and :mod:`after.rules.task` moves them.
"""

# Longer than 500 lines on purpose: the three forms of ``repeat`` (units, ISO 8601, cron with its
# DST policy) share the parsing of limit, until, exclude and jitter, and each has its
# next-occurrence arithmetic beside its parsing.

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter
from dateutil.relativedelta import relativedelta

from after.rules.calendar import CalendarError, Exclusion, parse_exclude
from after.rules.dates import SHORTHANDS, DateError, format_date, parse_date
from after.rules.fields import FieldError
from after.rules.jsonsafe import show

__all__ = [
    "ISO_DURATION_RE", "CronRule", "Dst", "IntervalRule", "RepeatError", "Rule",
    "parse_duration", "parse_repeat",
]


UNITS = ("years", "months", "weeks", "days", "hours", "minutes", "seconds", "milliseconds")
#: The shortest interval a task may repeat at. Ten tasks at 1 ms ran 163 times a second and
#: made every other task of their worker late; a second is what cron's seconds field allows.
MIN_INTERVAL_US = 1_000_000
#: The longest ``jitter``: a year, in seconds.
MAX_JITTER = 366 * 86400
_UNIT_HELP = f"use {', '.join(UNITS)} or {', '.join(SHORTHANDS)}"

_NUM = r"[0-9]+(?:[.,][0-9]+)?"
ISO_DURATION_RE = re.compile(
    rf"P(?:(?P<years>{_NUM})Y)?(?:(?P<months>{_NUM})M)?(?:(?P<weeks>{_NUM})W)?"
    rf"(?:(?P<days>{_NUM})D)?"
    rf"(?:T(?=[0-9])(?:(?P<hours>{_NUM})H)?(?:(?P<minutes>{_NUM})M)?(?:(?P<seconds>{_NUM})S)?)?"
)

_US = {  # microseconds per fixed-length unit
    "weeks": 7 * 86_400_000_000, "days": 86_400_000_000, "hours": 3_600_000_000,
    "minutes": 60_000_000, "seconds": 1_000_000, "microseconds": 1,
}
# Mean lengths, only to estimate k before stepping to the exact occurrence.
_MEAN_YEAR_US = 31_556_952_000_000  # 365.2425 days
_MEAN_MONTH_US = _MEAN_YEAR_US // 12

#: ``repeat.dst.gap``: a local time that does not exist (the clocks spring forward) runs at
#: the first instant after the gap, or not at all.
SHIFT, SKIP = "shift", "skip"
GAPS = (SHIFT, SKIP)
#: ``repeat.dst.fold``: a local time that occurs twice (the clocks fall back) runs at its
#: first instance, its last, or both.
FIRST, LAST, BOTH = "first", "last", "both"
FOLDS = (FIRST, LAST, BOTH)
DST_HELP = '{"gap": "shift" or "skip", "fold": "first", "last" or "both"}'

_CRON_RANDOM_RE = re.compile(r"(?<![A-Za-z])[HR](?![A-Za-z])", re.IGNORECASE)


class RepeatError(FieldError):
    """A ``repeat`` value After cannot use; the message names the field and says why, and
    ``field`` names it on its own (``repeat.tz`` for ``repeat: tz must be ...``)."""


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


@dataclass(frozen=True, kw_only=True)
class Rule:
    """What every rule has: ``limit`` (total runs), ``until`` (inclusive, aware UTC) and
    ``exclude`` (days skipped, :mod:`after.rules.calendar`)."""

    limit: int | None = None
    until: datetime | None = None
    jitter: float = 0.0
    exclude: Exclusion | None = None

    @property
    def zone(self) -> str:
        """The time zone whose days ``exclude`` names (a cron rule's ``tz``, else UTC)."""
        return getattr(self, "tz", "UTC")

    def _first_after(self, anchor: datetime, after: datetime) -> datetime | None:
        raise NotImplementedError

    def _describe(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        """Human text, e.g. ``every 7 days, 5 runs at most``."""
        text = self._describe()
        if self.limit is not None:
            text += f", {self.limit} run{'s' if self.limit != 1 else ''} at most"
        if self.until is not None:
            text += f", until {format_date(self.until)}"
        if self.jitter:
            text += f", jitter {self.jitter:g}s"
        return text

    def next_date(
        self, anchor: datetime, scheduled: datetime, now: datetime, runs: int
    ) -> datetime | None:
        """The first occurrence strictly after ``scheduled`` and ``now``, or None when
        ``runs`` (runs done, including the one just finished) reached ``limit`` or the
        occurrence is past ``until``."""
        if self.limit is not None and runs >= self.limit:
            return None
        found = self._first_after(_utc(anchor), max(_utc(scheduled), _utc(now)))
        if found is None or (self.until is not None and found > self.until):
            return None
        return found

    def between(self, anchor: datetime, start: datetime, end: datetime,
                most: int) -> list[datetime]:
        """The occurrences from ``start`` to ``end`` (both inclusive, and before the anchor
        too: a backfill may reach back before a task was created), in order; at most
        ``most + 1`` of them, so that a caller can tell a window holds more than ``most``.
        ``until`` is honoured, ``limit`` is not (it counts the schedule's runs)."""
        start, end = _utc(start), _utc(end)
        if self.until is not None:
            end = min(end, self.until)
        found = self._between(_utc(anchor), start, end, most + 1) if start <= end else []
        return found[:most + 1]

    def _between(self, anchor: datetime, start: datetime, end: datetime,
                 count: int) -> list[datetime]:
        raise NotImplementedError

    def last(self, anchor: datetime, start: datetime, end: datetime,
             most: int) -> list[datetime]:
        """The last occurrences from ``start`` to ``end`` (both inclusive; ``until``
        honoured, ``limit`` not), in order: at most ``most + 1`` of them, so that a caller
        can tell a window holds more than ``most``. Searched back from ``end`` over spans
        that double (and halve where one holds too many at once), so that a window of
        years costs what its last occurrences cost: what a catch-up reads of a long
        downtime (:mod:`after.rules.catchup`)."""
        start, end = _utc(start), _utc(end)
        if self.until is not None:
            end = min(end, self.until)
        if start > end:
            return []
        want, cap = most + 1, 4 * (most + 1)
        anchor, span, fewer = _utc(anchor), timedelta(seconds=1), end
        while True:
            try:
                low = max(start, end - span)
            except OverflowError:  # before year 1
                low = start
            found = self._between(anchor, low, end, cap + 1)
            if len(found) > cap:  # too many to read at once: narrow down between the two
                more = low
                while fewer - more > timedelta(microseconds=1):
                    middle = more + (fewer - more) / 2
                    found = self._between(anchor, middle, end, cap + 1)
                    if len(found) > cap:
                        more = middle
                    elif len(found) >= want:
                        break
                    else:
                        fewer = middle
                return found[-want:]  # (occurrences are instants apart: it converges)
            if len(found) >= want or low == start:
                return found[-want:]
            fewer, span = low, span * 2

    def falling(self, anchor: datetime, after: datetime, end: datetime,
                most: int) -> list[datetime]:
        """The occurrences strictly after ``after`` and at or before ``end`` (and ``until``),
        the first ``most`` of them (ignores limit): those that fell due while a run went."""
        last = _utc(end) if self.until is None else min(_utc(end), self.until)
        anchor, cursor = _utc(anchor), _utc(after)
        found: list[datetime] = []
        while len(found) < most:
            nxt = self._first_after(anchor, cursor)
            if nxt is None or nxt > last:
                break
            found.append(nxt)
            cursor = nxt
        return found

    def upcoming(self, anchor: datetime, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` occurrences strictly after ``after`` (ignores limit/until)."""
        anchor, cursor = _utc(anchor), _utc(after)
        found: list[datetime] = []
        while len(found) < count:
            nxt = self._first_after(anchor, cursor)
            if nxt is None:
                break
            found.append(nxt)
            cursor = nxt
        return found


@dataclass(frozen=True, kw_only=True)
class IntervalRule(Rule):
    """Every fixed calendar interval from the anchor (object of units or ISO duration)."""

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0
    microseconds: int = 0

    def occurrence(self, anchor: datetime, k: int) -> datetime:
        """``anchor + k * interval``, months and years first (clipped to month end)."""
        return anchor + relativedelta(years=k * self.years, months=k * self.months) + timedelta(
            weeks=k * self.weeks, days=k * self.days, hours=k * self.hours,
            minutes=k * self.minutes, seconds=k * self.seconds,
            microseconds=k * self.microseconds,
        )

    def _mean_us(self) -> int:
        fixed = sum(getattr(self, unit) * us for unit, us in _US.items())
        return self.years * _MEAN_YEAR_US + self.months * _MEAN_MONTH_US + fixed

    def _at(self, anchor: datetime, k: int) -> datetime | None:
        """Occurrence ``k``, or None off the calendar (before year 1 when ``k`` < 0, after
        9999 otherwise)."""
        try:
            return self.occurrence(anchor, k)
        except (OverflowError, ValueError):
            return None

    def _between(self, anchor: datetime, start: datetime, end: datetime,
                 count: int) -> list[datetime]:
        # k may be negative: occurrences before the anchor are anchor + k * interval too
        k = (start - anchor) // timedelta(microseconds=1) // self._mean_us()
        while True:  # back to the last occurrence before start, or the calendar's start
            at = self._at(anchor, k)
            if (at is None and k < 0) or (at is not None and at < start):
                break
            k -= 1
        found: list[datetime] = []
        while len(found) < count:
            k += 1
            at = self._at(anchor, k)
            if at is None and k < 0:
                continue  # still before year 1
            if at is None or at > end:  # past year 9999, or the window
                break
            if at >= start:
                found.append(at)
        return found

    def _first_after(self, anchor: datetime, after: datetime) -> datetime | None:
        if anchor > after:
            return anchor
        k = max(1, (after - anchor) // timedelta(microseconds=1) // self._mean_us())
        try:
            while k > 1 and self.occurrence(anchor, k - 1) > after:
                k -= 1
            while (found := self.occurrence(anchor, k)) <= after:
                k += 1
        except (OverflowError, ValueError):  # past year 9999: no more occurrences
            return None
        return found

    def _describe(self) -> str:
        amounts = [(unit, getattr(self, unit)) for unit in UNITS[:-1]]
        if self.microseconds % 1000 == 0:
            amounts.append(("milliseconds", self.microseconds // 1000))
        else:
            amounts.append(("microseconds", self.microseconds))
        parts = [f"{n} {unit[:-1] if n == 1 else unit}" for unit, n in amounts if n]
        joined = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
        return f"every {joined}"


@dataclass(frozen=True)
class Dst:
    """A cron rule's daylight saving time policy, as written (``repeat.dst``): None where
    the rule's default applies (see :attr:`CronRule.gap` and :attr:`CronRule.fold`)."""

    gap: str | None = None
    fold: str | None = None


@dataclass(frozen=True, kw_only=True)
class CronRule(Rule):
    """Occurrences of a cron expression in an IANA time zone (see the module docstring)."""

    expr: str
    tz: str = "UTC"
    dst: Dst = Dst()

    @cached_property
    def periodic(self) -> bool:
        """The hour field is ``*``: a periodic rule, not a wall-clock appointment."""
        return croniter(self.expr, datetime(2000, 1, 1)).expanded[1] == ["*"]

    @property
    def gap(self) -> str:
        """What a local time that does not exist becomes: SHIFT by default, SKIP for a
        periodic rule (it fires at the instants whose local time matches: none there)."""
        return self.dst.gap or (SKIP if self.periodic else SHIFT)

    @property
    def fold(self) -> str:
        """Which instances of a local time that occurs twice run: FIRST by default, BOTH for
        a periodic rule."""
        return self.dst.fold or (BOTH if self.periodic else FIRST)

    def instants(self, wall: datetime) -> tuple[datetime, list[datetime]]:
        """The occurrences of the local wall-clock time ``wall`` (naive), in order, by the
        policy; and the earliest instant it could have under any policy (the end of its gap
        for a time that does not exist), which never decreases as ``wall`` grows."""
        zone = ZoneInfo(self.tz)
        first = wall.replace(tzinfo=zone).astimezone(UTC)
        second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
        if first == second:
            return first, [first]
        if first < second:  # the clocks fell back: it occurs twice
            chosen = {FIRST: [first], LAST: [second], BOTH: [first, second]}[self.fold]
            return first, chosen
        end = gap_end(zone, second, first)  # it does not exist: read after and before it
        return end, [end] if self.gap == SHIFT else []

    def _first_after(self, anchor: datetime, after: datetime) -> datetime | None:
        if anchor > after:
            return anchor
        best = None
        try:
            local = after.astimezone(ZoneInfo(self.tz))
            start = local.replace(tzinfo=None)
            if self.fold != FIRST and local.fold == 0:
                # in the first pass of a repeated hour: the second pass of an earlier wall
                # time is still ahead
                start -= local.replace(fold=1).astimezone(UTC) - after
            walls = croniter(self.expr, start - timedelta(seconds=1))
            for _ in range(_MOST_WALLS):
                low, found = self.instants(walls.get_next(datetime))
                if best is not None and low > best:
                    return best
                for at in found:
                    if at > after and (best is None or at < best):
                        best = at
                if best is not None and best == low:
                    return best  # no later wall time has an earlier instance
        except (CroniterBadDateError, OverflowError, ValueError):  # past the calendar's end
            return best
        return best

    def _between(self, anchor: datetime, start: datetime, end: datetime,
                 count: int) -> list[datetime]:
        # the cron times of the window, whatever the anchor; the anchor is an occurrence too
        found = {anchor} if start <= anchor <= end else set()
        try:
            cursor = start - timedelta(microseconds=1)
        except OverflowError:  # the calendar's first instant (croniter cannot go there)
            cursor = start
        before_all = datetime(1, 1, 2, tzinfo=UTC)
        while len(found) < count + 1:
            at = self._first_after(before_all, cursor)
            if at is None or at > end:
                break
            found.add(at)
            cursor = at
        return sorted(found)[:count]

    def _describe(self) -> str:
        policy = [f"{name} {value}" for name, value in (("gap", self.dst.gap),
                                                        ("fold", self.dst.fold)) if value]
        return f"cron {self.expr} ({self.tz})" + (f", dst {', '.join(policy)}" if policy
                                                  else "")


#: Wall-clock times one search looks at before it gives up: a rule whose times all fall in
#: gaps it skips (none known) ends there rather than looping.
_MOST_WALLS = 100_000


def gap_end(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The instant the clocks of ``zone`` jump forward at, between ``before`` (read with
    the offset after the jump, so still before it) and ``after`` (read with the offset
    before it, so past it): the first instant after a gap. Transitions fall on whole
    seconds."""
    target = after.astimezone(zone).utcoffset()
    low, high = int(before.timestamp()), -int(-after.timestamp() // 1)
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _whole(field: str, value: object, minimum: int) -> int:
    """An int (or integral float) >= minimum, else RepeatError."""
    kind = "a positive" if minimum > 0 else "a non-negative"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        shown = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 40 \
            else "a number that large"
        raise RepeatError(f"repeat: {field} must be {kind} integer, got {shown[:60]}",
                          field=f"repeat.{field}")
    return value


def _limits(raw: dict) -> dict:
    """The optional ``limit``, ``until``, ``exclude`` and ``jitter`` of an object form."""
    out: dict = {}
    if "limit" in raw:
        out["limit"] = _whole("limit", raw["limit"], 1)
    if "until" in raw:
        try:
            out["until"] = parse_date(raw["until"], field="repeat.until")
        except DateError as exc:
            raise RepeatError(str(exc)) from None
    if "exclude" in raw:
        try:
            out["exclude"] = parse_exclude(raw["exclude"])
        except CalendarError as exc:
            raise RepeatError(str(exc)) from None
    if "jitter" in raw:
        value = raw["jitter"]
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not 0 <= value <= MAX_JITTER:
            shown = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 40 \
                else "a number that large"
            raise RepeatError(f"repeat: jitter must be a number of seconds from 0 to "
                              f"{MAX_JITTER}, got {shown[:60]}", field="repeat.jitter")
        out["jitter"] = float(value)
    return out


def _check_keys(raw: dict, allowed: set[str], form: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise RepeatError(
            f"repeat: unknown key {extra[0]!r} in a {form} rule "
            f"(allowed: {', '.join(sorted(allowed))})"
        )


def _checked(rule: IntervalRule) -> IntervalRule:
    if not any(getattr(rule, unit) for unit in (*UNITS[:-1], "microseconds")):
        raise RepeatError("repeat: the interval is zero; at least one unit must be above 0")
    if not (rule.years or rule.months) and rule._mean_us() < MIN_INTERVAL_US:
        raise RepeatError(f"repeat: {rule._describe()} is shorter than the minimum interval "
                          f"of {MIN_INTERVAL_US // 1_000_000} second")
    try:
        rule.occurrence(datetime(2000, 1, 1, tzinfo=UTC), 1)
    except (OverflowError, ValueError):
        raise RepeatError("repeat: the interval is too large") from None
    return rule


def parse_duration(text: str, limits: dict | None = None) -> IntervalRule:
    """Parse an ISO 8601 duration (``P1M7D``, ``PT0.5S``, ``P1W``) into an IntervalRule."""
    match = ISO_DURATION_RE.fullmatch(text)
    given = {k: v for k, v in match.groupdict().items() if v is not None} if match else {}
    if not given:
        raise RepeatError(
            f"repeat: {text!r} is not an ISO 8601 duration (like P1D, PT30M, P1M7D or PT0.5S)"
        )
    last = list(given)[-1]
    fields: dict[str, int] = {}
    for unit, number in given.items():
        whole, _, fraction = number.replace(",", ".").partition(".")
        if len(whole) > 12 or len(fraction) > 12:
            raise RepeatError(f"repeat: {text[:40]!r}: a number too long in an ISO 8601 duration")
        fields[unit] = int(whole)
        if not fraction:
            continue
        if unit != last or unit in ("years", "months"):
            raise RepeatError(
                f"repeat: {text!r}: only the last component may have a fraction, "
                "and not years or months"
            )
        extra_us = int(Decimal("0." + fraction) * _US[unit])
        for name in ("days", "hours", "minutes", "seconds", "microseconds"):
            share, extra_us = divmod(extra_us, _US[name])
            fields[name] = fields.get(name, 0) + share
    return _checked(IntervalRule(**fields, **(limits or {})))


def _parse_units(raw: dict) -> IntervalRule:
    values: dict[str, int] = {}
    given_as: dict[str, str] = {}
    for key, value in raw.items():
        if key in ("limit", "until", "exclude", "jitter"):
            continue
        unit = SHORTHANDS.get(key, key)
        if unit not in UNITS:
            raise RepeatError(f"repeat: unknown unit {key!r} ({_UNIT_HELP})")
        if unit in values:
            raise RepeatError(f"repeat: {given_as[unit]!r} and {key!r} are the same unit")
        values[unit] = _whole(key, value, 0)
        given_as[unit] = key
    if not values:
        raise RepeatError(
            'repeat: no units given (e.g. {"days": 1}, {"every": "P1D"} or {"cron": "0 9 * * *"})'
        )
    values["microseconds"] = values.pop("milliseconds", 0) * 1000
    return _checked(IntervalRule(**values, **_limits(raw)))


def _parse_dst(raw: dict) -> Dst:
    """``repeat.dst`` of a cron rule: ``{"gap": ..., "fold": ...}``, each optional."""
    if "dst" not in raw:
        return Dst()
    value = raw["dst"]
    if not isinstance(value, dict):
        raise RepeatError(f"repeat: dst must be an object {DST_HELP}, not {show(value)}",
                          field="repeat.dst")
    extra = sorted(set(value) - {"gap", "fold"})
    if extra:
        raise RepeatError(f"repeat: unknown key {extra[0]!r} in dst (allowed: fold, gap)",
                          field="repeat.dst")
    if "tz" not in raw:
        raise RepeatError("repeat: dst needs a tz (a cron rule without one is in UTC, which "
                          "has no daylight saving time)", field="repeat.tz")
    gap, fold = value.get("gap"), value.get("fold")
    if "gap" in value and gap not in GAPS:
        raise RepeatError(f"repeat: dst.gap must be 'shift' or 'skip', not {show(gap)}",
                          field="repeat.dst.gap")
    if "fold" in value and fold not in FOLDS:
        raise RepeatError(f"repeat: dst.fold must be 'first', 'last' or 'both', not "
                          f"{show(fold)}", field="repeat.dst.fold")
    return Dst(gap, fold)


def _parse_cron(raw: dict) -> CronRule:
    _check_keys(raw, {"cron", "tz", "dst", "limit", "until", "exclude", "jitter"}, "cron")
    expr, tz = raw["cron"], raw.get("tz", "UTC")
    if not isinstance(expr, str) or not expr.strip():
        raise RepeatError(f"repeat: cron must be a cron expression string, got {expr!r}")
    expr = " ".join(expr.split())
    if not expr.startswith("@") and len(expr.split()) not in (5, 6):
        raise RepeatError(
            f"repeat: cron {expr!r} must have 5 fields (minute hour day month weekday), "
            "or 6 with seconds last"
        )
    if _CRON_RANDOM_RE.search(expr):
        raise RepeatError(f"repeat: cron {expr!r} uses H or R (hashed or random), not supported")
    if not isinstance(tz, str) or not tz:
        raise RepeatError(f"repeat: tz must be an IANA time zone name, got {tz!r}",
                          field="repeat.tz")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise RepeatError(
            f"repeat: unknown time zone {tz!r} (use an IANA name like Europe/Paris or UTC)",
            field="repeat.tz") from None
    try:
        croniter(expr, datetime(2000, 1, 1, tzinfo=zone)).get_next(datetime)
    except CroniterBadDateError:
        raise RepeatError(f"repeat: cron {expr!r} never matches a date") from None
    except (CroniterError, ValueError, KeyError, TypeError) as exc:
        raise RepeatError(f"repeat: invalid cron expression {expr!r} ({exc})") from None
    return CronRule(expr=expr, tz=tz, dst=_parse_dst(raw), **_limits(raw))


def parse_repeat(value: object) -> Rule | None:
    """Parse the raw JSON ``repeat`` value; None means no repeat."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_duration(value)
    if not isinstance(value, dict):
        raise RepeatError(
            "repeat: expected an object of units, an ISO 8601 duration string or a cron "
            f"object, got {type(value).__name__} {value!r}"
        )
    if "cron" not in value and "dst" in value:
        raise RepeatError("repeat: dst applies to a cron rule with a tz (an interval repeats "
                          "in UTC)", field="repeat.dst")
    if "cron" in value:
        return _parse_cron(value)
    if "every" in value:
        _check_keys(value, {"every", "limit", "until", "exclude", "jitter"}, "every")
        if not isinstance(value["every"], str):
            raise RepeatError(
                f"repeat: every must be an ISO 8601 duration string, got {value['every']!r}"
            )
        return parse_duration(value["every"], _limits(value))
    return _parse_units(value)
