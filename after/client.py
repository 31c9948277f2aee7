"""A small Python client for tasks: schedule, inspect, cancel and reschedule them.

::

    from after.client import Client

    with Client("http://127.0.0.1:5984", "tasks") as client:
        task_id = client.schedule("hello", "Ada", worker="billing", at="+15m")
        client.get(task_id)["status"]          # 'waiting'

A task is the JSON document of DESIGN.md; the client only builds it, checks it with
:func:`after.rules.task.parse` (the validator the worker uses, so a task the client accepts is one
the worker can run and a bad one is refused before it is written, with the same message),
and writes it with ``_rev``. A write that conflicts (409) is re-read and decided again,
never forced.

Errors: :class:`~after.rules.task.TaskError` (a ``ValueError``) for a task or an argument that
cannot be used, the message naming the field; :class:`StateError` (a ``ValueError``) for an
operation the task's status does not allow; :class:`TaskNotFound` (a
:class:`~after.couch.store.NotFound`) for an unknown id; :class:`ReplicaError` (a
``ValueError``) for a replication that cannot be set up as asked; the store's other typed
errors (:class:`~after.couch.store.Unavailable`, ...) as they come.
"""

# Longer than 500 lines on purpose: the Client is one class with one method per operation a user has
# (schedule, wait, runs, tasks, cancel, pause, reschedule, run now, backfill, calendars, audit,
# caps, replication), beside the functions that build a task document from its keywords,
# which the command line shares; each method is short and reads the rules of after.rules.task.

from __future__ import annotations

import heapq
import json
import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from itertools import islice
from typing import Any
from urllib.parse import quote

from after import audit as audits
from after import config as config_module
from after import replica
from after.couch import pausing, retention, schema, serving
from after.couch.caps import in_use
from after.couch.store import (
    Conflict,
    Forbidden,
    NotFound,
    Store,
    StoreError,
    Unavailable,
    describe_error,
)
from after.jobs import JobError, JobRegistry, check_name
from after.process import ProcessError
from after.process import check_name as check_worker_name
from after.replica import ReplicaError
from after.rules import occurrence as occ
from after.rules import task as rules
from after.rules.calendar import PREFIX as CALENDAR_PREFIX
from after.rules.calendar import CalendarError, Exclusion, calendar_name, excluded, parse_calendar
from after.rules.dates import (
    SHORTHANDS,
    DateError,
    format_date,
    parse_date,
    parse_when,
    shorthand,
    to_ms,
    utcnow,
)
from after.rules.repeat import CronRule, RepeatError, parse_repeat
from after.rules.task import StateError, TaskError

__all__ = ["Client", "ReplicaError", "StateError", "TaskError", "TaskNotFound", "UnservedWorker",
           "every_units"]

#: How many times a write that conflicts is re-read and retried before giving up.
MAX_CONFLICTS = 20
#: Most tasks, and run records, one audit reads.
MAX_AUDIT_TASKS = 10_000
MAX_AUDIT_RUNS = 500_000

class TaskNotFound(NotFound):
    """No task has that id."""


class UnservedWorker(UserWarning):
    """A task was written for a worker name that no live process serves (or that is
    paused): it waits until one starts. A warning, not an error: the workers may simply
    start later (``warnings.simplefilter("ignore", UnservedWorker)`` silences it)."""


#: Seconds during which a client does not ask again whether a worker name is served.
SERVED_FOR = 60.0


def every_units(text: str) -> dict:
    """``"7d"``, ``"1h30m"``, ``"1M"`` (months; ``m`` is minutes) as After's object of units.

    Raises TaskError for anything else. A unit may appear once.
    """
    parts = shorthand(text)
    if parts is None:
        raise TaskError(f"every: {text!r} is not an interval like 30s, 15m, 6h, 7d, 1M, 1y, "
                        "1h30m or an ISO 8601 duration like P1D")
    units: dict[str, int] = {}
    for name, number in parts:
        if name in units:
            short = next(k for k, v in SHORTHANDS.items() if v == name)
            raise TaskError(f"every: {text!r} gives {short!r} twice")
        units[name] = number
    return units


def _when(value: Any, field: str, now: datetime) -> datetime | None:
    """``value`` (None, an aware or naive-UTC datetime, ``now``, ``+15m`` or ISO 8601)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return parse_date(format_date(value))
    try:
        return parse_when(value, now, field)
    except DateError as exc:
        raise TaskError(str(exc)) from None


def _every(every: Any, cron: str | None, tz: str | None, limit: Any, until: Any,
           now: datetime, jitter: Any = None) -> Any:
    """The ``repeat`` field for the keyword arguments of :meth:`Client.schedule`."""
    if every is not None and cron is not None:
        raise TaskError("every: give every or cron, not both")
    if tz is not None and cron is None:
        raise TaskError("tz: applies to cron only")
    if every is None and cron is None:
        if limit is not None:
            raise TaskError("limit: applies to a repeating task only (every or cron)")
        if until is not None:
            raise TaskError("until: applies to a repeating task only (every or cron)")
        if jitter is not None:
            raise TaskError("jitter: applies to a repeating task only (every or cron)")
        return None
    extra: dict = {}
    if limit is not None:
        extra["limit"] = limit
    if until is not None:
        extra["until"] = format_date(_when(until, "until", now))
    if jitter is not None:
        extra["jitter"] = jitter
    if cron is not None:
        return {"cron": cron, **({"tz": tz} if tz is not None else {}), **extra}
    if isinstance(every, timedelta):
        if every % timedelta(milliseconds=1):
            raise TaskError(f"every: {every} is not a whole number of milliseconds")
        every = {"milliseconds": every // timedelta(milliseconds=1)}
    elif isinstance(every, int) and not isinstance(every, bool):
        every = {"seconds": every}
    elif isinstance(every, str):
        if every.startswith("P"):
            return {"every": every, **extra} if extra else every
        every = every_units(every)
    elif not isinstance(every, dict):
        raise TaskError("every: expected an object of units, an ISO 8601 duration, a "
                        f"shorthand like 7d, seconds or a timedelta, not {every!r}")
    return {**every, **extra}




def _with_exclude(repeat: Any, exclude: Any) -> Any:
    """``repeat`` with ``exclude`` (dates, ranges, ``{"calendar": NAME}``) added."""
    if exclude is None:
        return repeat
    if repeat is None:
        raise TaskError("exclude: applies to a repeating task only (every or cron)")
    if isinstance(exclude, str):  # a calendar's name
        exclude = {"calendar": exclude}
    elif isinstance(exclude, tuple | set | frozenset):
        exclude = list(exclude)
    if isinstance(repeat, str):
        return {"every": repeat, "exclude": exclude}
    return {**repeat, "exclude": exclude}


def catchup_field(value: Any) -> Any:
    """``"all"`` (a policy alone) or ``{"policy", "window", "max"}`` as the ``catchup``
    field (checked later by :func:`after.rules.task.parse`)."""
    return {"policy": value} if isinstance(value, str) else value


def concurrency_field(value: Any) -> dict | None:
    """``"reports:2"``, ``("reports", 2)`` or ``{"key": "reports", "limit": 2}`` as the
    ``concurrency`` field (checked later by :func:`after.rules.task.parse`)."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        key, colon, limit = value.rpartition(":")
        if not colon or not limit.isdigit():
            raise TaskError(f"concurrency: {value!r} is not KEY:LIMIT (like reports:2)")
        return {"key": key, "limit": int(limit)}
    if isinstance(value, tuple) and len(value) == 2:
        return {"key": value[0], "limit": value[1]}
    raise TaskError(f"concurrency: {value!r} is not KEY:LIMIT, (key, limit) or "
                    '{"key": ..., "limit": ...}')


