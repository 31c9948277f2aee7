"""Catch-up: what runs of the occurrences of a repeating task that fell due while no worker
ran them (a worker down, its name paused, a backlog). Pure: nothing here does I/O or reads
the clock; ``now`` is passed in.

A task says it with ``"catchup": {"policy": ..., "window": SECONDS, "max": N}`` (issue 25,
Temporal's catchup window, DBOS's backfill, Quartz's misfire instructions). When a worker
comes to a repeating task whose date has passed (at its start, when its name resumes, when a
partition moves to it, or when a run ends and the next occurrence is already due), the
occurrences due from the task's ``date`` to now are *missed*; the policy says which of them
run:

``latest`` (the default)  one run, now, of the latest occurrence due; the others are not run.
                          What the worker always did (one overdue run, then the next
                          occurrence after now, not one run per missed period), the run now
                          being the latest occurrence's (its date is the one the job sees).
``all``                   each of them, once, in date order, one after another (the latest
                          ``max`` when more fell due, 100 by default); the occurrences that
                          fall due while they run are caught up too, so the task runs
                          every occurrence until it is back on time.
``none``                  none of them: the task goes on from its next occurrence after now.
                          An occurrence counts as missed under ``none`` once it is more than
                          :data:`GRACE` seconds late (``max_delay`` when the task has one), so
                          that a worker that is merely busy still runs it.

``window`` bounds how far back a catch-up reaches: an occurrence due more than ``window``
seconds before now is not run. ``max_delay`` bounds the same thing for every run of a
task (a run that would start later than ``date + max_delay`` is recorded missed), so for a
repeating task the two are one bound: the smaller applies.

Every occurrence a catch-up does not run is recorded: one run record with the outcome
``missed`` each (the latest :data:`MAX_MISSED` of one catch-up; ``after.missed`` counts
them), so that ``after runs`` and ``after audit`` say what did not run and why. The missed
occurrences count nothing toward ``limit``, which counts runs.

What a catch-up is not: the occurrences that fall due while a run of the task is going are
``overlap``'s (skipped, buffered or run alongside), except under ``all``, which runs them
all in turn; a task the user paused resumes from its next occurrence after now whatever its
policy (a pause says "do not run it"; ``after backfill`` runs a window of them on demand);
a worker name paused (``after pause NAME``) is like a worker down: when it resumes, each
task's policy decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from after.rules import occurrence as occ
from after.rules.fields import not_an_object, unknown_field
from after.rules.jsonsafe import show as _show

NONE, LATEST, ALL = "none", "latest", "all"
POLICIES = (NONE, LATEST, ALL)
#: Seconds late past which ``none`` does not run an occurrence (without ``max_delay``):
#: what ``after audit`` calls late by default, and Quartz's misfire threshold.
GRACE = 60.0
#: How many of the missed occurrences ``all`` runs when ``max`` is not given, and at most.
DEFAULT_MAX = 100
MAX_CATCHUP = 1000
#: Most ``missed`` run records one catch-up writes (the latest ones): a task every second
#: whose worker was down for a day writes 100, not 86,400.
MAX_MISSED = 100
_US = timedelta(microseconds=1)


class CatchupError(ValueError):
    """A ``catchup`` value that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Catchup:
    """A task's ``catchup``, parsed."""

    policy: str = LATEST
    window: float | None = None
    max: int | None = None

    @property
    def most(self) -> int:
        """How many of the missed occurrences run at most."""
        return (self.max or DEFAULT_MAX) if self.policy == ALL else 1


