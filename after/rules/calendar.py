"""Calendars: the dates a repeating task skips (``repeat.exclude``), and shared calendar
documents. Pure: nothing here does I/O or reads the clock.

A task's ``repeat`` may hold ``exclude``: a list whose items are a date (``"2026-12-25"``),
an inclusive range (``{"from": "2026-12-24", "to": "2026-12-26"}``) or a shared calendar
(``{"calendar": "holidays-fr"}``); or one shared calendar alone (``{"calendar": NAME}``).
Dates are days in the task's time zone (``repeat.tz``, UTC when none): an occurrence is
excluded when its local date is one of them.

A shared calendar is a document of the tasks database, id ``calendar:NAME``, holding
``{"dates": [...]}`` with the same date and range items. Many tasks name it; the worker reads
it when an occurrence falls due (cached a few seconds), so an edit takes effect without a
restart. The database's ``validate_doc_update`` checks calendar documents with the messages
of :func:`parse_calendar`.

Decisions:

- Dates are written ``YYYY-MM-DD`` exactly (a date-time is refused: a calendar is about
  days); a range needs ``from`` <= ``to``; at most :data:`MAX_ITEMS` items.
- A task naming a calendar that does not exist ends ``error`` when an occurrence falls due
  ("repeat.exclude: no calendar ..."): running on a day someone meant to exclude is worse
  than not running, and the message says what to create. Creating the calendar and
  rescheduling the task runs it again.
- A skipped occurrence is recorded as a run record with the outcome ``skipped``; it counts
  toward ``repeat.limit`` as a run would (it is an occurrence of the series). The excluded
  occurrences that follow it are skipped with it in one step, one record for them all
  (:mod:`after.rules.skipping`): what an exclusion makes a worker write is bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from after.rules.jsonsafe import problem
from after.rules.jsonsafe import show as _show

#: Most items of one ``exclude`` list or calendar document.
MAX_ITEMS = 1000
#: The id prefix of a calendar document.
PREFIX = "calendar:"
DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_HELP = "letters, digits, _ . - and at most 64 characters"


class CalendarError(ValueError):
    """An ``exclude`` or calendar document After cannot use; the message names the field."""


@dataclass(frozen=True)
class Exclusion:
    """Days to skip, and the shared calendars whose days are skipped too."""

    days: frozenset[date] = frozenset()
    ranges: tuple[tuple[date, date], ...] = ()
    calendars: tuple[str, ...] = field(default=())

    def covers(self, day: date) -> bool:
        """Whether ``day`` is one of this exclusion's own days (not its calendars')."""
        return day in self.days or any(low <= day <= high for low, high in self.ranges)


def local_day(instant: datetime, tz: str = "UTC") -> date:
    """The date of ``instant`` in the time zone ``tz``."""
    return instant.astimezone(ZoneInfo(tz)).date()


def excluded(exclusion: Exclusion | None, instant: datetime, tz: str,
             calendars: dict[str, Exclusion]) -> str | None:
    """Why the occurrence at ``instant`` is skipped (None: it runs). ``calendars`` holds the
    shared calendars the exclusion names, by name (see :func:`missing`)."""
    if exclusion is None:
        return None
    day = local_day(instant, tz)
    if exclusion.covers(day):
        return f"skipped: {day.isoformat()} is excluded (repeat.exclude)"
    for name in exclusion.calendars:
        shared = calendars.get(name)
        if shared is not None and shared.covers(day):
            return f"skipped: {day.isoformat()} is excluded (calendar {name})"
    return None


def missing(exclusion: Exclusion | None, calendars: dict[str, Exclusion]) -> str | None:
    """The message for a calendar the exclusion names that ``calendars`` lacks."""
    for name in exclusion.calendars if exclusion is not None else ():
        if name not in calendars:
            return (f"repeat.exclude: no calendar {name!r} (create the document "
                    f"{PREFIX}{name} in the tasks database)")
    return None


def _day(value: Any, where: str) -> date:
    if isinstance(value, str) and DAY_RE.fullmatch(value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            day = None
        if day is not None:
            return day
    raise CalendarError(f"{where}: {_show(value)} is not a date (YYYY-MM-DD)")


def _items(value: Any, where: str, shared: bool) -> Exclusion:
    if not isinstance(value, list):
        raise CalendarError(f"{where}: must be a list of dates and ranges, not {_show(value)}")
    if len(value) > MAX_ITEMS:
        raise CalendarError(f"{where}: at most {MAX_ITEMS} items, not {len(value)}")
    days, ranges, names = set(), [], []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if isinstance(item, dict) and shared and "calendar" in item:
            names.append(_name(item, at))
        elif isinstance(item, dict):
            extra = sorted(set(item) - {"from", "to"})
            if extra:
                use = "from and to, or calendar" if shared else "from and to"
                raise CalendarError(f"{at}: unknown key {extra[0]!r} (use {use})")
            if "from" not in item or "to" not in item:
                raise CalendarError(f'{at}: a range needs "from" and "to" dates (YYYY-MM-DD)')
            low, high = _day(item["from"], f"{at}.from"), _day(item["to"], f"{at}.to")
            if low > high:
                raise CalendarError(f"{at}: from {low.isoformat()} is after to "
                                    f"{high.isoformat()}")
            ranges.append((low, high))
        else:
            days.add(_day(item, at))
    return Exclusion(frozenset(days), tuple(ranges), tuple(dict.fromkeys(names)))


def _name(item: dict, where: str) -> str:
    extra = sorted(set(item) - {"calendar"})
    if extra:
        raise CalendarError(f"{where}: unknown key {extra[0]!r} (a calendar is "
                            '{"calendar": NAME})')
    name = item["calendar"]
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise CalendarError(f"{where}.calendar: {_show(name)} is not a calendar name "
                            f"({NAME_HELP})")
    return name


def parse_exclude(value: Any) -> Exclusion | None:
    """``repeat.exclude``: a list of dates, ranges and ``{"calendar": NAME}``, or one
    ``{"calendar": NAME}``; None when absent."""
    if value is None:
        return None
    if isinstance(value, dict) and "calendar" in value:
        return Exclusion(calendars=(_name(value, "repeat.exclude"),))
    if not isinstance(value, list):
        raise CalendarError('repeat.exclude: must be a list of dates and ranges, or '
                            f'{{"calendar": NAME}}, not {_show(value)}')
    return _items(value, "repeat.exclude", shared=True)


def calendar_name(docid: Any) -> str | None:
    """The calendar a document id names (``calendar:NAME``), else None."""
    if isinstance(docid, str) and docid.startswith(PREFIX):
        return docid[len(PREFIX):]
    return None


def parse_calendar(doc: dict) -> Exclusion:
    """A calendar document, ``{"_id": "calendar:NAME", "dates": [...]}``."""
    wrong = problem(doc)
    if wrong is not None:
        raise CalendarError(wrong)
    name = calendar_name(doc.get("_id"))
    if name is None or not NAME_RE.fullmatch(name):
        raise CalendarError(f"_id: {_show(doc.get('_id'))} is not a calendar id "
                            f"(calendar:NAME, the name {NAME_HELP})")
    extra = sorted(set(doc) - {"_id", "_rev", "_revisions", "_conflicts", "type", "dates",
                               "description"})
    if extra:
        raise CalendarError(f"{extra[0]}: unknown field of a calendar (use dates, "
                            "description)")
    if "dates" not in doc:
        raise CalendarError("dates: required (a list of dates and ranges)")
    return _items(doc["dates"], "dates", shared=False)
