"""Excluded days skipped in one step: what an exclusion can make the worker write is bounded.

Pure: nothing here does I/O or reads the clock (``now`` is passed in).

An occurrence on an excluded day (``repeat.exclude``, :mod:`after.rules.calendar`) is recorded
``skipped`` and the task moves to its next occurrence. One record per excluded occurrence
was unbounded (issue 24): a task every second whose exclusion covered the whole calendar
(``0001-01-01..9999-12-31``) wrote a skipped run record every few seconds for ever, and one
that excluded a day wrote 86,400 of them that day. So when the next occurrence is on an
excluded day too, the task leaps (:func:`leap`): to the first occurrence past the run of
consecutive excluded days (a day, a range, a shared calendar's, one after another), past the
next run if that one is excluded too, and so on; or, when none is left before ``until``,
the calendar's end or ``limit``, the series ends ``done``. The one ``skipped`` record says
so. The occurrences passed count toward ``limit`` as skipped ones always have (each is an
occurrence of the series), counted up to :data:`MAX_PASSED` at a time: past that, the task
moves to the occurrence that many ahead, still excluded, and leaps again when it falls due
(one record per :data:`MAX_PASSED` occurrences at most).

Decision: skip in one step rather than refuse such a schedule. A shared calendar can change
after the task is written, and a schedule whose exclusions leave a run in a hundred years
is valid; neither validator can see either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from after.rules import catchup as cu
from after.rules import occurrence as occ
from after.rules import task as rules
from after.rules.calendar import Exclusion, excluded, local_day
from after.rules.dates import format_date

#: Most occurrences counted toward ``limit`` in one leap.
MAX_PASSED = 10_000
#: Most runs of excluded days crossed in one leap (each takes at least one exclusion item,
#: and there are at most a thousand a list): a bound that is never reached in practice.
MAX_SPANS = 10_000
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Leap:
    """Where a skipped occurrence's task goes next: ``date`` (None: the series ends) and
    the occurrences ``passed`` on the way (toward ``limit``); ``note`` ends the record's
    message."""

    date: datetime | None
    passed: int
    note: str

    @property
    def following(self) -> tuple[datetime | None, int]:
        """What :func:`after.rules.task.finish` takes as ``following``."""
        return self.date, self.passed


def _merged(exclusion: Exclusion, calendars: dict[str, Exclusion]) -> Exclusion:
    """One exclusion of the days and ranges of ``exclusion`` and of the calendars it names."""
    own = [exclusion, *(calendars[n] for n in exclusion.calendars if n in calendars)]
    return Exclusion(frozenset().union(*(e.days for e in own)),
                     tuple(r for e in own for r in e.ranges))


def span_end(day: date, exclusion: Exclusion, calendars: dict[str, Exclusion]) -> date:
    """The last of the consecutive excluded days from ``day`` (itself excluded), by its
    exclusion and the shared calendars it names; ``date.max`` at the calendar's end."""
    merged = _merged(exclusion, calendars)
    days, ranges = merged.days, merged.ranges
    last = day
    for _ in range(len(days) + len(ranges) + 1):
        if last == date.max:
            return last
        following = last + timedelta(days=1)
        ends = [high for low, high in ranges if low <= following <= high]
        if not ends and following not in days:
            return last
        last = max([following, *ends])
    return last


def _past(rule, anchor: datetime, at: datetime, merged: Exclusion) -> datetime | None:
    """The first occurrence after the excluded days from ``at``'s (None: none before the
    calendar ends); ``merged``: the days excluded, calendars' included."""
    last = span_end(local_day(at, rule.zone), merged, {})
    try:
        midnight = datetime.combine(last + timedelta(days=1), time(),
                                    tzinfo=ZoneInfo(rule.zone)).astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    found = rule.upcoming(anchor, max(midnight - _US, at), 1)
    return found[0] if found else None


def leap(doc: dict, spec: rules.Spec, now: datetime,
         calendars: dict[str, Exclusion]) -> Leap | None:
    """Where the task of ``doc``, whose occurrence at ``spec.date`` is being skipped, goes
    next when its next occurrence (as :func:`after.rules.task.finish` finds it) is excluded too;
    None when it is not (or there is none): the usual next occurrence."""
    rule = spec.repeat
    if rule is None or rule.exclude is None:
        return None
    ns = rules.info(doc)
    anchor = rules.instant(ns.get("anchor")) or spec.date
    runs = rules.counter(ns, "occurrences") + 1
    try:
        if spec.policy == cu.ALL:  # while it catches up, each occurrence in turn
            after = rule.next_date(anchor, spec.date, spec.date, runs)
            if after is not None and occ.jittered(spec.id, after, rule.jitter) <= now:
                return None
        at = rules.next_occurrence(spec, anchor, now, runs)
    except OverflowError:
        return None
    if at is None or excluded(rule.exclude, at, rule.zone, calendars) is None:
        return None
    left = None if rule.limit is None else rule.limit - runs  # occurrences left, ``at`` too
    passed, merged = 0, _merged(rule.exclude, calendars)
    for _ in range(MAX_SPANS):
        following = _past(rule, anchor, at, merged)
        if following is not None and rule.until is not None and following > rule.until:
            following = None
        if left is not None:  # the occurrences from ``at`` to ``following`` count
            most = min(left - passed, MAX_PASSED)
            upto = following - _US if following is not None else datetime.max.replace(tzinfo=UTC)
            within = rule.between(anchor, at, upto, most)
            if len(within) >= left - passed:  # the series' last occurrences are excluded
                return Leap(None, left, _ended(at))
            if len(within) > most:  # counted as far as one leap counts: on from there
                return Leap(within[most], passed + most,
                            f"; so are the next {passed + most} occurrences, on excluded "
                            "days (it goes on from there)")
            passed += len(within)
        if following is None:
            return Leap(None, passed, _ended(at))
        if excluded(rule.exclude, following, rule.zone, calendars) is None:
            return Leap(following, passed, "; skipped with it: the occurrences to the next "
                                           "one past the excluded days, "
                                           f"{format_date(following)}")
        at = following
    return Leap(at, passed, f"; so are the next occurrences, on excluded days, to "
                            f"{format_date(at)}")


def _ended(at: datetime) -> str:
    return (f"; no occurrence is left past the excluded days from {format_date(at)[:10]}: "
            "the series ends")
