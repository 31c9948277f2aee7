"""The task document: validation, and the pure rules of its state machine.

Nothing here does I/O or reads the clock: ``now`` is passed in, so every transition is
tested without a server.

This module is the one home of the task's rules: what a document must hold (:func:`parse`),
the worker's transitions (:func:`claim`, :func:`start`, :func:`finish`...) and the user's
(:func:`request_cancel`, :func:`request_reschedule`, :func:`redefine`), which the Client,
the command line and the dashboard (through its relay) all call.

States (DESIGN.md)::

    waiting --claim--> scheduled --start--> running --finish--> done | error
       ^                                        |
       +------ repeat: next date / retry -------+
    cancel --> canceled      reschedule --> (re-read date) waiting/scheduled
    paused (the user's: dropped, nothing written) --waiting--> from the next occurrence after now

What the worker writes lives under the ``after`` key of the document, so it never collides
with the user's fields:

``owner``       the process that holds or runs the task (``name@host:pid:token``)
``due``         when the held occurrence fires (the ``date``, or a retry's later instant)
``anchor``      the first date of a repeating series (months stay on the 31st, no drift)
``attempt``     attempts made at the current occurrence
``runs`` ``successes`` ``failures`` ``missed``   counters over the task's life
``last_run``    the last run: number, attempt, outcome, started, ended, duration, result/error
``next_run``    the next date, while there is one
``error``       why the task is in ``error``
``interrupted`` runs of the held occurrence cut short, in a row, by the death of their process
``isolated``    when a run of the task was cut short by the death of its process: from then on
                every run of it is in a child process of its own (see :func:`isolated`)
``skipped``     occurrences recorded ``skipped`` (an excluded date; ``overlap``: they fell due
                while a run went)
``going``       runs of an ``overlap: allow`` task going apart from it (:mod:`after.rules.overlap`)
``paused``      when the task was paused (by :func:`request_pause`): a plain ``waiting``
                written over it later is a resume (:func:`resume`)
``pauses``      the task's last pauses, ``[{"from", "to"}]`` (at most :data:`MAX_PAUSES`),
                written when it resumes: what ``after audit`` reads to tell an occurrence
                skipped by a pause from one that never ran

A repeating task whose date has passed when a worker comes to it is caught up by its
``catchup`` policy (:mod:`after.rules.catchup`, :func:`catch_up`): the occurrences not run are
recorded ``missed`` and counted in ``missed``.
"""

# Longer than 500 lines on purpose: the whole state machine, the worker's transitions and the
# user's, is here so that each rule has this one home (issue 15).
from __future__ import annotations

import functools
import random
import re
import signal
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from after.rules import catchup as cu
from after.rules import occurrence as occ
from after.rules.calendar import excluded
from after.rules.dates import DateError, format_date, parse_date, to_ms
from after.rules.fields import FieldError, not_an_object, unknown_field
from after.rules.jsonsafe import problem
from after.rules.jsonsafe import show as _show
from after.rules.repeat import RepeatError, Rule, parse_repeat

NS = "after"

WAITING, SCHEDULED, RUNNING = "waiting", "scheduled", "running"
DONE, ERROR, CANCELED = "done", "error", "canceled"
CANCEL, RESCHEDULE = "cancel", "reschedule"
#: The user's: the worker drops the task and writes nothing (a run going finishes and is
#: recorded; the task stays paused); ``waiting`` resumes it (see :func:`resume`).
PAUSED = "paused"

RUNNABLE = (WAITING, SCHEDULED, RUNNING, RESCHEDULE)
FINISHED = (DONE, ERROR, CANCELED)
STATUSES = RUNNABLE + (CANCEL,) + FINISHED + (PAUSED,)
#: The statuses whose definition the validate_doc_update checks in full: a paused task is
#: one meant to run again.
CHECKED = RUNNABLE + (PAUSED,)

# Run outcomes, as recorded in run records and ``last_run``. ``skipped``: an occurrence of a
# repeating task that fell due while a run of it was going (``overlap``), not run.
OK, FAILED, TIMEOUT, MISSED, INTERRUPTED = "done", "error", "timeout", "missed", "interrupted"
#: An occurrence not run: an excluded date (``repeat.exclude``), or one that fell due while a
#: run of its task was going (``overlap``). Recorded, no run.
SKIPPED = "skipped"
#: A run stopped by a ``cancel`` written while it went (its job told through
#: ``task.canceled``; an isolated one's process killed after :data:`CANCEL_GRACE`).
STOPPED = "canceled"
#: Seconds a canceled run gets to stop by itself before it is ended ``canceled`` all the same
#: (an isolated run's process killed then; a thread run's thread left to end).
CANCEL_GRACE = 5.0
#: Not an outcome: a run's intent (``after.worker.intents``), written before the run may
#: begin and overwritten by its record when it ends. Readers of runs leave intents out.
INTENDED = "intended"
#: The end of the id of a run's record kept beside another record of that run: a process that
#: ran it, finding the record written over its intent by another (that took the run over,
#: believing it dead), writes its own as ``<id>~late`` (``after.worker.runner``).
LATE_SUFFIX = "~late"
#: ``overlap``: what happens to the occurrences of a repeating task that fall due while a run
#: of it is going: recorded ``skipped`` (``skip``), the latest of them run right after and
#: the others skipped (``buffer_one``), or each run as it falls due, alongside (``allow``).
SKIP, BUFFER_ONE, ALLOW = "skip", "buffer_one", "allow"
OVERLAPS = (SKIP, BUFFER_ONE, ALLOW)
#: Most ``skipped`` run records written for one run (and counted in ``after.skipped``): a task
#: every second whose run hung for a day writes 100.
MAX_SKIPPED = 100
#: ``priority``: an integer in this range, 0 by default; higher first.
MAX_PRIORITY = 1000000
#: Isolations of a run (the ``isolation`` field): in a job thread of the worker process
#: (the default), or in a child process of its own, killed when it passes ``timeout``.
THREAD, PROCESS = "thread", "process"
ISOLATIONS = (THREAD, PROCESS)
#: A run cut short by the death of its process is run again (no task is lost), and in a child
#: process of its own, whatever the task's ``isolation``, as is every later run of the task
#: (``after.isolated`` marks it): a job that ends the process running it (``os._exit``, a
#: crash in C code) takes down at most that one process; its re-run's child dies instead, and
#: the run fails with ENDED_ITS_PROCESS (``retry`` applies, as to any failure). The re-runs of
#: an occurrence are bounded all the same: interrupted once more than this many times in a
#: row (its process killed from outside each time, or a child that still brought its worker
#: down, by memory say), the occurrence ends ``error`` with INTERRUPTED_TOO_OFTEN.
INTERRUPTED_RERUNS = 2
ENDED_ITS_PROCESS = "the job ended its process ({how})"
INTERRUPTED_TOO_OFTEN = ("interrupted {n} times in a row by the death of the process running "
                         "it, in a child process of its own since the first: not run again "
                         "(last: {why})")
