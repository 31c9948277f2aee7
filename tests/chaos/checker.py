"""The checker: a chaos run's history, the tasks as they ended and the run records in; a
verdict for every occurrence (and every task left behind) out. Pure: no I/O, no clock.

Jepsen's method: the history says what really ran (the ``history`` job's lines, written by
the job itself, not by the scheduler) and what the nemesis did; the database says what the
scheduler believes. The checker holds one against the other:

=============  ===============================================================================
``once``       the occurrence ran once
``rerun``      it ran more than once, and each run but the last was cut short by a fault of
               its process (killed, frozen, or stopped by SIGTERM between the run's start and
               the next run's start) AND is recorded ``interrupted`` under that process in the
               run records: the documented re-run after the death of a process
``gave up``    every run was cut by a fault and the scheduler stopped re-running it
               (``interrupted ... times in a row``), as documented
``cut``        its one run was cut by a fault and the task was canceled or rescheduled
               meanwhile: nothing left to run
``twice``      it ran more than once without that excuse: a DUPLICATE
``never``      it should have run and did not: recorded done with no run in the history, the
               date a one-off task ended ``done`` at with no run, a run cut short never run
               again, a series ended with fewer occurrences than its ``limit``, or a task
               ended ``canceled`` that no one canceled
``unfinished`` a run began and never ended although its process was never stopped
``extra``      a series ran more occurrences than its ``limit``
``stuck``      a task left ``waiting``, ``scheduled``, ``running``, ``cancel``... once the
               schedule ended and every process was healthy and idle
``error``      a task ended ``error`` for another reason than giving up (the job never fails)
``audit``      the audit (``after audit``, :mod:`after.audit`, over the scenario's window)
               disagrees: it says ``twice`` of an occurrence the checker did not find run
               twice, or ``never`` or ``missed`` of one the checker found run (once, or
               re-run after a fault)
=============  ===============================================================================

The last seven are violations. Two allowances, both of measurement, are written here as
constants: a run's start line is written by the job a moment after the worker launched it
(in a child process, for a run isolated after an interruption), and its end reaches the
database a moment after its end line.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from after import audit as audits
from after.rules import occurrence as occ
from after.rules.dates import parse_date
from after.worker.partitions import partition_of

from .history import Cut, History, Run

ONCE, RERUN, GAVE_UP, CUT = "once", "rerun", "gave up", "cut"
TWICE, NEVER, UNFINISHED, EXTRA, STUCK, ERROR, AUDIT = (
    "twice", "never", "unfinished", "extra", "stuck", "error", "audit")
VERDICTS = (ONCE, RERUN, GAVE_UP, CUT, TWICE, NEVER, UNFINISHED, EXTRA, STUCK, ERROR, AUDIT)
VIOLATIONS = (TWICE, NEVER, UNFINISHED, EXTRA, STUCK, ERROR, AUDIT)

#: A run's start line may come this long after a fault of its process: the job writes it
#: once launched, and the child process of an isolated run starts on its own.
LAUNCH_SLACK = timedelta(seconds=0.5)
#: A fault this long after a run's end line still cut it: its end was not written yet.
END_GRACE = timedelta(seconds=5)

TERMINAL = ("done", "canceled", "error")
GIVE_UP_MARK = "times in a row"  # after.rules.task.INTERRUPTED_TOO_OFTEN


@dataclass(frozen=True)
class Verdict:
    verdict: str
    task: str
    occurrence: str | None
    why: str
    evidence: tuple[str, ...] = ()

    @property
    def wrong(self) -> bool:
        return self.verdict in VIOLATIONS

    def show(self) -> str:
        head = f"{self.verdict.upper()}: task {self.task}" + (
            f" occurrence {self.occurrence}" if self.occurrence else "") + f": {self.why}"
        return "\n".join([head, *(f"    {line}" for line in self.evidence)])


@dataclass
class Report:
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runs: int = 0
    cuts: int = 0

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(v.verdict for v in self.verdicts)
        return {verdict: found[verdict] for verdict in VERDICTS if found[verdict]}

    @property
    def violations(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.wrong]

    @property
    def ok(self) -> bool:
        return not self.violations

    def text(self) -> str:
        counts = ", ".join(f"{verdict} {n}" for verdict, n in self.counts.items()) or "nothing"
        lines = [f"checker: {self.runs} runs, {self.cuts} process faults; occurrences and "
                 f"tasks: {counts}; " + ("OK" if self.ok else
                                         f"{len(self.violations)} VIOLATION(S)")]
        lines += [v.show() for v in self.violations]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _date(value) -> datetime | None:
    try:
        return parse_date(value, "date")
    except Exception:
        return None


def _record(rec: dict) -> str:
    error = rec.get("error")
    error = error.get("message") if isinstance(error, dict) else error
    return (f"record {rec.get('_id')}: {rec.get('outcome')} by {rec.get('process')} "
            f"{rec.get('started')} -> {rec.get('ended')}" + (f" ({error})" if error else ""))


def cut_between(history: History, a: Run, b: Run | None) -> Cut | None:
    """The fault of ``a``'s process that cut ``a`` short before ``b`` (the next run of its
    occurrence; None: none came) began: a kill or SIGTERM from ``a``'s start (less
    LAUNCH_SLACK) to its end line (plus END_GRACE), or a freeze overlapping that span."""
    low = a.start - LAUNCH_SLACK
    high = a.end + END_GRACE if a.end is not None else None
    for cut in history.cuts_of(a.pid):
        if b is not None and cut.at > b.start:
            continue
        if cut.kind == "freeze":
            during = (cut.until is None or cut.until >= low) and (high is None or cut.at <= high)
        else:
            during = cut.at >= low and (high is None or cut.at <= high)
        if during:
            return cut
    return None


def check(history: History, tasks: list[dict], records: list[dict], *,
          leases: dict[int, dict] | None = None, live: dict[str, dict] | None = None
          ) -> Report:
    """Judge every occurrence the history, the tasks (as they were once the schedule ended
    and settled, every process healthy) and the run records name. ``leases`` (partition ->
    its lease document) and ``live`` (the processes beating then: id -> heartbeat), when
    given, say of a stuck task who was to run it."""
    report = Report(runs=len(history.runs), cuts=len(history.cuts))
    docs = {d["_id"]: d for d in tasks if not d.get("_id", "").startswith("_design/")}
    runs: dict[str, list[Run]] = defaultdict(list)
    owner: dict[str, str] = {}
    for run in history.runs:
        runs[run.occurrence].append(run)
        owner[run.occurrence] = run.task
    recs: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        if rec.get("occurrence") and rec.get("outcome") not in ("skipped", "missed"):
            recs[rec["occurrence"]].append(rec)
            owner.setdefault(rec["occurrence"], rec.get("task"))
    rescheduled = {op.get("task") for op in history.ops if op.get("op") == "reschedule"}
    canceled = {op.get("task") for op in history.ops if op.get("op") == "cancel"}

    expected: dict[str, str] = {}
    for docid, doc in docs.items():
        status = doc.get("status")
        current = _date(doc.get("date"))
        if status not in TERMINAL:
            info = doc.get("after") if isinstance(doc.get("after"), dict) else {}
            evidence = [f"date {doc.get('date')}, owner {info.get('owner')}, due "
                        f"{info.get('due')}, revision {doc.get('_rev')}"]
            if leases is not None:
                evidence.append(_holder(docid, leases, live or {}))
            report.verdicts.append(Verdict(STUCK, docid, None,
                                           f"left {status!r} once the schedule ended",
                                           tuple(evidence)))
            continue
        if status == "canceled" and docid not in canceled:
            report.verdicts.append(Verdict(NEVER, docid, None, "ended canceled, yet no one "
                                           "asked for a cancel"))
        if status == "error":
            message = str((doc.get("after") or {}).get("error") or "")
            if GIVE_UP_MARK not in message:
                report.verdicts.append(Verdict(ERROR, docid, None, message or "no message"))
        if status == "done" and not doc.get("repeat") and current is not None:
            key = occ.key(docid, current)
            expected[key] = f"the task ended done at its date {doc.get('date')}"
            owner.setdefault(key, docid)
    for rec in records:
        if rec.get("outcome") == "done" and rec.get("occurrence"):
            expected.setdefault(rec["occurrence"], f"recorded done by {rec.get('process')}")

    for key in sorted(set(runs) | set(expected) | set(recs)):
        verdict = _judge(history, key, owner.get(key, "?"), runs.get(key, []),
                         recs.get(key, []), expected.get(key), docs, rescheduled)
        if verdict is not None:
            report.verdicts.append(verdict)
    report.verdicts += _series(docs, history, records)
    report.notes += _after_cancel(history)
    return report


def _holder(docid: str, leases: dict[int, dict], live: dict[str, dict]) -> str:
    """Who holds the lease of a stuck task's partition, and whether it knows it."""
    k = partition_of(docid)
    holder = (leases.get(k) or {}).get("owner")
    if k not in leases:
        return f"its partition {k} has no lease document"
    if holder not in live:
        return f"its partition {k}: lease owner {holder} (not live); live: {sorted(live)}"
    named = sum(1 for doc in leases.values() if doc.get("owner") == holder)
    return (f"its partition {k}: lease owner {holder} (a live process, whose heartbeat says "
            f"it owns {live[holder].get('partitions')} partitions; {named} leases name it)")


