"""Say what should have run and what did (``after audit``): each occurrence a task's schedule
implies in a window, against the task's run records (``<db>_runs``).

Pure: a task document, its run records, the window and ``now`` in; a report out. No I/O, no
clock: :meth:`after.client.Client.audit` reads the documents, and the command line, the
dashboard and the metrics call it.

What the schedule implies, for one task, from ``start`` to ``end`` (both inclusive) and no
later than ``now``:

- a one-off task: its ``date``;
- a repeating task: each occurrence of its rule (:meth:`after.rules.repeat.Rule.between`, which
  honours ``until``, jitter moving only when each is due) from the start of its series to
  its end. The series starts at ``after.anchor``; when the worker dropped it (a finished
  series), at the earliest occurrence its run records name; else at its ``date`` (a task
  that never ran, or whose series a reschedule started anew: runs of the series before are
  listed as extra). It ends at its last ``date`` when ``done`` or ``error``, at the moment
  it was canceled when ``canceled``;
- nothing for the task of an extra run (``<task>:manual:...``, ``<task>:backfill:...``):
  its run is the parent's, either a backfill of one of the parent's occurrences, or an
  extra (a manual run).

Each occurrence gets one verdict, from the run records of that occurrence (those whose
``occurrence_date``, the nominal date, is the occurrence's; ``scheduled`` for the records
that lack it, an overlap's skipped ones):

=============  ===============================================================================
``on_time``    it ran: its first attempt started at most ``late`` seconds after it was due
``late``       it ran, later than that
``backfilled`` it did not run on schedule, but a backfill (``after backfill``) ran it
``twice``      it ran more than once: two runs of the same attempt (two processes, a backfill
               of an occurrence that had run, a record written twice). Retries and the rerun
               of a run cut short by the death of its process are attempts of their own; a
               run cut short by a stop past its grace (recorded ``interrupted``, and handed
               back as the same attempt) and begun again once it had ended is one run; a
               run's record kept beside another of the same run (``late``) is one run
``missed``     recorded ``missed``: the worker reached it past ``max_delay`` and did not run it,
               or its catch-up policy ran another (``catchup``, :mod:`after.rules.catchup`)
``skipped``    not run on purpose, and why: recorded ``skipped`` (an excluded day, an overlap),
               or, with no record, a day its calendar excludes or a pause that covers it (the
               task's, current or kept under ``after.pauses``, or its worker name's, current)
``never``      due, and nothing says it ran or why not: a worker down, a lost occurrence
``pending``    too soon to say: due less than ``late`` seconds ago, or held or running now
=============  ===============================================================================

Run records of the task in the window that match no occurrence are listed apart, as
``extra``: manual runs (``after run``), and runs the schedule does not explain (a date moved
by hand, a record written by hand, a series before a reschedule).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from after.rules import calendar as cal
from after.rules import occurrence as occ
from after.rules import task as rules
from after.rules.dates import format_date

ON_TIME, LATE, BACKFILLED, TWICE = "on_time", "late", "backfilled", "twice"
MISSED, SKIPPED, NEVER, PENDING = "missed", "skipped", "never", "pending"
#: Every verdict, in the order reports list them.
VERDICTS = (ON_TIME, LATE, BACKFILLED, TWICE, MISSED, SKIPPED, NEVER, PENDING)
#: What went wrong: an occurrence that should have run once and did not, or did twice.
WRONG = (TWICE, MISSED, NEVER)
#: Seconds after its due instant a run still counts as on time, by default.
DEFAULT_LATE = 60.0
#: Most occurrences of one task in one audit.
MAX_OCCURRENCES = 10_000


class AuditError(ValueError):
    """An audit that cannot be made as asked (a window too large); the message says why."""


@dataclass(frozen=True)
class Entry:
    """One occurrence the schedule implies, and its verdict."""

    task: str
    date: datetime  # the nominal date (the occurrence id's)
    due: datetime  # moved by the repeat's jitter
    verdict: str
    reason: str | None = None
    lateness: float | None = None  # seconds: the first start minus ``due``
    outcome: str | None = None  # the outcome of its last attempt
    runs: tuple[str, ...] = ()  # the ids of its run records

    def as_json(self) -> dict:
        return {"task": self.task, "occurrence": format_date(self.date),
                "id": occ.key(self.task, self.date), "due": format_date(self.due),
                "verdict": self.verdict, "reason": self.reason,
                "lateness_s": None if self.lateness is None else round(self.lateness, 3),
                "outcome": self.outcome, "runs": list(self.runs)}


@dataclass(frozen=True)
class TaskAudit:
    """The occurrences of one task in the window, and its runs that match none."""

    task: str
    worker: Any
    entries: tuple[Entry, ...] = ()
    extra: tuple[dict, ...] = ()
    error: str | None = None  # the task cannot be read: nothing implied

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(entry.verdict for entry in self.entries)
        return {verdict: found[verdict] for verdict in VERDICTS} | {"extra": len(self.extra)}

    def as_json(self) -> dict:
        return {"task": self.task, "worker": self.worker, "error": self.error,
                "counts": self.counts, "occurrences": [e.as_json() for e in self.entries],
                "extra": list(self.extra)}


@dataclass(frozen=True)
class Report:
    """An audit of tasks over one window."""

    start: datetime
    end: datetime
    now: datetime
    late: float
    tasks: tuple[TaskAudit, ...] = field(default=())

    @property
    def counts(self) -> dict[str, int]:
        total: Counter = Counter()
        for audit in self.tasks:
            total.update(audit.counts)
        return {key: total[key] for key in (*VERDICTS, "extra")}

    def as_json(self) -> dict:
        return {"from": format_date(self.start), "to": format_date(self.end),
                "now": format_date(self.now), "late_s": self.late, "counts": self.counts,
                "tasks": [audit.as_json() for audit in self.tasks]}


def nominal(run: dict) -> datetime | None:
    """The occurrence a run record is of: its ``occurrence_date``, else its ``scheduled``
    (the records of occurrences an overlap skipped carry only that)."""
    return rules.instant(run.get("occurrence_date")) or rules.instant(run.get("scheduled"))


def audit_task(doc: dict, runs: list[dict], start: datetime, end: datetime, now: datetime,
               *, late: float = DEFAULT_LATE, calendars: dict[str, cal.Exclusion] | None = None,
               name_paused: datetime | None = None) -> TaskAudit:
    """Audit one task (``doc``) from ``start`` to ``end`` at ``now``. ``runs``: its run
    records and those of its extra runs (``parent``), as many as the reader found around the
    window (those outside it are left out here); ``calendars``: the shared calendars it
    names; ``name_paused``: since when its worker name is paused, if it is."""
    task_id = doc.get("_id")
    try:
        spec = rules.parse(doc)
    except rules.TaskError as exc:
        return TaskAudit(task_id, doc.get("worker"), error=str(exc))
    if spec.occurrence is not None:
        return TaskAudit(task_id, spec.worker)  # an extra run: audited under its parent
    runs = [run for run in runs if run.get("outcome") != rules.INTENDED]  # not begun, or
    # begun and not ended: the dead process's are decided by the worker that takes over
    own = [run for run in runs if not run.get("kind")]
    dates = implied(doc, spec, own, start, end, now)
    by_date: dict[datetime, list[dict]] = {}
    for run in runs:
        when = nominal(run)
        if when is not None and run.get("kind") != occ.MANUAL:
            by_date.setdefault(when, []).append(run)
    jitter = spec.repeat.jitter if spec.repeat is not None else 0.0
    pauses = pause_windows(doc, spec, now, name_paused)
    entries, used = [], set()
    for date in dates:
        records = sorted(by_date.get(date, []), key=_order)
        used.update(id(run) for run in records)
        due = occ.jittered(spec.id, date, jitter)
        entries.append(judge(doc, spec, date, due, records, now, late, calendars or {}, pauses))
    extra = [_extra(run, start, end) for run in runs if id(run) not in used]
    return TaskAudit(task_id, spec.worker, tuple(entries),
                     tuple(sorted((e for e in extra if e is not None),
                                  key=lambda e: e["occurrence"] or "")))


def implied(doc: dict, spec: rules.Spec, own: list[dict], start: datetime, end: datetime,
            now: datetime) -> list[datetime]:
    """The nominal dates the schedule of ``doc`` implies from ``start`` to ``end`` and no
    later than ``now`` (``own``: its own run records, for where a finished series began)."""
    ns, status = rules.info(doc), doc.get("status")
    last = min(end, now)
    if status == rules.CANCELED:
        last = min(last, rules.instant(ns.get("canceled")) or last)
    if spec.repeat is None:
        return [spec.date] if start <= spec.date <= last else []
    if status in (rules.DONE, rules.ERROR):
        last = min(last, spec.date)  # the series' last occurrence
    anchor = rules.instant(ns.get("anchor"))
    if anchor is None and status in rules.FINISHED:
        named = [when for when in map(nominal, own) if when is not None]
        anchor = min([spec.date, *named])
    anchor = anchor or spec.date
    low = max(start, anchor)
    if low > last:
        return []
    dates = spec.repeat.between(anchor, low, last, MAX_OCCURRENCES)
    if len(dates) > MAX_OCCURRENCES:
        raise AuditError(f"from: the window {format_date(start)} to {format_date(end)} holds "
                         f"more than {MAX_OCCURRENCES} occurrences of task {spec.id} (audit a "
                         "smaller window)")
    return dates


def pause_windows(doc: dict, spec: rules.Spec, now: datetime,
                  name_paused: datetime | None) -> list[tuple[datetime, datetime, str]]:
    """The pauses that cover occurrences of ``doc``: (from, to, why)."""
    ns, windows = rules.info(doc), []
    kept = ns.get("pauses") if isinstance(ns.get("pauses"), list) else []
    for pause in kept:
        low = rules.instant(pause.get("from")) if isinstance(pause, dict) else None
        high = rules.instant(pause.get("to")) if isinstance(pause, dict) else None
        if low is not None and high is not None:
            windows.append((low, high, f"the task was paused from {format_date(low)} to "
                                       f"{format_date(high)}"))
    since = rules.instant(ns.get("paused"))
    if doc.get("status") == rules.PAUSED:
        windows.append((since or spec.date, now, "the task is paused" + (
            f" since {format_date(since)}" if since else "")))
    if name_paused is not None:
        windows.append((name_paused, now, f"worker name {spec.worker} is paused since "
                                          f"{format_date(name_paused)}"))
    return windows


# The verdict is one decision read top to bottom (ran, twice, backfilled, late; recorded
# missed or skipped; excluded, paused; pending; never): split, its order would be lost.
def judge(doc: dict, spec: rules.Spec, date: datetime, due: datetime, records: list[dict],
          now: datetime, late: float, calendars: dict[str, cal.Exclusion],
          pauses: list[tuple[datetime, datetime, str]]) -> Entry:
    """The verdict on the occurrence at ``date`` (due at ``due``) from its ``records``."""
    ids = tuple(str(run.get("_id")) for run in records)
    entry = {"task": spec.id, "date": date, "due": due, "runs": ids}
    ran = one_per_run([run for run in records
                       if run.get("outcome") not in (rules.MISSED, rules.SKIPPED)])
    if ran:
        scheduled = [run for run in ran if run.get("kind") != occ.BACKFILL]
        first = (scheduled or ran)[0]
        started = rules.instant(first.get("started"))
        lateness = (started - due).total_seconds() if started is not None else None
        entry.update(lateness=lateness, outcome=ran[-1].get("outcome"))
        attempts = Counter(_attempt(run) for run in ran if not rerun_after(run, ran))
        doubled = [n for n, count in attempts.items() if count > 1]
        if doubled:
            kinds = {run.get("kind") or "schedule" for run in ran}
            how = ("on schedule and by a backfill" if kinds == {"schedule", occ.BACKFILL}
                   else f"{attempts[doubled[0]]} runs of attempt {doubled[0]}")
            return Entry(**entry, verdict=TWICE, reason=f"ran {how}")
        if not scheduled:
            why = _why_not(records)
            return Entry(**entry, verdict=BACKFILLED, reason=(
                f"run by a backfill at {first.get('started')}" + (f" ({why})" if why else "")))
        if lateness is not None and lateness > late:
            return Entry(**entry, verdict=LATE,
                         reason=f"started {lateness:.1f}s after it was due")
        return Entry(**entry, verdict=ON_TIME)
    for outcome, verdict in ((rules.MISSED, MISSED), (rules.SKIPPED, SKIPPED)):
        found = [run for run in records if run.get("outcome") == outcome]
        if found:
            return Entry(**entry, verdict=verdict, reason=_message(found[-1]) or outcome)
    exclusion = spec.repeat.exclude if spec.repeat is not None else None
    why = cal.excluded(exclusion, date, spec.repeat.zone, calendars) if exclusion else None
    if why is not None:
        return Entry(**entry, verdict=SKIPPED, reason=why)
    for low, high, why in pauses:
        if low <= due <= high:
            return Entry(**entry, verdict=SKIPPED, reason=why)
    status, here = doc.get("status"), spec.date == date
    if here and status in (rules.SCHEDULED, rules.RUNNING):
        return Entry(**entry, verdict=PENDING, reason=f"{status} now")
    if due > now - timedelta(seconds=late):
        return Entry(**entry, verdict=PENDING, reason="due less than "
                                                      f"{late:g}s ago")
    if here and status in (rules.WAITING, rules.RESCHEDULE):
        return Entry(**entry, verdict=NEVER, reason=f"still {status}: no process of worker "
                                                    f"{spec.worker} took it")
    return Entry(**entry, verdict=NEVER)


def one_per_run(records: list[dict]) -> list[dict]:
    """``records`` with one record per run: a record ``ID~late`` (written beside the record
    ``ID`` of the same run that another process wrote first, as when it took the run over
    believing its process dead: :mod:`after.worker.runner`) stands for that run, which it
    says went on and ended; the record beside it is left out. The id alone says so: the
    runner also marks such a record ``"late": true``, but no other run record's id ends so
    (theirs end ``#<number>#<suffix>``: :func:`after.worker.runs.record_id`)."""
    beside = {str(run.get("_id")).removesuffix(rules.LATE_SUFFIX) for run in records
              if str(run.get("_id")).endswith(rules.LATE_SUFFIX)}
    return [run for run in records if str(run.get("_id")) not in beside]


def rerun_after(run: dict, ran: list[dict]) -> bool:
    """Whether ``run`` was cut short (``interrupted``) and another run of its attempt began
    once it had ended: a stop past its grace hands the task back as the same attempt
    (:func:`after.worker.stop.shutdown`), and the next owner runs it again. Two runs of one
    attempt that overlap in time stay two."""
    if run.get("outcome") != rules.INTERRUPTED:
        return False
    ended = rules.instant(run.get("ended"))
    if ended is None:
        return False
    for other in ran:
        began = rules.instant(other.get("started"))
        if other is not run and _attempt(other) == _attempt(run) and began is not None \
                and began >= ended:
            return True
    return False


def _attempt(run: dict) -> int:
    value = run.get("attempt")
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def _order(run: dict) -> tuple:
    return (str(run.get("started") or ""), _attempt(run), str(run.get("_id")))


def _message(run: dict) -> str | None:
    error = run.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return message if isinstance(message, str) and message else None


def _why_not(records: list[dict]) -> str | None:
    for run in records:
        if run.get("outcome") in (rules.MISSED, rules.SKIPPED):
            return _message(run) or run.get("outcome")
    return None


def _extra(run: dict, start: datetime, end: datetime) -> dict | None:
    """A run record of no occurrence the schedule implies, when it is in the window."""
    when = nominal(run) or rules.instant(run.get("started"))
    if when is None or not start <= when <= end:
        return None
    kind = run.get("kind")
    reason = ("a manual run (after run)" if kind == occ.MANUAL
              else "a backfill of a date that is no occurrence of the schedule"
              if kind == occ.BACKFILL else "no occurrence of the schedule")
    return {"run": run.get("_id"), "task": run.get("task"), "kind": kind,
            "occurrence": format_date(when), "started": run.get("started"),
            "outcome": run.get("outcome"), "reason": reason}


def report(start: datetime, end: datetime, now: datetime, late: float,
           audits: list[TaskAudit]) -> Report:
    """The report of ``audits``, tasks with nothing implied and no extra run left out."""
    kept = [a for a in audits if a.entries or a.extra or a.error]
    return Report(start, end, now, late, tuple(sorted(kept, key=lambda a: str(a.task))))