#: Longest ``timeout``, ``max_delay`` and ``retry.delay``: ten years, in seconds. Beyond it a
#: date computed from them could leave the calendar (year 9999) and every run would fail.
MAX_SECONDS = 10 * 366 * 86400
#: Most retries of one occurrence.
MAX_RETRIES = 1000
#: Highest ``concurrency.limit``, and the grammar of ``concurrency.key`` (a slot document's id
#: is ``slot:<key>#<n>``, see :mod:`after.couch.caps`).
MAX_CONCURRENCY = 1000
CAP_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
CAP_KEY_HELP = "letters, digits, _ . : - and at most 100 characters"


#: Most past pauses a task keeps (``after.pauses``), the latest last.
MAX_PAUSES = 20
#: What a worker writes under ``after`` while it holds a task (``date``: the date its claim
#: was for; ``interrupted``: runs of this occurrence cut short by a dead process): gone once
#: none holds it.
HOLD = ("owner", "claimed", "due", "date", "interrupted")
#: What a task that runs anew starts without: the hold, the error, a pending retry, a pause.
RESET = HOLD + ("error", "canceled", "retry_at", "paused")

#: What the dashboard offers for a task in each status (its relay refuses the rest): ``run``
#: now (one extra run, the schedule kept: :func:`after.rules.occurrence.extra_doc`), ``backfill``
#: a window of a repeating task's past occurrences (the relay refuses it for a task that
#: does not repeat), ``reschedule`` to a date, ``cancel``, ``rerun`` a failed task. A
#: ``cancel`` request waits for its worker.
ACTIONS = {
    WAITING: ("run", "backfill", "reschedule", "pause", "cancel"),
    SCHEDULED: ("run", "backfill", "reschedule", "pause", "cancel"),
    RUNNING: ("run", "backfill", "reschedule", "pause", "cancel"),
    RESCHEDULE: ("reschedule", "pause", "cancel"),
    ERROR: ("rerun", "run", "backfill", "reschedule"),
    DONE: ("run", "backfill", "reschedule"),
    CANCELED: ("run", "backfill", "reschedule"),
    CANCEL: (),
    PAUSED: ("resume", "cancel"),
}


class TaskError(FieldError):
    """The document cannot run; the message says exactly what is wrong, and ``field`` which
    field it is about (:class:`after.rules.fields.FieldError`)."""


class StateError(ValueError):
    """The task's status does not allow the operation; the message says why."""


class NotInError(StateError):
    """Reschedule asked of a task that is not in ``error``, without asking for any status.

    The message names the Python option (``all=True``); a command line names its own from
    ``task_id`` and ``status``."""

    def __init__(self, task_id: Any, status: Any):
        super().__init__(f"task {task_id} is {status}, not error: reschedule it with "
                         "all=True to run it again anyway")
        self.task_id, self.status = task_id, status


@dataclass(frozen=True)
class Retry:
    limit: int = 0
    delay: float = 0.0
    backoff: str = "fixed"  # or "exponential"
    jitter: float = 0.1  # fraction of the delay, spread both ways

    def delay_for(self, attempt: int, rand: float = 0.5) -> float:
        """Seconds to wait after failed ``attempt`` (1-based); ``rand`` in [0, 1)."""
        doublings = min(max(attempt - 1, 0), 64) if self.backoff == "exponential" else 0
        base = min(self.delay * 2 ** doublings, MAX_SECONDS)
        return max(0.0, base * (1 + self.jitter * (2 * rand - 1)))


@dataclass(frozen=True)
class Occurrence:
    """What a one-off task runs an occurrence of (its ``occurrence`` field)."""

    task: str
    kind: str  # occurrence.MANUAL or occurrence.BACKFILL
    date: datetime


@dataclass(frozen=True)
class Cap:
    """``concurrency``: at most ``limit`` runs with ``key`` at once, everywhere."""

    key: str
    limit: int


@dataclass(frozen=True)
class Rate:
    """``rate``: at most ``limit`` runs with ``key`` begin in any ``per`` seconds,
    everywhere (see :mod:`after.worker.gates`)."""

    key: str
    limit: int
    per: float


@dataclass(frozen=True)
class Spec:
    """A task document, checked and parsed."""

    id: str
    worker: str
    date: datetime
    job: str
    arguments: list | dict | None
    repeat: Rule | None = None
    retry: Retry = field(default_factory=Retry)
    timeout: float | None = None
    max_delay: float | None = None
    isolation: str = THREAD
    concurrency: Cap | None = None
    rate: Rate | None = None
    debounce: float | None = None
    overlap: str = SKIP
    priority: int = 0
    occurrence: Occurrence | None = None
    catchup: cu.Catchup | None = None

    @property
    def policy(self) -> str:
        """The catch-up policy (:mod:`after.rules.catchup`): ``latest`` unless the task says."""
        return self.catchup.policy if self.catchup is not None else cu.LATEST

    @property
    def due(self) -> datetime:
        """When the occurrence at ``date`` runs: ``date`` moved by the repeat's jitter."""
        if self.repeat is None or not self.repeat.jitter:
            return self.date
        return occ.jittered(self.id, self.date, self.repeat.jitter)

    @functools.cached_property
    def occurrence_id(self) -> str:
        """The id of the occurrence at ``date`` (:func:`after.rules.occurrence.key`): the parent's
        occurrence for a one-off ``manual`` or ``backfill`` task."""
        if self.occurrence is not None:
            return occ.key(self.occurrence.task, self.occurrence.date, self.occurrence.kind)
        return occ.key(self.id, self.date)


def _number(doc: dict, name: str) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value:
        raise TaskError(f"{name}: must be a positive number of seconds, not {_show(value)}")
    if not value <= MAX_SECONDS:
        raise TaskError(f"{name}: at most {MAX_SECONDS} seconds (ten years), not {_show(value)}")
    return float(value)