#: Seconds in each fixed unit of the duration shorthand (months and years vary).
_UNIT_SECONDS = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1,
                 "milliseconds": 0.001}


def rate_field(value: Any) -> dict | None:
    """``"mail:100/1h"`` (KEY:LIMIT/PER, PER in seconds or a shorthand of fixed units:
    ``30s``, ``1m``, ``1h30m``, ``1d``), ``("mail", 100, 3600)`` or ``{"key": "mail",
    "limit": 100, "per": 3600}`` as the ``rate`` field (checked later by
    :func:`after.rules.task.parse`)."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, tuple) and len(value) == 3:
        return {"key": value[0], "limit": value[1], "per": value[2]}
    wrong = TaskError(f"rate: {value!r} is not KEY:LIMIT/PER (like mail:100/1h, or "
                      "mail:100/3600 in seconds)")
    if not isinstance(value, str):
        raise wrong
    key, colon, rest = value.rpartition(":")
    limit, slash, per = rest.partition("/")
    if not colon or not slash or not limit.isdigit() or not per:
        raise wrong
    try:
        seconds: float = float(per) if per.replace(".", "", 1).isdigit() else sum(
            n * _UNIT_SECONDS[unit] for unit, n in shorthand(per) or [("", 0)])
    except KeyError:  # a month or a year: no fixed length
        raise TaskError(f"rate: the period {per!r} has no fixed length (use s, m, h, d or "
                        "w)") from None
    if not seconds:
        raise wrong
    return {"key": key, "limit": int(limit),
            "per": int(seconds) if float(seconds).is_integer() else seconds}


def _order(doc: dict) -> tuple:
    instant = rules.instant(doc.get("date"))
    return (instant is None, instant or datetime.min, doc.get("_id", ""))


def check(doc: dict) -> rules.Spec | Exclusion:
    """What the worker checks, plus the names it would refuse later (raises TaskError). A
    calendar document (``calendar:NAME``) is checked as one (:func:`check_calendar`)."""
    if calendar_name(doc.get("_id")) is not None:
        return check_calendar(doc)
    spec = rules.parse(doc)
    try:
        check_worker_name(doc["worker"])
    except ProcessError as exc:
        raise TaskError(f"worker: {exc}") from None
    try:
        check_name(spec.job)
    except JobError as exc:
        raise TaskError(str(exc)) from None
    return spec


def check_calendar(doc: dict) -> Exclusion:
    """A calendar document as the database's validate_doc_update checks it (TaskError)."""
    try:
        return parse_calendar(doc)
    except CalendarError as exc:  # as task.parse says it: as written, or past 300
        message = " ".join(str(exc).split())  # characters collapsed and cut
        raise TaskError(str(exc) if len(message) <= 300 else message[:297] + "...") from None


def _check_worker(name: Any) -> None:
    if not isinstance(name, str):
        raise TaskError(f"worker: {name!r} is not a worker name")
    try:
        check_worker_name(name)
    except (ProcessError, TypeError) as exc:
        raise TaskError(f"worker: {exc}") from None


def build(job: str, args: tuple | list = (), *, worker: str,
          at: datetime | str | None = None, every: Any = None, cron: str | None = None,
          tz: str | None = None, limit: int | None = None,
          until: datetime | str | None = None, jitter: float | None = None,
          retry: int | dict | None = None, timeout: float | None = None,
          max_delay: float | None = None, isolation: str | None = None,
          id: str | None = None, kwargs: dict | None = None, exclude: Any = None,
          concurrency: Any = None, overlap: str | None = None,
          priority: int | None = None, dst: dict | None = None,
          catchup: str | dict | None = None, rate: Any = None,
          debounce: float | None = None) -> tuple[dict, bool]:
    """The task document :meth:`Client.schedule` writes (checked as the worker would), and
    whether ``at`` was given; raises TaskError naming the field."""
    now = utcnow()
    if args and kwargs is not None:
        raise TaskError("job.arguments: give positional arguments or kwargs, not both "
                        "(a task passes a list or an object)")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TaskError(f"job.arguments: kwargs must be a dict, not {kwargs!r}")
    if id is not None and (not isinstance(id, str) or not id or id.startswith("_")):
        raise TaskError(f"id: {id!r} is not a task id (a non-empty string not starting "
                        "with _)")
    repeat = _with_exclude(_every(every, cron, tz, limit, until, now, jitter), exclude)
    if dst is not None:
        if cron is None:
            raise TaskError("dst: applies to a cron rule only (cron with tz)")
        repeat = {**repeat, "dst": dst}
    start = _when(at, "at", now)
    doc: dict = {
        "_id": id or uuid.uuid4().hex,
        "worker": worker,
        "date": None,
        "job": {"name": job, "arguments": kwargs if kwargs is not None else list(args)},
        "status": rules.WAITING,
    }
    optional = {"repeat": repeat, "retry": retry, "timeout": timeout,
                "max_delay": max_delay, "isolation": isolation,
                "concurrency": concurrency_field(concurrency), "rate": rate_field(rate),
                "debounce": debounce,
                "overlap": overlap, "priority": priority, "catchup": catchup_field(catchup)}
    doc.update({k: v for k, v in optional.items() if v is not None})
    doc["date"] = format_date(start or now)
    spec = check(doc)
    if isinstance(spec.repeat, CronRule):
        first = (start or now) - timedelta(microseconds=1)
        found = spec.repeat.upcoming(first, first, 1)
        if not found:
            raise TaskError(f"repeat: cron {spec.repeat.expr!r} has no time after "
                            f"{doc['date']}")
        doc["date"] = format_date(found[0])
    try:
        json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TaskError(f"job.arguments: not JSON ({exc})") from None
    return doc, start is not None