def parse_catchup(value: Any, max_seconds: float) -> Catchup | None:
    """The ``catchup`` field: ``{"policy", "window", "max"}``, each optional (``policy``
    ``latest`` by default); None when missing. ``max_seconds``: the longest ``window``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CatchupError(not_an_object("catchup", 'an object {"policy", "window", "max"}',
                                         value))
    if wrong := unknown_field("catchup", value, ("policy", "window", "max")):
        raise CatchupError(wrong)
    policy = value.get("policy", LATEST)
    if policy not in POLICIES:
        raise CatchupError(f"catchup.policy: must be 'none', 'latest' or 'all', not "
                           f"{_show(policy)}")
    window = value.get("window")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int | float) or not 0 < window:
            raise CatchupError(f"catchup.window: must be a positive number of seconds, not "
                               f"{_show(window)}")
        if not window <= max_seconds:
            raise CatchupError(f"catchup.window: at most {max_seconds} seconds (ten years), "
                               f"not {_show(window)}")
        if policy == NONE:
            raise CatchupError("catchup.window: policy 'none' runs no missed occurrence, "
                               "so it takes no window")
    most = value.get("max")
    if most is not None:
        if isinstance(most, bool) or not isinstance(most, int) \
                or not 1 <= most <= MAX_CATCHUP:
            raise CatchupError(f"catchup.max: must be a whole number from 1 to {MAX_CATCHUP}, "
                               f"not {_show(most)}")
        if policy != ALL:
            raise CatchupError("catchup.max: only with policy 'all' (how many of the missed "
                               "occurrences run)")
    return Catchup(policy, None if window is None else float(window), most)


def bound(catchup: Catchup | None, max_delay: float | None) -> tuple[float, str] | None:
    """How late an occurrence may start and still run (seconds), and what says so (for the
    record of one that did not): ``max_delay``, the catch-up's ``window``, or under
    ``none`` :data:`GRACE`; None: unbounded."""
    found = []
    if max_delay is not None:
        found.append((max_delay, f"max_delay {max_delay:g}s"))
    if catchup is not None and catchup.window is not None:
        found.append((catchup.window, f"catch-up window {catchup.window:g}s"))
    if catchup is not None and catchup.policy == NONE and not found:
        found.append((GRACE, f"catch-up none: at most {GRACE:g}s late"))
    return min(found, key=lambda pair: pair[0]) if found else None


def describe(catchup: Catchup | None) -> str:
    """The policy in words, as ``after show`` and the dashboard say it."""
    if catchup is None:
        return ""
    text = {NONE: "none: no missed occurrence runs",
            LATEST: "latest: one run of the latest missed occurrence",
            ALL: f"all: each missed occurrence in turn, {catchup.most} at most"}[catchup.policy]
    if catchup.window is not None:
        text += f", within {catchup.window:g}s"
    return text


@dataclass(frozen=True)
class Plan:
    """What a catch-up does with a task whose date has passed: the occurrences due that run
    now, in order (``runs``: its date alone when it is simply to run it; none: the task goes
    on from its next occurrence after now), and those ``missed`` before them (the latest
    :data:`MAX_MISSED`; ``more``: more were), with why each was (``why``, for its record)."""

    date: datetime
    runs: tuple[datetime, ...]
    missed: tuple[datetime, ...] = ()
    more: bool = False
    why: dict[datetime, str] = field(default_factory=dict)

    @property
    def run(self) -> datetime | None:
        """The occurrence the task moves to, to run now; None: none."""
        return self.runs[0] if self.runs else None

    @property
    def as_is(self) -> bool:
        """The task runs its date as it is: nothing to write first."""
        return self.run == self.date


def plan(rule, task_id: str, date: datetime, anchor: datetime, catchup: Catchup | None,
         max_delay: float | None, now: datetime) -> Plan | None:
    """The catch-up of the repeating task ``task_id`` (``rule``, its series from
    ``anchor``) whose current occurrence is at ``date``, at ``now``; None when that is not
    due yet."""
    policy = catchup or Catchup()

    def due(at: datetime) -> datetime:
        return occ.jittered(task_id, at, rule.jitter)

    if due(date) > now:
        return None
    limit = bound(policy, max_delay)
    most = policy.most

    def due_now(found: list[datetime]) -> list[datetime]:  # (a jitter may put one past now)
        return [at for at in sorted({date, *found}) if at >= date and due(at) <= now]

    recent = due_now(rule.last(anchor, date, now, most + 1))[-most:]
    runnable = [at for at in recent
                if limit is None or (now - due(at)).total_seconds() <= limit[0]]
    if runnable and runnable[0] == date:
        return Plan(date, tuple(runnable))
    first = runnable[0] if runnable else None
    end = first - _US if first is not None else now
    missed = due_now(rule.last(anchor, date, end, MAX_MISSED)) if date <= end else []
    why = {}
    for at in missed[-MAX_MISSED:]:
        late = (now - due(at)).total_seconds()
        if limit is not None and late > limit[0]:
            why[at] = f"missed: would have started {late:.1f}s late ({limit[1]})"
        elif policy.policy == ALL:
            why[at] = (f"missed: {late:.1f}s late, and catch-up all runs the latest "
                       f"{most} occurrences due")
        else:
            why[at] = (f"missed: {late:.1f}s late, and catch-up {policy.policy} runs the "
                       f"latest occurrence due instead")
    return Plan(date, tuple(runnable), tuple(missed[-MAX_MISSED:]), len(missed) > MAX_MISSED,
                why)


def fell_before(rule, task_id: str, date: datetime, anchor: datetime, started: datetime
                ) -> list[datetime]:
    """The occurrences after ``date`` that fell due before a run of it started (its run
    waited: for a free job thread, a retry, a cap's slot), the latest :data:`MAX_MISSED`:
    under ``latest`` and ``none`` they are not run, and recorded missed."""
    found = rule.last(anchor, date + _US, started, MAX_MISSED)
    return [at for at in found if occ.jittered(task_id, at, rule.jitter) <= started
            ][-MAX_MISSED:]