def _judge(history: History, key: str, task: str, ran: list[Run], recs: list[dict],
           expected: str | None, docs: dict, rescheduled: set) -> Verdict | None:
    evidence = tuple(run.show() for run in ran) + tuple(
        cut.show() for pid in sorted({run.pid for run in ran}) for cut in history.cuts_of(pid)
    ) + tuple(_record(rec) for rec in sorted(recs, key=lambda r: str(r.get("started"))))
    if not ran:
        if expected is None:
            return None  # nothing ran, nothing had to (interrupted before its first line)
        return Verdict(NEVER, task, key, f"no run in the history, yet {expected}", evidence)
    excused, unexcused = [], []
    for a, b in zip(ran, ran[1:]):
        cut = cut_between(history, a, b)
        interrupted = [rec for rec in recs if rec.get("outcome") == "interrupted"
                       and rec.get("process") == a.process]
        if cut is None or not interrupted:
            unexcused.append(f"run {a.run[:8]} by {a.process} was " + (
                "not cut by any fault of its process before the next began" if cut is None
                else f"cut ({cut.kind} {(cut.at - a.start).total_seconds():.2f} s after it "
                     "began) but is not recorded interrupted under its process"))
        excused.append(cut)
    if unexcused:
        return Verdict(TWICE, task, key, f"ran {len(ran)} times: " + "; ".join(unexcused),
                       evidence)
    if any(run.end is not None for run in ran):
        if len(ran) == 1:
            return Verdict(ONCE, task, key, "ran once")
        return Verdict(RERUN, task, key, f"ran {len(ran)} times, each but the last cut by "
                       + ", ".join(cut.kind for cut in excused) + " and recorded interrupted",
                       evidence)
    last = ran[-1]
    cut = cut_between(history, last, None)
    if cut is None:
        return Verdict(UNFINISHED, task, key, f"run {last.run[:8]} began and never ended, and "
                       "its process was never stopped", evidence)
    doc = docs.get(task) or {}
    gave_up = any(GIVE_UP_MARK in str((rec.get("error") or {}).get("message")) for rec in recs)
    if gave_up:
        return Verdict(GAVE_UP, task, key, f"cut {len(ran)} times, then given up", evidence)
    if doc.get("status") == "canceled":
        return Verdict(CUT, task, key, f"cut ({cut.kind}), and the task was canceled", evidence)
    current = _date(doc.get("date"))
    if task in rescheduled and not doc.get("repeat") and current is not None \
            and occ.key(task, current) != key:
        return Verdict(CUT, task, key, f"cut ({cut.kind}), and the task was rescheduled",
                       evidence)
    return Verdict(NEVER, task, key, f"its run was cut ({cut.kind}) and never run again",
                   evidence)