class Client:
    """Tasks in one database: ``Client(url, db)``, or the configuration's defaults
    (``config.json`` and ``AFTER_*`` variables, see :mod:`after.config`)."""

    def __init__(self, url: str | None = None, db: str | None = None, *,
                 config: config_module.Config | None = None, retries: int = 4,
                 store: Store | None = None,
                 jobs: str | os.PathLike | JobRegistry | bool | None = None):
        """``jobs``: where the jobs are known, to check that a task's job exists and can
        take its arguments before it is written (a ``TaskError`` otherwise): a jobs
        folder, or a :class:`~after.jobs.JobRegistry` (with jobs modules). By default, a
        client built from the configuration (``Client()``) checks against its jobs folder
        and jobs modules when the folder exists or modules are named; ``False``: never."""
        if store is not None:  # an open store (the dashboard's): closing it is its owner's
            url, db = store.safe_url, store.db
        elif url is None or db is None:
            config = config or config_module.load()
        self.url = url or config.url
        self.db = db or config.db
        self.runs_db = config_module.runs_db(self.db)
        self.store = store or Store(self.url, self.db, retries=retries)
        self._served: dict[str, float] = {}  # worker name -> when it was last asked about
        self.jobs = _registry(jobs, config)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self.store.safe_url}/{self.db}>"

    # -- creating and updating ---------------------------------------------------------------

    # Over 60 lines, half of them the docstring that documents every keyword and the upsert.
    def schedule(self, job: str | dict, *args: Any, worker: str | None = None,
                 at: datetime | str | None = None,
                 every: Any = None, cron: str | None = None, tz: str | None = None,
                 limit: int | None = None, until: datetime | str | None = None,
                 jitter: float | None = None, retry: int | dict | None = None,
                 timeout: float | None = None,
                 max_delay: float | None = None, isolation: str | None = None,
                 id: str | None = None, kwargs: dict | None = None, exclude: Any = None,
                 concurrency: Any = None, overlap: str | None = None,
                 priority: int | None = None, dst: dict | None = None,
                 catchup: str | dict | None = None, rate: Any = None,
                 debounce: float | None = None) -> str:
        """Schedule ``job(task, *args, **kwargs)`` on ``worker``; returns the task's id.

        Or give the task as a description, a dict of these arguments (``job``, ``args`` a
        list, and the keywords), as :meth:`schedule_many` takes them::

            client.schedule({"job": "report", "args": ["eu"], "worker": "billing",
                             "cron": "0 9 * * 1", "tz": "Europe/Paris", "retry": 3})

        ``at``: a datetime (naive means UTC), ``"now"``, ``"+15m"`` (``s m h d w ms``) or
        ISO 8601; default now. With ``cron`` the first run is the first cron time at or
        after ``at``. ``every``: an object of After units (``{"days": 7}``), an ISO 8601
        duration (``"P7D"``), a shorthand (``"7d"``, ``"1h30m"``, ``"1M"`` is a month),
        seconds (int) or a timedelta. ``cron`` with ``tz`` (IANA, default UTC), and
        ``dst``, what a cron rule does with a local time that does not exist or occurs
        twice: ``{"gap": "shift" or "skip", "fold": "first", "last" or "both"}``
        (``repeat.dst``, see :mod:`after.rules.repeat`). ``limit``
        (runs) and ``until`` end a repeating task; ``jitter`` (seconds) runs each of its
        occurrences later by a deterministic amount in [0, jitter). ``retry``: attempts after
        the first, or
        ``{"limit", "delay", "backoff"}``. ``timeout`` and ``max_delay`` in seconds.
        ``isolation``: ``"thread"`` (the default) or ``"process"``, a run in a child process
        of its own, killed when it passes ``timeout``.
        ``exclude``: the days a repeating task skips (``repeat.exclude``): a list of dates
        (``"2026-12-25"``) and ranges (``{"from": ..., "to": ...}``), or a shared calendar's
        name (see :meth:`set_calendar`). ``concurrency``: ``"reports:2"`` (at most 2 runs
        with the key ``reports`` at once, everywhere), or ``{"key": ..., "limit": ...}``.
        ``rate``: ``"mail:100/1h"`` (at most 100 runs with the key ``mail`` begin in any
        hour, everywhere; the period in seconds or ``s m h d w``), or ``{"key": ...,
        "limit": ..., "per": SECONDS}``. ``debounce`` (seconds, a task that runs once): its
        run waits until that long went by with no new version of it (with ``id``, schedule
        it again on each event: it runs once, after the last).
        ``overlap``: ``"skip"`` (default), ``"buffer_one"`` or ``"allow"``: what becomes of
        the occurrences of a repeating task that fall due while a run of it goes.
        ``priority``: an integer, default 0; when more tasks are due than a worker can
        start, higher first. ``catchup``: what runs of a repeating task's occurrences
        missed while no worker ran it: ``"latest"`` (the default), ``"all"`` or ``"none"``,
        or ``{"policy": ..., "window": SECONDS, "max": N}`` (:mod:`after.rules.catchup`).
        Positional ``args`` or ``kwargs``, not both (a task passes a list or an object).

        With ``id`` it is an upsert, safe to run on every deploy:

        - no task has that id: it is created;
        - the task exists: its definition (``worker date job repeat retry timeout
          max_delay isolation concurrency rate debounce overlap priority catchup``) is
          replaced and
          everything else kept: other user fields and the worker's ``after`` counters
          (runs, successes, failures, last run). When nothing in the definition changes,
          nothing is written.
        - its ``date`` is kept when ``at`` is not given, and for a repeating task whose rule
          is unchanged when ``at`` is its series' first date (``after.anchor``): a deploy
          does not restart a series nor rerun a finished task. A new date or rule starts a
          new series (the anchor and the count toward ``limit`` restart).
        - status: when a worker process holds or runs the task (``scheduled``, ``running``,
          or a ``cancel``/``reschedule`` not yet applied), ``reschedule``, so the worker
          re-reads it (a running job finishes first); otherwise (``waiting``, ``done``,
          ``error``, ``canceled``) ``waiting``, so it runs under its new definition.

        Raises TaskError (a ValueError naming the field) before writing anything when the
        task could not run.
        """
        if isinstance(job, dict):
            given = [name for name, value in locals().items()
                     if name not in ("self", "job", "args") and value is not None]
            if args or given:
                raise TaskError(f"give the task as a description or as arguments, not both "
                                f"(also given: {', '.join(given) or 'positional args'})")
            options = dict(job)
            if "job" not in options:
                raise TaskError("job: the description names no job")
            job, args = options.pop("job"), options.pop("args", ())
            if isinstance(args, str | bytes) or not isinstance(args, list | tuple):
                raise TaskError(f"args: a list of positional arguments, not {args!r}")
            try:
                return self.schedule(job, *args, **options)
            except TypeError as exc:  # an unknown keyword
                raise TaskError(str(exc)) from None
        if worker is None:
            raise TypeError("schedule() missing 1 required keyword-only argument: 'worker'")
        doc, date_given = build(
            job, args, worker=worker, at=at, every=every, cron=cron, tz=tz, limit=limit,
            until=until, jitter=jitter, retry=retry, timeout=timeout, max_delay=max_delay,
            isolation=isolation, id=id, kwargs=kwargs, exclude=exclude,
            concurrency=concurrency, overlap=overlap, priority=priority, dst=dst,
            catchup=catchup, rate=rate, debounce=debounce)
        self._check_job(doc)
        if id is None:
            self._write(doc)
        else:
            self._put_upsert(doc, date_given)
        self._warn_unserved(worker)
        return doc["_id"]

    def schedule_many(self, tasks: Iterable[dict]) -> list[str]:
        """Schedule many tasks in one request (one ``_bulk_docs`` per 1,000); returns their
        ids, in order.

        Each item holds :meth:`schedule`'s arguments: ``job``, ``args`` (a list) and the
        keywords (``{"job": "hello", "args": ["Ada"], "worker": "billing", "at": "+1h"}``).
        Every task is built and checked first: one that could not run raises TaskError
        (``tasks[3]: at: ...``) and nothing is written. Items with an ``id`` are upserts,
        as in :meth:`schedule` (the tasks of those ids are read in one request first);
        an id given twice is refused. A task changed meanwhile by someone else (a
        conflict) is read again and written alone, as :meth:`schedule` does."""
        built: list[tuple[dict, bool, bool]] = []  # (doc, date given, id given)
        for index, item in enumerate(tasks):
            try:
                if not isinstance(item, dict) or "job" not in item:
                    raise TaskError("expected a dict of schedule()'s arguments, with 'job'")
                options = dict(item)
                job, args = options.pop("job"), options.pop("args", ())
                if isinstance(args, str | bytes) or not isinstance(args, list | tuple):
                    raise TaskError(f"args: a list of positional arguments, not {args!r}")
                try:
                    doc, date_given = build(job, args, **options)
                except TypeError as exc:  # an unknown or missing keyword
                    raise TaskError(str(exc).replace("build()", "schedule()")) from None
                self._check_job(doc)
            except TaskError as exc:
                raise TaskError(f"tasks[{index}]: {exc}") from None
            built.append((doc, date_given, item.get("id") is not None))
        ids = [doc["_id"] for doc, _, _ in built]
        twice = sorted({docid for docid in ids if ids.count(docid) > 1})
        if twice:
            raise TaskError(f"id: {twice[0]!r} is given more than once")
        for first in range(0, len(built), 1000):
            self._write_many(built[first:first + 1000])
        for worker in dict.fromkeys(doc["worker"] for doc, _, _ in built):
            self._warn_unserved(worker)
        return ids

    def _write_many(self, built: list[tuple[dict, bool, bool]]) -> None:
        given = [doc["_id"] for doc, _, has_id in built if has_id]
        current = self.store.bulk_get(given) if given else {}
        writes, retries = [], {}
        for doc, date_given, has_id in built:
            if has_id and doc["_id"] in current:
                new = self._upsert(current[doc["_id"]], doc, date_given=date_given)
                if new is not None:
                    writes.append(new)
            else:
                writes.append(doc)
            retries[doc["_id"]] = (doc, date_given)
        refused = []
        for result in self.store.bulk_docs(writes) if writes else []:
            error = result.get("error")
            if error == "conflict":  # written meanwhile by someone else: decided again
                self._put_upsert(*retries[result["id"]])
            elif error == "not_found":
                raise NotFound(f"the database {self.db} does not exist at "
                               f"{self.store.safe_url} (run `after setup`)")
            elif error:
                refused.append(f"{result.get('id')}: {result.get('reason') or error}")
        if refused:
            raise TaskError(f"refused by the database ({len(refused)}; the others are "
                            f"written): {'; '.join(refused[:3])}")

    def _check_job(self, doc: dict) -> None:
        """TaskError unless the task's job exists and takes its arguments, when the jobs
        are known (see ``jobs`` in :meth:`__init__`)."""
        if self.jobs is None:
            return
        spec = doc["job"]
        arguments = spec.get("arguments")
        args, kwargs = (arguments, None) if isinstance(arguments, list) else ([], arguments)
        try:
            self.jobs.check_call(spec["name"], args, kwargs)
        except JobError as exc:
            field = "job.arguments" if "cannot take" in str(exc) else "job.name"
            raise TaskError(f"{field}: {exc}") from None

    def _put_upsert(self, doc: dict, date_given: bool) -> None:
        """Write ``doc`` over the task of its id, if any (:meth:`schedule` with ``id``)."""
        id = doc["_id"]
        for _ in range(MAX_CONFLICTS):
            current = self.store.get_or_none(id)
            try:
                if current is None:
                    self._write(doc)
                else:
                    new = self._upsert(current, doc, date_given=date_given)
                    if new is not None:
                        self._write(new)
                return
            except Conflict:
                continue  # changed meanwhile: read it again and decide again
        raise StoreError(f"task {id}: gave up after {MAX_CONFLICTS} conflicting writes")

    def _upsert(self, current: dict, wanted: dict, *, date_given: bool) -> dict | None:
        """The document to write over ``current`` for ``schedule(id=...)``, or None when the
        definition is unchanged (:func:`after.rules.task.redefine`)."""
        new = rules.redefine(current, wanted, date_given=date_given)
        if new is not None:
            check(new)
        return new

    def _write(self, doc: dict) -> None:
        try:
            self.store.put(doc)
        except Forbidden as exc:  # the database's validate_doc_update said no
            raise TaskError(str(exc)) from None
        except NotFound:
            raise NotFound(f"the database {self.db} does not exist at {self.store.safe_url} "
                           "(run `after setup`)") from None

    # -- reading -----------------------------------------------------------------------------

    def get(self, id: str) -> dict:
        """The task document; raises TaskNotFound."""
        try:
            return self.store.get(id)
        except NotFound:
            if not self.store.database_exists():
                raise NotFound(f"the database {self.db} does not exist at "
                               f"{self.store.safe_url} (run `after setup`)") from None
            raise TaskNotFound(f"no task {id!r} in {self.db}") from None

    def wait(self, id: str, timeout: float | None = None, *, run: bool = False) -> dict:
        """Wait until the task is finished (``done``, ``error`` or ``canceled``) and
        return it; with ``run=True``, until a run of it ends (its ``after.last_run``
        changes), whatever its status: a repeating task's next run. Raises TimeoutError
        after ``timeout`` seconds (None: no limit), TaskNotFound for an unknown id.

        Follows the database's ``_changes`` for that one task (read again at least every
        second, as a safety net), so it returns as soon as the worker writes it."""
        first = self.get(id)  # an unknown task (or database) is said at once
        before = rules.info(first).get("last_run") if run else None
        with _Watch(self.store, id) as watch:
            doc = self.get(id)
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                if reached(doc, before, run):
                    return doc
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise still(doc, timeout)
                watch.changed.wait(1.0 if left is None else min(left, 1.0))
                watch.changed.clear()
                doc = self.get(id)

    def runs(self, id: str, limit: int = 20) -> list[dict]:
        """The task's last ``limit`` run records, newest first: its own, and those of its
        extra runs (``run_now``, ``backfill``), which carry ``kind`` and ``parent``. A run
        going is shown by its task (``running``), not here."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise TaskError(f"limit: must be a positive integer, not {limit!r}")
        docs, _ = self.store.find({"task": id, "number": {"$gt": None}}, db=self.runs_db,
                                  sort=[{"task": "desc"}, {"number": "desc"}],
                                  limit=limit + 1)
        # a run's intent (written ahead of it, its record written over it) is not a run
        docs = [doc for doc in docs if doc.get("outcome") != rules.INTENDED][:limit]
        extra, _ = self.store.find({"parent": id, "started": {"$gt": None}}, db=self.runs_db,
                                   sort=[{"parent": "desc"}, {"started": "desc"}],
                                   limit=limit)
        extra = [doc for doc in extra if doc.get("outcome") != rules.INTENDED]
        if not extra:
            docs.sort(key=lambda r: (r.get("number", 0), r.get("started") or ""),
                      reverse=True)
            return docs
        docs += extra
        docs.sort(key=lambda r: (r.get("started") or "", r.get("number", 0)), reverse=True)
        return docs[:limit]

    def tasks(self, worker: str | None = None, status: str | Iterable[str] | None = None,
              job: str | None = None, before: datetime | str | None = None,
              after: datetime | str | None = None, limit: int = 50,
              skip: int = 0) -> list[dict]:
        """Tasks sorted by ``date`` (then id): due at or after ``after`` and before
        ``before`` (datetimes, ``now``, ``+1d`` or ISO 8601), filtered by worker, status (one
        or several) and job name; ``limit`` of them after skipping ``skip``.

        Uses the ``[worker, status, date]`` and ``[status, date]`` indexes, one query per
        status merged in date order, so the cost grows with ``skip + limit``, not with the
        database. Dates are compared as instants (whatever their offset).
        """
        now = utcnow()
        if isinstance(status, str) or status is None:
            statuses = list(rules.STATUSES) if status is None else [status]
        else:
            statuses = list(status)
        for value in statuses:
            if value not in rules.STATUSES:
                raise TaskError(f"status: {value!r} is not one of {', '.join(rules.STATUSES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise TaskError(f"limit: must be a positive integer, not {limit!r}")
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise TaskError(f"skip: must be 0 or a positive integer, not {skip!r}")
        low, high = _when(after, "after", now), _when(before, "before", now)
        # Strings sort as instants only in one offset: widen by a day, then compare exactly.
        dates: dict = {"$gt": None}
        if low is not None:
            dates["$gte"] = format_date(low - timedelta(days=1))[:10]
        if high is not None:
            dates["$lt"] = format_date(high + timedelta(days=1))[:10] + "~"
        page = min(500, skip + limit)
        streams = []
        for value in dict.fromkeys(statuses):
            selector: dict = {"status": value, "date": dates}
            sort = [{"status": "asc"}, {"date": "asc"}]
            if worker is not None:
                selector = {"worker": worker, **selector}
                sort.insert(0, {"worker": "asc"})
            if job is not None:
                selector["job.name"] = job
            streams.append(self.store.find_all(selector, sort=sort, page=page))

        def within(doc: dict) -> bool:
            instant = rules.instant(doc.get("date"))
            if instant is None:
                return low is None and high is None
            return (low is None or instant >= low) and (high is None or instant < high)

        found: Iterator[dict] = filter(within, heapq.merge(*streams, key=_order))
        return list(islice(found, skip, skip + limit))

    # -- changing the state ------------------------------------------------------------------

    def cancel(self, id: str) -> dict:
        """Cancel the task; returns the document written.

        ``waiting`` (no worker holds it): ``canceled`` at once. Held or running: ``cancel``,
        which the worker holding it turns into ``canceled`` (a running job is told
        through ``task.canceled`` and its run ends ``canceled`` within 5 s).
        Already ``cancel``: unchanged. ``done``, ``error`` or ``canceled``: StateError.
        """
        for _ in range(MAX_CONFLICTS):
            doc = self.get(id)
            new = rules.request_cancel(doc, utcnow())
            if new is None:
                return doc
            try:
                self.store.put(new)
                return new
            except Conflict:
                continue
        raise StoreError(f"task {id}: gave up after {MAX_CONFLICTS} conflicting writes")

    def pause(self, id: str) -> dict:
        """Pause the task; returns the document written (or the task, already paused).

        ``paused``: the worker drops it and writes nothing. A run going finishes and is
        recorded, and the task stays paused. ``done``, ``error``, ``canceled`` or ``cancel``:
        StateError."""
        return self._change(id, rules.request_pause)

    def resume(self, id: str) -> dict:
        """Resume a paused task; returns the document written (or the task, when it was not
        paused). It runs from its next occurrence after now: no catch-up run of the
        occurrences that fell during the pause. A one-off task whose date passed meanwhile
        runs at once (subject to ``max_delay``)."""
        return self._change(id, rules.request_resume)

    def _change(self, id: str, transition) -> dict:
        for _ in range(MAX_CONFLICTS):
            doc = self.get(id)
            new = transition(doc, utcnow())
            if new is None:
                return doc
            try:
                self._write(new)
                return new
            except Conflict:
                continue
        raise StoreError(f"task {id}: gave up after {MAX_CONFLICTS} conflicting writes")

    # -- retention -----------------------------------------------------------------------------

    def purge(self, status: str | Iterable[str] = rules.FINISHED, older_than: float = 0.0,
              worker: str | None = None, *, dry_run: bool = True) -> dict:
        """Delete finished tasks (``done``, ``error``, ``canceled``, or those of
        ``status``) that finished ``older_than`` seconds ago or more, of ``worker`` or of
        every name, with their run records (not those of extra runs' copies, which are
        their parent's history; see :mod:`after.couch.retention`). A dry run unless
        ``dry_run=False``: nothing is deleted, the ids are listed.

        Returns ``{"tasks": [ids], "deleted": n, "runs": m}`` (``deleted`` and ``runs`` 0
        in a dry run); a task changed meanwhile is left."""
        statuses = [status] if isinstance(status, str) else list(status)
        for value in statuses:
            if value not in rules.FINISHED:
                raise TaskError(f"status: {value!r} is not a finished status (one of "
                                f"{', '.join(rules.FINISHED)})")
        if isinstance(older_than, bool) or not isinstance(older_than, int | float) \
                or not older_than >= 0:
            raise TaskError(f"older_than: must be 0 or more seconds, not {older_than!r}")
        if worker is not None:
            _check_worker(worker)
        now = utcnow()
        found = [doc for doc in retention.finished(self.store, statuses, worker)
                 if retention.older(doc, now, older_than)]
        deleted = runs = 0
        if not dry_run and found:
            deleted, runs = retention.delete(self.store, found, self.runs_db)
        return {"tasks": [doc["_id"] for doc in found], "deleted": deleted, "runs": runs}

    # -- worker names --------------------------------------------------------------------------

    def unserved(self, worker: str) -> str | None:
        """None when a live process serves the worker name ``worker``; else why its tasks
        wait (no live process of that name, with a close live name when there is one, or
        the name is paused). One read of ``<db>_workers``."""
        _check_worker(worker)
        try:
            docs = self.store.prefixed("", db=config_module.workers_db(self.db))
        except NotFound:  # no worker ever ran here
            docs = []
        paused = [doc["name"] for doc in docs if pausing.is_pause(doc)]
        now = to_ms(utcnow())
        return serving.message(worker, serving.serving(worker, docs, paused, now), docs, now)

    def _warn_unserved(self, worker: str) -> None:
        """Warn (:class:`UnservedWorker`) when no live process serves ``worker``. A name is
        asked about once per :data:`SERVED_FOR` seconds (so many tasks for one name cost
        one read, and one warning)."""
        now = time.monotonic()
        if now - self._served.get(worker, -SERVED_FOR) < SERVED_FOR:
            return
        self._served[worker] = now
        try:
            why = self.unserved(worker)
        except StoreError:  # the task is written: a warning is not worth a failure
            return
        if why is not None:
            warnings.warn(why, UnservedWorker, stacklevel=3)

    def pause_worker(self, name: str, wait: float = 0.0) -> dict:
        """Pause the worker name ``name`` on every machine (within about a second): its
        processes stay up but start nothing; the tasks they held are dropped and runs
        going finish. Kept in the database (``<db>_workers``): it holds across restarts.
        Returns the pause document.

        ``wait`` > 0: wait up to that many seconds for every live process of the name to
        acknowledge it (a heartbeat saying it applied the pause: from then on it starts
        nothing); the document returned then lists the processes that did under
        ``"acknowledged"``, and those that did not under ``"unacknowledged"`` (empty: every
        one did). These keys are not stored."""
        _check_worker(name)
        db = config_module.workers_db(self.db)
        before = pausing.beats(self.store, db, name) if wait > 0 else {}
        doc = pausing.pause(self.store, db, name, utcnow())
        if wait <= 0:
            return doc
        deadline = time.monotonic() + wait
        while True:
            done, waiting = pausing.acknowledgements(self.store, db, name, before,
                                                     to_ms(utcnow()))
            if not waiting or time.monotonic() >= deadline:
                return {**doc, "acknowledged": done, "unacknowledged": waiting}
            time.sleep(0.1)

    def resume_worker(self, name: str) -> bool:
        """Resume the worker name ``name``; False when it was not paused."""
        _check_worker(name)
        return pausing.resume(self.store, config_module.workers_db(self.db), name)

    def paused_workers(self) -> dict[str, dict]:
        """The worker names paused: name -> its pause document (``since``: when)."""
        return pausing.paused(self.store, config_module.workers_db(self.db))

    def reschedule(self, id: str, at: datetime | str | None = None, all: bool = False) -> dict:
        """Run the task again at ``at`` (default now); returns the document written.

        Only a task in ``error``, unless ``all`` (then any status, a ``done`` or ``canceled``
        one included). Writes the new ``date`` and ``waiting``, or ``reschedule`` when a
        worker process holds or runs it (it re-reads the date; a running job finishes
        first). The attempt count and the error are cleared. A repeating task's series
        starts anew from the new date (its anchor is dropped, as the worker does for a
        ``reschedule``); runs already counted toward ``limit`` still count.
        """
        now = utcnow()
        date = _when(at, "at", now) or now
        for _ in range(MAX_CONFLICTS):
            new = rules.request_reschedule(self.get(id), date, any_status=all)
            check(new)
            try:
                self.store.put(new)
                return new
            except Forbidden as exc:
                raise TaskError(str(exc)) from None
            except Conflict:
                continue
        raise StoreError(f"task {id}: gave up after {MAX_CONFLICTS} conflicting writes")

    # -- extra runs: now, and past occurrences -----------------------------------------------

    def _extra_of(self, id: str) -> tuple[dict, rules.Spec]:
        parent = self.get(id)
        spec = check(parent)
        if spec.occurrence is not None:
            raise StateError(f"task {id} is itself a {spec.occurrence.kind} run of task "
                             f"{spec.occurrence.task}: ask that task instead")
        return parent, spec

    def run_now(self, id: str) -> dict:
        """One extra run of the task as soon as possible, its schedule kept; returns the
        one-off task written for it (:func:`after.rules.occurrence.extra_doc`).

        That task, ``<id>:manual:<now>``, runs the task's job once on the same worker
        name (claimed through ``_rev``, so by exactly one process); its run is recorded
        with ``kind`` ``manual`` and listed by ``runs(id)``. Any status but a task that is
        itself an extra run. Asked twice in the same millisecond, it is one run."""
        parent, _ = self._extra_of(id)
        doc = occ.extra_doc(parent, occ.MANUAL, utcnow())
        try:
            self._write(doc)
        except Conflict:  # the same millisecond: that run is this one
            return self.get(doc["_id"])
        return doc

    def backfill(self, id: str, start: datetime | str, end: datetime | str) -> dict:
        """Run each occurrence of a repeating task from ``start`` to ``end`` (both
        inclusive; datetimes, ISO 8601 or ``now``, as for ``tasks``) once, its schedule
        kept. Returns ``{"task", "occurrences", "created", "existing", "pending"}`` (the
        one-off tasks' ids; ``pending``: the occurrences of the window the task runs
        itself).

        Each occurrence is a one-off task ``<id>:backfill:<date>`` due at its date (so a
        past one runs at once, and the job's ``task.date`` is the occurrence's), run by
        exactly one process of the worker name, recorded with ``kind`` ``backfill`` and its
        occurrence date, and listed by ``runs(id)``. Idempotent by occurrence: an
        occurrence asked for before (its task exists, in any status) is not run again, nor
        those the task still runs itself (its overdue ``date`` or what its catch-up runs,
        or the one it is running: :func:`after.rules.task.own_occurrences`), which are left to
        it.
        The window must be in the past (the schedule runs the rest) and hold at most
        :data:`after.rules.occurrence.MAX_BACKFILL` occurrences."""
        now = utcnow()
        low, high = _when(start, "from", now), _when(end, "to", now)
        if low is None or high is None:
            raise TaskError(f"{'from' if low is None else 'to'}: required (a date)")
        if high < low:
            raise TaskError(f"to: {format_date(high)} is before from ({format_date(low)})")
        if high > now:
            raise TaskError(f"to: {format_date(high)} is in the future: a backfill runs past "
                            "occurrences (the schedule runs the others)")
        parent, spec = self._extra_of(id)
        if spec.repeat is None:
            raise StateError(f"task {id} does not repeat: it has no occurrences to backfill")
        anchor = rules.instant(rules.info(parent).get("anchor")) or spec.date
        dates = spec.repeat.between(anchor, low, high, occ.MAX_BACKFILL)
        if len(dates) > occ.MAX_BACKFILL:
            raise TaskError(f"from: the window {format_date(low)} to {format_date(high)} "
                            f"holds more than {occ.MAX_BACKFILL} occurrences of task {id} "
                            "(backfill it in smaller windows)")
        calendars = self.calendars_of(parent) if spec.repeat.exclude is not None else {}
        own = set(rules.own_occurrences(parent, spec, now, calendars))
        created, existing = [], []
        docs = [occ.extra_doc(parent, occ.BACKFILL, date) for date in dates if date not in own]
        for first in range(0, len(docs), 200):
            for result in self.store.bulk_docs(docs[first:first + 200]):
                if result.get("error") == "conflict":
                    existing.append(result["id"])
                elif result.get("error"):
                    raise TaskError(f"{result.get('id')}: "
                                    f"{result.get('reason') or result['error']}")
                else:
                    created.append(result["id"])
        return {"task": id, "occurrences": [format_date(d) for d in dates],
                "created": created, "existing": existing,
                "pending": [format_date(date) for date in dates if date in own]}

    # -- calendars and caps --------------------------------------------------------------

    def set_calendar(self, name: str, dates: list, description: str | None = None) -> dict:
        """Create or replace the shared calendar ``name`` (the document ``calendar:NAME``):
        ``dates`` are days (``"2026-12-25"``) and inclusive ranges (``{"from": ..., "to":
        ...}``). Tasks naming it (``exclude=NAME``) skip those days from their next
        occurrence on, without a restart of any worker. Returns the document written."""
        doc: dict = {"_id": f"{CALENDAR_PREFIX}{name}", "type": "calendar", "dates": dates}
        if description is not None:
            doc["description"] = description
        if not isinstance(name, str):
            raise TaskError(f"_id: {name!r} is not a calendar name")
        check_calendar(doc)
        for _ in range(MAX_CONFLICTS):
            current = self.store.get_or_none(doc["_id"])
            if current is not None:
                doc["_rev"] = current["_rev"]
            try:
                self._write(doc)
                return doc
            except Conflict:
                continue
        raise StoreError(f"calendar {name}: gave up after {MAX_CONFLICTS} conflicting writes")

    def calendar(self, name: str) -> dict:
        """The calendar document ``calendar:NAME``; raises NotFound."""
        try:
            return self.store.get(f"{CALENDAR_PREFIX}{name}")
        except NotFound:
            raise NotFound(f"no calendar {name!r} in {self.db} (no document "
                           f"{CALENDAR_PREFIX}{name})") from None

    def delete_calendar(self, name: str) -> None:
        """Delete the calendar; tasks still naming it end ``error`` at their next
        occurrence."""
        doc = self.calendar(name)
        self.store.delete(doc["_id"], doc["_rev"])

    def calendars_of(self, doc: dict) -> dict[str, Exclusion]:
        """The shared calendars a task names that exist (unusable ones count as empty)."""
        try:
            rule = parse_repeat(doc.get("repeat"))
        except (RepeatError, DateError):
            return {}
        found = {}
        for name in rule.exclude.calendars if rule and rule.exclude else ():
            shared = self._shared_calendar(name)
            if shared is not None:
                found[name] = shared
        return found

    def _shared_calendar(self, name: str) -> Exclusion | None:
        """The calendar ``name``: None when it does not exist, empty when it is unusable."""
        current = self.store.get_or_none(f"{CALENDAR_PREFIX}{name}")
        if current is None:
            return None
        try:
            return parse_calendar(current)
        except CalendarError:
            return Exclusion()

    # -- the audit: what should have run and what did -----------------------------------------

    def audit(self, name: str | None = None, *, task: str | None = None,
              start: datetime | str | None = None, end: datetime | str | None = None,
              late: float = audits.DEFAULT_LATE, now: datetime | None = None) -> audits.Report:
        """Each occurrence the schedule of the tasks of worker ``name`` (or of every task, or
        of ``task`` alone) implies from ``start`` to ``end`` (both inclusive; default: the 24
        hours up to now), against their run records (:mod:`after.audit`): on time (within
        ``late`` seconds of its due instant), late, backfilled, twice, missed, skipped (and
        why), never, pending; and their runs of no occurrence (extra). ``now`` (default the
        clock) is when the audit is made: nothing later is due.

        Reads the tasks that may have occurrences in the window (the repeating ones, and the
        others dated in it), their run records scheduled in it (by worker name, or by task;
        indexes ``after setup`` makes), the shared calendars they name and the paused worker
        names. At most :data:`MAX_AUDIT_TASKS` tasks and :data:`MAX_AUDIT_RUNS` run records:
        past that, TaskError (audit a name, a task or a smaller window)."""
        now = now or utcnow()
        high = _when(end, "to", now) or now
        low = _when(start, "from", now) or high - timedelta(days=1)
        if high < low:
            raise TaskError(f"to: {format_date(high)} is before from ({format_date(low)})")
        if isinstance(late, bool) or not isinstance(late, int | float) or not late >= 0:
            raise TaskError(f"late: must be 0 or more seconds, not {late!r}")
        if name is not None:
            _check_worker(name)
        docs = [self.get(task)] if task is not None else self._audited_tasks(name, low, high)
        runs = self._audited_runs(docs, task, low, high)
        paused = self.paused_workers()
        read: dict[str, Exclusion | None] = {}  # the shared calendars, each read once
        found = []
        for doc in docs:
            for wanted in self._named_calendars(doc):
                if wanted not in read:
                    read[wanted] = self._shared_calendar(wanted)
            calendars = {k: v for k, v in read.items() if v is not None}
            since = paused.get(doc.get("worker"), {}).get("since")
            try:
                found.append(audits.audit_task(
                    doc, runs.get(doc["_id"], []), low, high, now, late=float(late),
                    calendars=calendars, name_paused=rules.instant(since)))
            except audits.AuditError as exc:
                raise TaskError(str(exc)) from None
        return audits.report(low, high, now, float(late), found)

    @staticmethod
    def _named_calendars(doc: dict) -> tuple[str, ...]:
        try:
            rule = parse_repeat(doc.get("repeat"))
        except (RepeatError, DateError):
            return ()
        return rule.exclude.calendars if rule is not None and rule.exclude else ()

    def _audited_tasks(self, name: str | None, low: datetime, high: datetime) -> list[dict]:
        """The tasks that may have occurrences from ``low`` to ``high``: those dated about
        then, and the repeating ones whatever their date (a finished one only if it ended
        after ``low``). Dates compared as strings: widened by a day, the audit is exact."""
        before, after = format_date(low - timedelta(days=1)), format_date(high + timedelta(days=1))
        found: dict[str, dict] = {}
        for status in rules.STATUSES:
            base: dict = {"status": status}
            if name is not None:
                base = {"worker": name, **base}
            repeating: dict = {"$gt": None} if status not in rules.FINISHED \
                else {"$gte": before}
            for selector in ({**base, "date": {"$gte": before, "$lte": after}},
                             {**base, "date": repeating, "repeat": {"$exists": True}}):
                for doc in self.store.find_all(selector):
                    if calendar_name(doc.get("_id")) is None and doc.get("occurrence") is None:
                        found[doc["_id"]] = doc
                    if len(found) > MAX_AUDIT_TASKS:
                        raise TaskError(f"{'worker' if name else 'from'}: more than "
                                        f"{MAX_AUDIT_TASKS} tasks to audit (audit one worker "
                                        "name, one task or a smaller window)")
        return list(found.values())

    def _audited_runs(self, docs: list[dict], task: str | None, low: datetime,
                      high: datetime) -> dict[str, list[dict]]:
        """The run records of ``docs`` scheduled about ``low`` to ``high`` (a day either
        side), and those of their extra runs, by task (the parent's, for an extra run)."""
        before, after = format_date(low - timedelta(days=1)), format_date(high + timedelta(days=1))
        window = {"$gte": before, "$lte": after}
        if task is not None:
            selectors = [{"task": task, "scheduled": window},
                         {"parent": task, "started": {"$gte": before}}]
        else:
            names = sorted({doc["worker"] for doc in docs if isinstance(doc.get("worker"), str)})
            selectors = [{"worker": name, "scheduled": window} for name in names]
        seen, runs = set(), {}
        for selector in selectors:
            for record in self.store.find_all(selector, db=self.runs_db):
                if record.get("_id") in seen or record.get("type", "run") != "run":
                    continue
                seen.add(record.get("_id"))
                owner = record.get("parent") or record.get("task")
                runs.setdefault(owner, []).append(record)
                if len(seen) > MAX_AUDIT_RUNS:
                    raise TaskError(f"from: more than {MAX_AUDIT_RUNS} run records to read "
                                    "(audit one task or a smaller window)")
        return runs

    def caps(self, key: str | None = None) -> list[dict]:
        """The concurrency slots (``key``'s, or every key's): ``key``, ``n``, ``holder``
        (a process id, None when free), ``task`` and ``since``."""
        slots = in_use(self.store, config_module.workers_db(self.db))
        return [s for s in slots if key is None or s["key"] == key]

    # -- a worker on a replica (docs/replicas.rst) ---------------------------------------------

    def replicate(self, name: str, central: str, *, central_db: str | None = None,
                  site: str | None = None) -> dict:
        """Serve the worker name ``name`` at a site: this client's CouchDB (the site's, where
        the name's processes run) replicates with the CouchDB at ``central`` (a URL,
        credentials allowed), continuously and filtered to the name's tasks, run records,
        heartbeats and pause (:mod:`after.replica`). Sets this database up, checks that
        the central one (``central_db``, by default this one's name) is, and writes the
        five ``_replicator`` documents, or only those that changed. ``site``: this CouchDB
        as that server reaches itself, when not this client's URL.

        Returns ``{"central": its URL and database without credentials, "replications":
        [{"role", "source", "target", "done": "written", "updated" or "unchanged"}],
        "warning": why the centre does not answer now, or None}`` (the replications start
        when it does). Raises :class:`~after.replica.ReplicaError` (a ``ValueError``) for a
        URL that is not an http(s) one, a server that runs no replications
        (pouchdb-server), a central database missing or not set up."""
        _check_worker(name)
        far = replica.endpoint(central)
        docs = replica.replications(name, self.db, site or self.url, central, central_db)
        self._check_replicates()
        warning = _check_central(far, central_db or self.db)
        schema.setup(self.store)
        if not self.store.database_exists(replica.REPLICATOR):
            self.store.create_database(replica.REPLICATOR)
        rows = [{**replica.summary(doc), "done": self._write_replication(doc)} for doc in docs]
        return {"central": f"{far.safe}/{central_db or self.db}", "replications": rows,
                "warning": warning}

    def replication(self, name: str) -> list[dict]:
        """How the replications of the worker name ``name`` are doing, one dict per role
        (:func:`after.replica.status`: ``state`` None when it is not set up). Raises
        :class:`~after.replica.ReplicaError` on a server that runs no replications."""
        _check_worker(name)
        self._check_replicates()
        there = self.store.database_exists(replica.REPLICATOR)
        found = []
        for role in replica.ROLES:
            docid = replica.doc_id(self.db, name, role)
            doc = self.store.get_or_none(docid, db=replica.REPLICATOR) if there else None
            state = self.store.replication_state(docid) if doc is not None else None
            found.append(replica.status(role, doc, state))
        return found

    def replicated(self) -> dict[str, list[dict]]:
        """Every worker name this database replicates with a centre (the site's side: the
        documents are in its ``_replicator``), each with :meth:`replication`'s answer; {}
        on a server that runs no replications. What the dashboard shows."""
        if not self.store.replicates() or not self.store.database_exists(replica.REPLICATOR):
            return {}
        names = {replica.name_of(doc["_id"], self.db) for doc in self.store.prefixed(
            replica.id_prefix(self.db), db=replica.REPLICATOR)}
        return {name: self.replication(name) for name in sorted(names - {None})}

    def stop_replication(self, name: str) -> int:
        """Remove the replications of the worker name ``name``: the site goes on alone (set
        up again, they resume from their checkpoints). Returns how many were removed."""
        _check_worker(name)
        if not self.store.database_exists(replica.REPLICATOR):
            return 0
        removed = 0
        for role in replica.ROLES:
            docid = replica.doc_id(self.db, name, role)
            for _ in range(MAX_CONFLICTS):
                current = self.store.get_or_none(docid, db=replica.REPLICATOR)
                if current is None:
                    break
                try:
                    self.store.delete(docid, current["_rev"], db=replica.REPLICATOR)
                    removed += 1
                    break
                except Conflict:  # the replicator wrote its state meanwhile: read it again
                    continue
        return removed

    def _check_replicates(self) -> None:
        if not self.store.replicates():
            info = self.store.info()
            vendor = (info.get("vendor") or {}).get("name") if isinstance(info, dict) else None
            server = f"{vendor or 'a server'} {info.get('version', '')}".strip()
            raise replica.ReplicaError(
                f"{self.store.safe_url} runs no replications ({server}): the site's CouchDB "
                "must be Apache CouchDB")

    def _write_replication(self, doc: dict) -> str:
        """Write one replication document unless it is there as wanted; what was done."""
        for _ in range(MAX_CONFLICTS):
            current = self.store.get_or_none(doc["_id"], db=replica.REPLICATOR)
            if current is not None and replica.same(current, doc):
                return "unchanged"
            wanted = dict(doc)
            if current is not None:
                wanted["_rev"] = current["_rev"]
            try:
                self.store.put(wanted, db=replica.REPLICATOR)
                return "written" if current is None else "updated"
            except Conflict:  # the replicator wrote its state meanwhile: read it again
                continue
        raise replica.ReplicaError(f"replication {doc['_id']}: gave up after "
                                   f"{MAX_CONFLICTS} conflicting writes")

    # -- helpers for display ----------------------------------------------------------------

    @staticmethod
    def next_runs(doc: dict, count: int = 5,
                  calendars: dict[str, Exclusion] | None = None) -> list[datetime]:
        """The task's next ``count`` run times (empty when it will not run again).

        The first is its ``date`` (or, while a retry waits, ``after.due``); a repeating task's
        further ones follow its rule from its series' anchor, within ``limit`` and ``until``.
        Occurrences on excluded days are left out (``calendars``: the shared calendars the
        task names, :meth:`calendars_of`; they count toward ``limit`` as the worker counts
        them).
        """
        status = doc.get("status")
        if status not in rules.RUNNABLE:
            return []
        try:
            spec = rules.parse(doc)
        except TaskError:
            return []
        info = rules.info(doc)
        first = spec.due  # a repeat's jitter moves each occurrence: these are the instants
        if status == rules.SCHEDULED and rules.instant(info.get("due")) is not None:
            first = rules.instant(info["due"])
        rule = spec.repeat
        if rule is None:
            return [first]
        left = None
        if rule.limit is not None:
            left = rule.limit - int(info.get("occurrences", 0) or 0)
        anchor = rules.instant(info.get("anchor")) or spec.date
        wanted = count - 1
        if rule.exclude is not None:  # look further: excluded days are left out below
            wanted = min(max(count * 20, 366), 5000)
        dates = [spec.date, *rule.upcoming(anchor, spec.date, wanted)]
        if rule.until is not None:
            dates = [r for r in dates if r <= rule.until]
        if left is not None:
            dates = dates[:max(left, 0)]
        if rule.exclude is not None:  # the occurrence's day, before its jitter
            dates = [r for r in dates
                     if excluded(rule.exclude, r, rule.zone, calendars or {}) is None]
        runs = [first if r == spec.date else occ.jittered(spec.id, r, rule.jitter)
                for r in dates]
        return runs[:count]


def _check_central(far: replica.Endpoint, db: str) -> str | None:
    """The central database must exist and be set up (its validator, views and indexes);
    a centre that does not answer now is no error: the replications start when it does
    (the warning returned says so)."""
    url = far.url if far.user is None else far.url.replace(
        "://", f"://{quote(far.user, safe='')}:{quote(far.password or '', safe='')}@", 1)
    try:
        with Store(url, db, timeout=10.0, retries=0) as central:
            if not schema.is_set_up(central):
                raise replica.ReplicaError(f"the central database {db} at {far.safe} is not "
                                           "set up: run `after setup` against it first")
    except Unavailable as exc:
        return (f"the centre does not answer now ({describe_error(exc)}): the replications "
                "start when it does")
    except NotFound:
        raise replica.ReplicaError(f"the central database {db} at {far.safe} does not "
                                   "exist: run `after setup` against it first") from None
    except StoreError as exc:
        raise replica.ReplicaError(f"the centre {far.safe}: {describe_error(exc)}") from None
    return None


def reached(doc: dict, before: Any, run: bool) -> bool:
    """Has the wait for ``doc`` ended: a run ended since (``last_run`` is no longer
    ``before``), or, without ``run``, the task is finished?"""
    if run:
        return rules.info(doc).get("last_run") != before
    return doc.get("status") in rules.FINISHED


def still(doc: dict, timeout: float) -> TimeoutError:
    return TimeoutError(f"task {doc.get('_id')} is still {doc.get('status')} after "
                        f"{timeout:g} s")


class _Watch:
    """The ``_changes`` of one task, followed on a thread while a caller waits for it:
    ``changed`` is set at each change (and at the feed's start)."""

    def __init__(self, store: Store, id: str, notify=None):
        self.changed = threading.Event()
        self.notify = notify or self.changed.set
        # from the sequence before the caller's first read: no change falls in between
        self.follower = store.follow(lambda change: self.notify(), since=store.update_seq(),
                                     selector={"_id": id}, heartbeat=5.0)

    def __enter__(self) -> _Watch:
        self.follower.start()
        return self

    def __exit__(self, *exc) -> None:
        self.follower.stop(timeout=1.0)


def _registry(jobs: Any, config: config_module.Config | None) -> JobRegistry | None:
    """The jobs a client checks tasks against (see :meth:`Client.__init__`), or None."""
    if jobs is None:
        if config is None or not (config.jobs.is_dir() or config.jobs_modules):
            return None
        return JobRegistry(config.jobs, config.jobs_modules)
    if jobs is False:
        return None
    if jobs is True:
        config = config or config_module.load()
        return JobRegistry(config.jobs, config.jobs_modules)
    return jobs if isinstance(jobs, JobRegistry) else JobRegistry(jobs)


def describe_repeat(value: Any) -> str:
    """Human text for a ``repeat`` field ("" for none, the error for a bad one)."""
    try:
        rule = parse_repeat(value)
    except (RepeatError, DateError) as exc:
        return f"invalid ({exc})"
    return rule.describe() if rule is not None else ""