def counter(info: dict, key: str) -> int:
    """A count the worker keeps under ``after`` (``runs``, ``attempt``...): 0 when missing or
    not a count (a user may write anything there)."""
    value = info.get(key) if isinstance(info, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 53:
        return 0
    return value


def parse_occurrence(doc: dict, repeat: Rule | None) -> Occurrence | None:
    """The ``occurrence`` of a one-off task that runs an extra occurrence of another."""
    value = doc.get("occurrence")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TaskError(not_an_object("occurrence", 'an object {"task", "kind", "date"}', value))
    if wrong := unknown_field("occurrence", value, ("task", "kind", "date")):
        raise TaskError(wrong)
    task = value.get("task")
    if not isinstance(task, str) or not task:
        raise TaskError("occurrence.task: required (the id of the task this runs an "
                        "occurrence of)")
    kind = value.get("kind")
    if kind not in occ.KINDS:
        raise TaskError(f"occurrence.kind: must be 'manual' or 'backfill', not {_show(kind)}")
    try:
        date = parse_date(value.get("date"), "occurrence.date")
    except DateError as exc:
        raise TaskError(str(exc)) from None
    if repeat is not None:
        raise TaskError("occurrence: a manual or backfill run does not repeat (no repeat "
                        "with occurrence)")
    wanted = occ.extra_id(task, kind, value["date"])
    if doc.get("_id") != wanted:
        raise TaskError(f"occurrence: the id must be {wanted!r} (task:kind:date), not "
                        f"{doc.get('_id')!r}")
    return Occurrence(task, kind, date)


def parse_isolation(value: Any) -> str:
    if value is None:
        return THREAD
    if not isinstance(value, str) or value not in ISOLATIONS:
        raise TaskError(f"isolation: must be 'thread' or 'process', not {_show(value)}")
    return value


def parse_retry(value: Any) -> Retry:
    if value is None:
        return Retry()
    if isinstance(value, bool):
        raise TaskError(f"retry: must be a number of attempts or an object, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise TaskError(f"retry: must be 0 or more attempts, not {_show(value)}")
        if value > MAX_RETRIES:
            raise TaskError(f"retry: at most {MAX_RETRIES} attempts, not {_show(value)}")
        return Retry(limit=value)
    if not isinstance(value, dict):
        raise TaskError(not_an_object("retry", "a number of attempts or an object", value))
    if wrong := unknown_field("retry", value, ("limit", "delay", "backoff"), also=("jitter",)):
        raise TaskError(wrong)
    limit = value.get("limit", 1)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise TaskError(f"retry.limit: must be 0 or more attempts, not {_show(limit)}")
    if limit > MAX_RETRIES:
        raise TaskError(f"retry.limit: at most {MAX_RETRIES} attempts, not {_show(limit)}")
    delay = value.get("delay", 0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay:
        raise TaskError(f"retry.delay: must be 0 or more seconds, not {_show(delay)}")
    if not delay <= MAX_SECONDS:
        raise TaskError(f"retry.delay: at most {MAX_SECONDS} seconds (ten years), not "
                        f"{_show(delay)}")
    backoff = value.get("backoff", "fixed")
    if backoff not in ("fixed", "exponential"):
        raise TaskError(f"retry.backoff: must be 'fixed' or 'exponential', not "
                        f"{_show(backoff)}")
    jitter = value.get("jitter", 0.1)
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
        raise TaskError(f"retry.jitter: must be a fraction from 0 to 1, not {_show(jitter)}")
    return Retry(limit=limit, delay=float(delay), backoff=backoff, jitter=float(jitter))


def _key_and_limit(value: dict, name: str) -> tuple[str, int]:
    """The ``key`` and ``limit`` of a ``concurrency`` or a ``rate`` (``name``)."""
    key = value.get("key")
    if not isinstance(key, str) or not CAP_KEY_RE.fullmatch(key):
        raise TaskError(f"{name}.key: {_show(key)} is not a key ({CAP_KEY_HELP})")
    limit = value.get("limit")
    if isinstance(limit, bool) or not isinstance(limit, int) \
            or not 1 <= limit <= MAX_CONCURRENCY:
        raise TaskError(f"{name}.limit: must be a whole number from 1 to {MAX_CONCURRENCY}, "
                        f"not {_show(limit)}")
    return key, limit


RATE_SHAPE = '{"key": NAME, "limit": N, "per": SECONDS}'


def parse_rate(value: Any) -> Rate | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TaskError(not_an_object("rate", RATE_SHAPE, value))
    if wrong := unknown_field("rate", value, ("key", "limit", "per")):
        raise TaskError(wrong)
    key, limit = _key_and_limit(value, "rate")
    per = value.get("per")
    if isinstance(per, bool) or not isinstance(per, int | float) or not 0 < per <= MAX_SECONDS:
        raise TaskError(f"rate.per: must be a number of seconds above 0 and at most "
                        f"{MAX_SECONDS}, not {_show(per)}")
    return Rate(key, limit, float(per))


def describe_rate(value: Any) -> str:
    """``after show``'s words for a ``rate`` field ('' for one that cannot be read); the
    dashboard's ``model.js`` has its twin, ``rateText``."""
    try:
        rate = parse_rate(value)
    except TaskError:
        return ""
    if rate is None:
        return ""
    per = int(rate.per) if rate.per.is_integer() else rate.per
    return f"at most {rate.limit} begin in any {per}s with key {rate.key}"


def parse_concurrency(value: Any) -> Cap | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TaskError(not_an_object("concurrency", '{"key": NAME, "limit": N}', value))
    if wrong := unknown_field("concurrency", value, ("key", "limit")):
        raise TaskError(wrong)
    key, limit = _key_and_limit(value, "concurrency")
    return Cap(key, limit)


def parse(doc: dict) -> Spec:
    """Check a task document; raises :class:`TaskError` naming the field that is wrong, in
    one line of at most 300 characters."""
    try:
        return _parse(doc)
    except TaskError as exc:
        message = " ".join(str(exc).split())
        if len(message) > 300:
            raise TaskError(message[:297] + "...") from None
        raise


def _parse(doc: dict) -> Spec:
    wrong = problem(doc)
    if wrong is not None:
        raise TaskError(wrong)
    worker = doc.get("worker")
    if not isinstance(worker, str) or not worker:
        raise TaskError("worker: required (the name of the worker that runs the task)")
    if "date" not in doc:
        raise TaskError("date: required (ISO 8601, e.g. 2026-12-01T09:00:00Z)")
    try:
        date = parse_date(doc["date"], "date")
    except DateError as exc:
        raise TaskError(str(exc)) from None
    job = doc.get("job")
    if not isinstance(job, dict):
        raise TaskError('job: required ({"name": ..., "arguments": [...]})')
    name = job.get("name")
    if not isinstance(name, str) or not name:
        raise TaskError("job.name: required")
    arguments = job.get("arguments")
    if arguments is not None and not isinstance(arguments, list | dict):
        raise TaskError("job.arguments: must be a list or an object")
    status = doc.get("status")
    if status not in STATUSES:
        raise TaskError(f"status: {_show(status)} is not one of {', '.join(STATUSES)}")
    try:
        repeat = parse_repeat(doc.get("repeat"))
    except (RepeatError, DateError) as exc:
        message = str(exc)
        raise TaskError(message if message.startswith("repeat") else f"repeat: {message}",
                        field=getattr(exc, "field", "") or "repeat") from None
    if doc.get("status") in CHECKED and repeat is not None and repeat.until is not None \
            and to_ms(repeat.until) < to_ms(date):
        # to the millisecond, as the validate_doc_update compares them
        raise TaskError(f"repeat.until: {format_date(repeat.until)} is before the task's "
                        f"date ({format_date(date)}): no occurrence would be in time")
    retry = parse_retry(doc.get("retry"))
    timeout, max_delay = _number(doc, "timeout"), _number(doc, "max_delay")
    isolation = parse_isolation(doc.get("isolation"))
    concurrency = parse_concurrency(doc.get("concurrency"))
    rate = parse_rate(doc.get("rate"))
    debounce = _number(doc, "debounce")
    if debounce is not None and repeat is not None:
        raise TaskError("debounce: for a task that runs once (each rewrite moves its run), "
                        "not one that repeats")
    occurrence = parse_occurrence(doc, repeat)
    overlap = doc.get("overlap", SKIP)
    if overlap not in OVERLAPS:
        raise TaskError(f"overlap: must be 'skip', 'buffer_one' or 'allow', not {_show(overlap)}")
    if overlap == ALLOW and retry.limit:
        raise TaskError("overlap: 'allow' runs each occurrence once, alongside the others: it "
                        "takes no retry")
    priority = doc.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TaskError(f"priority: must be an integer (higher first), not {_show(priority)}")
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise TaskError(f"priority: from -{MAX_PRIORITY} to {MAX_PRIORITY}, not "
                        f"{_show(priority)}")
    catchup = parse_catchup(doc.get("catchup"), repeat, overlap)
    return Spec(
        id=doc["_id"],
        worker=worker,
        date=date,
        job=name,
        arguments=arguments,
        repeat=repeat,
        retry=retry,
        timeout=timeout,
        max_delay=max_delay,
        isolation=isolation,
        concurrency=concurrency,
        rate=rate,
        debounce=debounce,
        occurrence=occurrence,
        overlap=overlap,
        priority=priority,
        catchup=catchup,
    )


def parse_catchup(value: Any, repeat: Rule | None, overlap: str) -> cu.Catchup | None:
    """``catchup`` (:mod:`after.rules.catchup`), for a repeating task only."""
    try:
        catchup = cu.parse_catchup(value, MAX_SECONDS)
    except cu.CatchupError as exc:
        raise TaskError(str(exc)) from None
    if catchup is None:
        return None
    if repeat is None:
        raise TaskError("catchup: only for a repeating task (how late a one-off task may "
                        "run is max_delay)")
    if catchup.policy == cu.ALL and overlap == ALLOW:
        raise TaskError("catchup: policy 'all' runs the missed occurrences one after "
                        "another, overlap 'allow' alongside: not both")
    return catchup


def priority_of(doc: dict) -> int:
    """A document's ``priority`` as the worker orders by it: 0 when missing or not valid."""
    value = doc.get("priority", 0)
    if isinstance(value, bool) or not isinstance(value, int) \
            or not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        return 0
    return value


def info(doc: dict) -> dict:
    """The worker's namespace of ``doc``, to read: ``{}`` when missing or not an object (a
    user may write anything there)."""
    value = doc.get(NS)
    return value if isinstance(value, dict) else {}


def owner(ns: dict) -> str | None:
    """The process that holds the task, from its namespace ``ns`` (:func:`info`): None
    unless a non-empty string (a user may write anything there, ``[null]`` say)."""
    value = ns.get("owner")
    return value if isinstance(value, str) and value else None


def meta(doc: dict) -> dict:
    """The worker's namespace of ``doc``, to write (created when missing)."""
    value = doc.get(NS)
    if not isinstance(value, dict):
        value = doc[NS] = {}
    return value


def rev_number(rev: str | None) -> int:
    try:
        return int(str(rev).split("-", 1)[0])
    except ValueError:
        return 0


# -- transitions: each takes the current document and returns the one to write ---------------


def _copy(doc: dict) -> tuple[dict, dict]:
    """A copy of ``doc`` and of its namespace, to change without touching ``doc`` itself."""
    info = doc.get(NS)
    new = dict(doc)
    new[NS] = info = dict(info) if isinstance(info, dict) else {}
    return new, info


def claim(doc: dict, owner: str, due: datetime, now: datetime) -> dict:
    """``waiting``/``reschedule`` (or a dead owner's task) -> ``scheduled`` held by ``owner``."""
    new, info = _copy(doc)
    new["status"] = SCHEDULED
    info.update(owner=owner, due=format_date(due), claimed=format_date(now),
                next_run=format_date(due), date=doc.get("date"))
    info.pop("error", None)
    if _new_date(doc) or date_moved(doc):  # the user's new date starts the series anew
        info.pop("anchor", None)
        info["attempt"] = 0
    return new


def date_moved(doc: dict) -> bool:
    """A ``scheduled`` or ``running`` task whose ``date`` the user changed since it was
    claimed (``after.date`` keeps the date the claim was for)."""
    info = doc.get(NS) if isinstance(doc.get(NS), dict) else {}
    if doc.get("status") not in (SCHEDULED, RUNNING) or info.get("date") is None:
        return False
    try:
        return parse_date(doc.get("date"), "date") != parse_date(info.get("date"), "claimed")
    except DateError:
        return True


def hand_back(doc: dict) -> dict:
    """A held task returned to the pool on a graceful stop: ``waiting``, no owner."""
    new, info = _copy(doc)
    new["status"] = WAITING
    _drop(info, HOLD)
    if _new_date(doc) or date_moved(doc):
        info.pop("anchor", None)
    try:
        info["next_run"] = format_date(parse_date(doc.get("date"), "date"))
    except DateError:
        info.pop("next_run", None)
    return new


def _new_date(doc: dict) -> bool:
    """A ``reschedule`` that moved the date (not one that only changed, say, ``retry``).
    Compared with the date a worker's claim was for when one holds it (``next_run`` is then
    the held instant: a retry's, or the date moved by a repeat's jitter), else ``next_run``."""
    if doc.get("status") != RESCHEDULE:
        return False
    ns = info(doc)
    was = ns.get("date") if owner(ns) and ns.get("date") is not None else ns.get("next_run")
    try:
        return parse_date(doc.get("date"), "date") != parse_date(was, "next")
    except DateError:
        return True


def start(doc: dict, owner: str, now: datetime, number: int) -> dict:
    """``scheduled`` -> ``running``: counts the attempt."""
    new, info = _copy(doc)
    new["status"] = RUNNING
    info.update(owner=owner, attempt=counter(info, "attempt") + 1,
                started=format_date(now), run=number)
    return new


def unfence(doc: dict) -> dict:
    """A start written ahead of its due instant (a fence) whose job has not begun, undone
    (the inverse of :func:`start`): ``running`` -> ``scheduled``, the attempt counted back,
    no ``started`` or run number. Used in memory only, to decide on a ``cancel`` or
    ``reschedule`` that reached the fence's owner before the job began, and to hand the
    task back on a graceful stop; the revision stays the fence's, so the write that follows
    is checked against it."""
    new, info = _copy(doc)
    if new.get("status") == RUNNING:
        new["status"] = SCHEDULED
    attempt = counter(info, "attempt") - 1
    if attempt > 0:
        info["attempt"] = attempt
    else:
        info.pop("attempt", None)
    for key in ("started", "run", "token"):
        info.pop(key, None)
    return new


def mark_error(doc: dict, message: str, now: datetime) -> dict:
    """A document that cannot run ends ``error`` with the reason."""
    new, info = _copy(doc)
    new["status"] = ERROR
    info.update(error=message, updated=format_date(now))
    _drop(info, HOLD + ("next_run",))
    return new


def cancel(doc: dict, now: datetime) -> dict:
    """-> ``canceled``, stamped with when, no longer held."""
    new, info = _copy(doc)
    new["status"] = CANCELED
    info.update(canceled=format_date(now))
    _drop(info, HOLD + ("next_run",))
    return new


def _drop(info: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        info.pop(key, None)


# -- the user's transitions: each returns the document to write, or raises StateError ----------

#: The top-level fields of a task's definition; ``Client.schedule`` owns them.
DEFINITION = ("worker", "date", "job", "repeat", "retry", "timeout", "max_delay", "isolation",
              "concurrency", "rate", "debounce", "occurrence", "overlap", "priority",
              "catchup")


def held(doc: dict) -> bool:
    """True when a worker process holds (or runs) the task: it must apply a change itself,
    so the user writes a request (``cancel``, ``reschedule``) instead of the result."""
    status = doc.get("status")
    return status in (SCHEDULED, RUNNING) or (
        status in (RESCHEDULE, CANCEL) and owner(info(doc)) is not None) or (
        status == PAUSED and running(doc))


def running(doc: dict) -> bool:
    """A run of the task is going somewhere (its start is written, its end is not)."""
    ns = info(doc)
    return bool(ns.get("started")) and owner(ns) is not None


def request_cancel(doc: dict, now: datetime) -> dict | None:
    """Cancel: ``canceled`` at once when no worker holds the task, else the ``cancel``
    request its worker applies (a running job is told to stop: see
    :data:`STOPPED`). None when already asked;
    StateError when the task is finished."""
    status = doc.get("status")
    if status in FINISHED:
        raise StateError(f"task {doc.get('_id')} is {status}: there is nothing to cancel")
    if status == CANCEL:
        return None
    if held(doc):
        return {**doc, "status": CANCEL}
    return cancel(doc, now)


def request_reschedule(doc: dict, date: datetime, *, any_status: bool = False) -> dict:
    """Run the task again at ``date``: ``waiting``, or ``reschedule`` when a worker holds it
    (it re-reads the date; a running job finishes first). Only a task in ``error`` unless
    ``any_status``. The attempt count and the error are cleared, and a repeating task's
    series starts anew from ``date`` (runs counted toward ``limit`` still count)."""
    status = doc.get("status")
    if not any_status and status != ERROR:
        raise NotInError(doc.get("_id"), status)
    new = dict(doc)
    ns = dict(info(doc))
    new["date"] = format_date(date)
    ns.pop("anchor", None)
    if held(doc):
        new["status"] = RESCHEDULE
    else:
        _release(new, ns)
        ns.pop("next_run", None)
    return _with_info(new, doc, ns)


def request_pause(doc: dict, now: datetime) -> dict | None:
    """Pause: ``paused``, stamped ``after.paused`` (so that a plain ``waiting`` written later
    resumes it, :func:`resume`). A process holding it lets it go; a run going finishes and
    is recorded, and the task stays paused. None when already paused; StateError when the
    task is finished or being canceled."""
    status = doc.get("status")
    if status in FINISHED or status == CANCEL:
        raise StateError(f"task {doc.get('_id')} is {status}: there is nothing to pause")
    if status == PAUSED:
        return None
    new, ns = _copy(doc)
    new["status"] = PAUSED
    ns["paused"] = format_date(now)
    if not running(doc):
        _drop(ns, HOLD + ("retry_at",))
    return new


def stamp_pause(doc: dict, now: datetime) -> dict:
    """A pause written without ``after.paused`` (plain HTTP), stamped by the worker that
    sees it: a ``waiting`` written later is then a resume, as for a pause by ``after``."""
    new, ns = _copy(doc)
    ns["paused"] = format_date(now)
    return new


def request_resume(doc: dict, now: datetime) -> dict | None:
    """Resume a paused task (:func:`resume`); a run still going keeps going (``running``
    again, as if never paused). None when it is not paused and not stamped; StateError when
    it is finished."""
    status = doc.get("status")
    if status in FINISHED or status == CANCEL:
        raise StateError(f"task {doc.get('_id')} is {status}: there is nothing to resume")
    if status != PAUSED and "paused" not in info(doc):
        return None
    if running(doc):
        new, ns = _copy(doc)
        new["status"] = RUNNING
        _keep_pause(ns, now)
        return new
    return resume(doc, parse(doc), now)


def _keep_pause(ns: dict, now: datetime) -> None:
    """The pause stamped in ``ns`` is over at ``now``: moved to ``pauses`` (the last
    :data:`MAX_PAUSES`), for the audit. A stamp that is not a date is dropped."""
    since = instant(ns.pop("paused", None))
    if since is None:
        return
    kept = ns.get("pauses") if isinstance(ns.get("pauses"), list) else []
    ns["pauses"] = [*kept, {"from": format_date(since), "to": format_date(now)}][-MAX_PAUSES:]


def resume(doc: dict, spec: Spec, now: datetime) -> dict:
    """A paused task, ``waiting`` again from its next occurrence after ``now``: the
    occurrences that fell during the pause are not run, nor counted. A task whose date is
    still ahead keeps it. A one-off task whose date passed runs at once (subject to
    ``max_delay``): skipping it would lose it. A repeating task with no occurrence left
    (``until`` passed, ``limit`` reached) ends ``done``."""
    new, ns = _copy(doc)
    _keep_pause(ns, now)
    _release(new, ns)
    ns.pop("started", None)
    ns.pop("run", None)
    if spec.repeat is None or spec.date > now:
        ns["next_run"] = format_date(spec.date)
        return new
    anchor = instant(ns.get("anchor")) or spec.date
    try:
        following = spec.repeat.next_date(anchor, spec.date, now,
                                          counter(ns, "occurrences"))
    except OverflowError:
        following = None
    if following is None:
        new["status"] = DONE
        _drop(ns, ("next_run", "anchor", "occurrences"))
        return new
    ns["anchor"] = format_date(anchor)
    new["date"] = ns["next_run"] = format_date(following)
    return new


def redefine(current: dict, wanted: dict, *, date_given: bool) -> dict | None:
    """The document that gives ``current`` the definition (:data:`DEFINITION`) of
    ``wanted``, keeping everything else, or None when nothing in it changes.

    The date is kept when none was given, and for a repeating task whose rule is unchanged
    when ``wanted`` names its series' first date: a deploy restarts no series. A new date or
    rule starts a new series. The status becomes ``reschedule`` when a worker holds the
    task, else ``waiting`` (it runs under its new definition)."""
    new = {k: v for k, v in current.items() if k not in DEFINITION}
    new.update({k: v for k, v in wanted.items() if k in DEFINITION})
    ns = dict(info(current))
    old_date = instant(current.get("date"))
    same_rule = current.get("repeat") == wanted.get("repeat")
    if old_date is not None:
        if not date_given:
            new["date"] = current["date"]
        elif same_rule and wanted.get("repeat") is not None:
            if (instant(ns.get("anchor")) or old_date) == instant(wanted["date"]):
                new["date"] = current["date"]
    if all(new.get(k) == current.get(k) for k in DEFINITION):
        return None
    if not same_rule or new["date"] != current.get("date"):
        _drop(ns, ("anchor", "occurrences", "next_run"))
    if new.get("job") != current.get("job"):
        ns.pop("isolated", None)  # another job: its runs go back to the task's isolation
    if current.get("status") == PAUSED:  # a deploy resumes nothing
        new["status"] = PAUSED
    elif held(current):
        new["status"] = RESCHEDULE
    else:
        _release(new, ns)
    return _with_info(new, current, ns)


def _release(new: dict, ns: dict) -> None:
    """``waiting`` afresh: no hold, no error, no pending retry, no attempt made."""
    new["status"] = WAITING
    ns["attempt"] = 0
    _drop(ns, RESET)


def _with_info(new: dict, doc: dict, ns: dict) -> dict:
    if ns or NS in doc:  # a task that never had the namespace does not get an empty one
        new[NS] = ns
    return new


def instant(value: Any) -> datetime | None:
    try:
        return parse_date(value)
    except DateError:
        return None


def next_occurrence(spec: Spec, anchor: datetime, now: datetime, runs: int) -> datetime | None:
    """The date after ``spec.date`` of a repeating task: the first occurrence that runs after
    ``now`` (its jittered instant: :attr:`Spec.due`), so an occurrence whose nominal date
    passed while the one before it ran late in its jitter still runs; past ones are skipped
    as without jitter (:meth:`after.rules.repeat.Rule.next_date`)."""
    rule = spec.repeat
    if not rule.jitter:
        return rule.next_date(anchor, spec.date, now, runs)
    low, scheduled = now - timedelta(seconds=rule.jitter), spec.date
    for _ in range(1000):  # a jitter of many intervals: bounded, then as without jitter
        found = rule.next_date(anchor, scheduled, low, runs)
        if found is None or occ.jittered(spec.id, found, rule.jitter) > now:
            return found
        scheduled = found
    return rule.next_date(anchor, spec.date, now, runs)


def isolated(doc: dict, spec: Spec) -> bool:
    """Does the run of ``doc`` go to a child process of its own? When the task asks for it
    (``"isolation": "process"``), and for every run of a task once one of its runs was cut
    short by the death of its process (``after.isolated``, see INTERRUPTED_RERUNS)."""
    return spec.isolation == PROCESS or bool(info(doc).get("isolated"))


def timeout_error(timeout: float, isolated: bool) -> str:
    """Why a run that passed its ``timeout`` failed."""
    killed = "; its process was killed" if isolated else ""
    return f"timeout: the run took longer than {timeout:g}s{killed}"


def ended_its_process(exitcode: int | None) -> str:
    """Why a run failed whose child process ended without an answer: ``exitcode`` as
    :attr:`multiprocessing.Process.exitcode` gives it (a negative number: the signal)."""
    if exitcode is None:
        return ENDED_ITS_PROCESS.format(how="it ended without an answer")
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "an unknown signal"
        return ENDED_ITS_PROCESS.format(how=f"killed by signal {-exitcode}, {name}")
    return ENDED_ITS_PROCESS.format(how=f"exit code {exitcode}")


def missed(spec: Spec, due: datetime, now: datetime) -> bool:
    """True when the run would start later than ``date + max_delay`` (for a repeating task,
    later than its catch-up allows: :func:`after.rules.catchup.bound`)."""
    limit = late_bound(spec)
    if limit is None:
        return False
    try:
        return now > due + timedelta(seconds=limit[0])
    except OverflowError:  # late past year 9999: never
        return False


def late_bound(spec: Spec) -> tuple[float, str] | None:
    """How late a run of ``spec`` may start, and what says so; None: unbounded."""
    return cu.bound(spec.catchup if spec.repeat is not None else None, spec.max_delay)


def own_occurrences(doc: dict, spec: Spec, now: datetime,
                    calendars: dict | None = None) -> list[datetime]:
    """The occurrences the task itself still runs (or is running), which a backfill leaves
    to it: its ``date`` while it is held, rescheduled or waits for a retry, or while a run
    of it is going (paused or being canceled too), unless its worker would record it
    ``missed`` (past ``max_delay``); while it waits, those its catch-up runs
    (:func:`catch_up`: its date, or the latest occurrence due, or under ``all`` each one
    due); none on a day its calendar excludes (recorded ``skipped``: ``calendars``, the
    shared ones it names, by name). Nothing for a task that runs none of its past dates:
    paused (it resumes from its next occurrence after now), being canceled, or finished.

    Why the backfill yields, not the task (issue 24): the task's own run is already the
    one of that occurrence, with its retries, ``max_delay`` and run number, and a backfill
    never writes the task; the copy is the extra. If the task then does not run it after
    all (paused past ``max_delay``, canceled, moved; a later occurrence fell due first
    under ``latest``), asking again for the window runs it: no copy of it was written."""
    status = doc.get("status")
    if status not in FINISHED and running(doc):
        return [spec.date]  # its run is going: the occurrence is under way
    if status not in RUNNABLE:
        return []
    found = [spec.date]
    rule = spec.repeat
    if rule is not None and status == WAITING:
        anchor = instant(info(doc).get("anchor")) or spec.date
        plan = cu.plan(rule, spec.id, spec.date, anchor, spec.catchup, spec.max_delay, now)
        if plan is not None:
            found = list(plan.runs)
    elif missed(spec, spec.due, now):
        found = []
    if rule is not None and rule.exclude is not None:
        found = [at for at in found
                 if excluded(rule.exclude, at, rule.zone, calendars or {}) is None]
    return found


def catch_up(doc: dict, spec: Spec, now: datetime) -> tuple[dict, cu.Plan] | None:
    """A repeating task ``waiting`` at a date that has passed, caught up at ``now`` by its
    ``catchup`` policy (:mod:`after.rules.catchup`): the document that moves it to the occurrence
    to run now (the latest due under ``latest``, the first of the latest ``max`` under
    ``all``) or, when none is to run, to its next occurrence after now (``done`` when there
    is none), the occurrences passed counted in ``after.missed``; and the plan, whose
    ``missed`` are recorded. None when the task runs its date as it is (due later, or
    the one to run)."""
    if spec.repeat is None or doc.get("status") != WAITING:
        return None
    anchor = instant(info(doc).get("anchor")) or spec.date
    try:
        plan = cu.plan(spec.repeat, spec.id, spec.date, anchor, spec.catchup,
                       spec.max_delay, now)
    except OverflowError:  # a window at the calendar's end: the date as it is
        return None
    if plan is None or plan.as_is:
        return None
    new, ns = _copy(doc)
    ns["anchor"] = format_date(anchor)
    ns["missed"] = counter(ns, "missed") + len(plan.missed)
    following = plan.run
    if following is None:
        try:
            following = next_occurrence(spec, anchor, now, counter(ns, "occurrences"))
        except OverflowError:
            following = None
    if following is None:  # nothing left of the series
        new["status"] = DONE
        _drop(ns, ("next_run", "anchor", "occurrences"))
        return new, plan
    new["date"] = ns["next_run"] = format_date(following)
    return new, plan


@dataclass(frozen=True)
class Outcome:
    """How one run ended."""

    outcome: str  # OK, FAILED, TIMEOUT, MISSED, INTERRUPTED, SKIPPED
    started: datetime
    ended: datetime
    result: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == OK

    @property
    def duration_ms(self) -> float:
        return round((self.ended - self.started).total_seconds() * 1000, 3)


# Over 60 lines: the end of a run is one decision (counters, retry, repeat, done or error)
# read top to bottom; split, its order of precedence would be harder to follow.
def last_run(outcome: Outcome, number: int | None, attempt: int,
             token: str | None = None) -> dict:
    """What ``after.last_run`` says of a run that ended; ``token``: the run's (whose run it
    was: a dead process's open intent of that number is recovered as its record only when
    the run counted was that intent's, see after.worker.intents.orphan)."""
    last = {
        "number": number,
        "attempt": attempt,
        "outcome": outcome.outcome,
        "started": format_date(outcome.started),
        "ended": format_date(outcome.ended),
        "duration_ms": outcome.duration_ms,
    }
    if isinstance(token, str):
        last["token"] = token
    if outcome.ok:
        last["result"] = outcome.result
    elif outcome.error is not None:
        last["error"] = outcome.error
    return last


def finish(doc: dict, spec: Spec | None, outcome: Outcome, now: datetime,
           rand: float | None = None, *,
           following: tuple[datetime | None, int] | None = None) -> dict:
    """The document after a run: counters, ``last_run``, and the next state.

    - success or missed: the next date of a repeating task (``waiting``), else ``done``
      (``error`` for a missed one-off run: it never ran);
    - failure with attempts left (``retry``): stays ``scheduled`` by the same owner, due
      after the retry delay;
    - failure on the last attempt: ``error``, or the next date of a repeating task.
    A task the user asked to ``cancel`` meanwhile ends ``canceled``; a ``reschedule``
    written meanwhile is honoured (its ``date`` is kept and it is ``waiting`` again).
    ``following``: the next date of a repeating task decided by the caller (None: the series
    ends) and the occurrences passed on the way (toward ``limit``): excluded days skipped in
    one step (:func:`after.rules.skipping.leap`).
    """
    if doc.get("status") == PAUSED:
        # paused while it ran: the run is recorded, the task stays paused (its next date, if
        # any, computed as usual: a resume starts from the next occurrence after now anyway)
        after = finish({**doc, "status": RUNNING}, spec, outcome, now, rand,
                       following=following)
        if after["status"] in (WAITING, SCHEDULED):
            after["status"] = PAUSED
            _drop(after[NS], HOLD + ("retry_at",))
        return after
    new, info = _copy(doc)
    attempt = counter(info, "attempt") or 1
    if outcome.outcome not in (MISSED, SKIPPED):
        info["runs"] = counter(info, "runs") + 1
    kind = {OK: "successes", MISSED: "missed", SKIPPED: "skipped",
            STOPPED: "canceled"}.get(outcome.outcome, "failures")
    info[kind] = counter(info, kind) + 1
    info["last_run"] = last_run(outcome, counter(info, "run") or counter(info, "runs"), attempt,
                                info.get("token"))
    for key in ("started", "run", "token"):
        info.pop(key, None)

    user_status = doc.get("status")
    if user_status == CANCEL:
        return cancel(new, now)
    if user_status == RESCHEDULE:
        info["attempt"] = 0
        return hand_back(new) | {"status": RESCHEDULE}
    if user_status == WAITING or date_moved(doc):
        # ``waiting`` or a new ``date`` written while it ran: once this run is over, the task
        # is waiting at the date the user wrote (never a second run alongside this one)
        info["attempt"] = 0
        return hand_back(new)

    failed = outcome.outcome in (FAILED, TIMEOUT, INTERRUPTED)
    limit = spec.retry.limit if spec is not None else 0
    if outcome.outcome == INTERRUPTED:
        # A run cut short by a dead worker is run again (at least once), beyond ``retry``, in
        # a child process from now on; but not once more than INTERRUPTED_RERUNS in a row.
        info.setdefault("isolated", format_date(now))
        streak = info["interrupted"] = counter(info, "interrupted") + 1
        if streak > INTERRUPTED_RERUNS:
            outcome = Outcome(INTERRUPTED, outcome.started, outcome.ended, error=
                              INTERRUPTED_TOO_OFTEN.format(n=streak, why=outcome.error))
            info["last_run"]["error"] = outcome.error
            limit = -1
        else:
            limit = max(limit, attempt)
    else:
        info.pop("interrupted", None)
    if failed and spec is not None and attempt <= limit:
        delay = spec.retry.delay_for(attempt, random.random() if rand is None else rand)
        if outcome.outcome == INTERRUPTED:
            delay = 0.0
        due = now + timedelta(seconds=delay)
        new["status"] = SCHEDULED
        info["due"] = format_date(due)
        info["next_run"] = format_date(due)
        info["retry_at"] = format_date(due)
        return new

    info.pop("retry_at", None)
    info["attempt"] = 0
    _drop(info, HOLD)
    next_date = None
    if spec is not None and spec.repeat is not None:
        try:
            anchor = parse_date(info.get("anchor"), "after.anchor")
        except DateError:  # missing, or not a date (a user may write anything there)
            anchor = spec.date
        skipped, buffered = overlapped(doc, spec, outcome)
        info["anchor"] = format_date(anchor)
        runs = counter(info, "occurrences") + 1 + (following[1] if following else 0)
        info["occurrences"] = runs
        if skipped:
            info["skipped"] = counter(info, "skipped") + len(skipped)
        fell = fell_missed(doc, spec, outcome) if following is None else []
        if fell:
            info["missed"] = counter(info, "missed") + len(fell)
        try:
            if following is not None:
                next_date = following[0]
            elif caught_up_in_turn(spec, outcome):  # even if due: the catch-up takes it
                next_date = spec.repeat.next_date(anchor, spec.date, spec.date, runs)
            else:
                next_date = buffered or next_occurrence(spec, anchor, now, runs)
        except OverflowError:  # the next occurrence would be past year 9999: none
            next_date = None
    if next_date is not None:
        new["status"] = WAITING
        new["date"] = format_date(next_date)
        info["next_run"] = new["date"]
        info.pop("error", None)
        return new
    for key in ("next_run", "anchor", "occurrences"):  # the series is over; run anew, it restarts
        info.pop(key, None)
    if outcome.ok or outcome.outcome == SKIPPED:
        new["status"] = DONE
        info.pop("error", None)
    else:
        new["status"] = ERROR
        info["error"] = outcome.error or outcome.outcome
    return new


def caught_up_in_turn(spec: Spec, outcome: Outcome) -> bool:
    """Does the task go on from the occurrence right after this one, even one already
    due, for the catch-up (:func:`catch_up`) to decide on? Under ``all`` (each occurrence
    runs in turn, an excluded one skipped in turn), and after an occurrence recorded missed
    (the ones after it may still be in time), whatever the policy; else from its next
    occurrence after now."""
    return spec.policy == cu.ALL or outcome.outcome == MISSED


def fell_missed(doc: dict, spec: Spec, outcome: Outcome) -> list[datetime]:
    """The occurrences after the one just run that fell due before its run started (the run
    waited for a job thread, a slot or its retries), under ``latest`` and ``none``: not run,
    recorded missed (the latest :data:`after.rules.catchup.MAX_MISSED`). None under ``all`` (they
    run in turn), for an occurrence not run (missed, skipped) or an ``allow`` task."""
    if spec.repeat is None or spec.policy == cu.ALL or spec.overlap == ALLOW \
            or outcome.outcome in (MISSED, SKIPPED):
        return []
    anchor = instant(info(doc).get("anchor")) or spec.date
    try:
        return cu.fell_before(spec.repeat, spec.id, spec.date, anchor, outcome.started)
    except OverflowError:
        return []


def overlapped(doc: dict, spec: Spec | None, outcome: Outcome) -> tuple[list[datetime],
                                                                        datetime | None]:
    """The occurrences of a repeating task that fell due while this run of ``doc`` went
    (after its date and its start, up to its end; at most :data:`MAX_SKIPPED`): those
    recorded ``skipped``, and the one run right after (``buffer_one``: the latest), or None.
    Skipped occurrences count nothing toward ``limit`` (runs); after the series' last run
    none falls due. Nothing for ``allow`` (each ran alongside), a missed or interrupted run,
    a run that will be retried, or under catch-up ``all`` (they run in turn after it)."""
    if spec is None or spec.repeat is None or spec.overlap == ALLOW \
            or outcome.outcome in (MISSED, INTERRUPTED, SKIPPED) or spec.policy == cu.ALL:
        return [], None
    ns = info(doc)
    limit = spec.repeat.limit
    if limit is not None and counter(ns, "occurrences") + 1 >= limit:
        return [], None  # the series' last run: nothing falls due after it
    anchor = instant(ns.get("anchor")) or spec.date
    fell = spec.repeat.falling(anchor, max(spec.date, outcome.started), outcome.ended,
                               MAX_SKIPPED + 1)
    if spec.overlap == BUFFER_ONE and fell:
        return fell[:-1][:MAX_SKIPPED], fell[-1]
    return fell[:MAX_SKIPPED], None