def _series(docs: dict, history: History, records: list[dict]) -> list[Verdict]:
    """A repeating task that ended ``done`` ran as many occurrences as its ``limit``."""
    found = []
    for docid, doc in docs.items():
        repeat = doc.get("repeat")
        limit = repeat.get("limit") if isinstance(repeat, dict) else None
        if doc.get("status") != "done" or not isinstance(limit, int):
            continue
        ran = {run.occurrence for run in history.runs if run.task == docid}
        # a run recorded missed when it fell due counts toward the limit (it consumed its
        # occurrence); those a catch-up passed over (ids ``TASK#NUMBER#mMS``,
        # after.worker.runs.missed_records) do not: ``limit`` counts runs
        missed = {rec.get("occurrence") for rec in records
                  if rec.get("task") == docid and rec.get("outcome") == "missed"
                  and not str(rec.get("_id", "")).rpartition("#")[2].startswith("m")}
        count = len(ran | missed)
        if count < limit:
            found.append(Verdict(NEVER, docid, None, f"a series of {limit} ended done after "
                                 f"{count} occurrences ran"))
        elif count > limit:
            found.append(Verdict(EXTRA, docid, None, f"a series of {limit} ran {count} "
                                 "occurrences"))
    return found


def against_audit(report: Report, audit: audits.Report) -> list[Verdict]:
    """Where the audit of the scenario's window (:meth:`after.client.Client.audit`, what a
    user would ask) disagrees with the checker's verdicts (``report``): an occurrence the
    audit says ran twice that the checker did not find run twice, or one it says never ran
    or was missed that the checker found run. The audit's counts go to the report's notes."""
    mine = {v.occurrence: v.verdict for v in report.verdicts if v.occurrence}
    found = []
    for entry in (e for task in audit.tasks for e in task.entries):
        key = occ.key(entry.task, entry.date)
        said = f"the audit says {entry.verdict}" + (f" ({entry.reason})" if entry.reason
                                                    else "")
        if entry.verdict == audits.TWICE and mine.get(key) != TWICE:
            found.append(Verdict(AUDIT, entry.task, key, f"{said}, the checker "
                                 f"{mine.get(key) or 'found no run in the history'}",
                                 entry.runs))
        elif entry.verdict in (audits.NEVER, audits.MISSED) and mine.get(key) in (ONCE, RERUN):
            found.append(Verdict(AUDIT, entry.task, key, f"{said}, the checker found it ran "
                                 f"({mine[key]})", entry.runs))
    counts = ", ".join(f"{verdict} {n}" for verdict, n in audit.counts.items() if n)
    report.notes.append(f"audit of the window: {counts or 'nothing'}; "
                        + (f"{len(found)} disagreement(s)" if found else "agrees"))
    return found


def _after_cancel(history: History) -> list[str]:
    """Runs that began more than a second after a cancel of their task was acknowledged
    (the cancel travels by the feed: a moment is expected)."""
    acked = {}
    for op in history.ops:
        if op.get("op") == "cancel" and op.get("ok"):
            acked.setdefault(op["task"], datetime.fromisoformat(op["at"]))
    notes = []
    for run in history.runs:
        at = acked.get(run.task)
        if at is not None and run.start - at > timedelta(seconds=1):
            notes.append(f"task {run.task}: {run.show()} began "
                         f"{(run.start - at).total_seconds():.1f} s after its cancel was "
                         "acknowledged")
    return notes
