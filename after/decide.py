"""What a worker process does about a task: pure decisions, with ``now`` passed in.

:func:`decide` takes the current version of a task document, a :class:`View` of what this
process knows (what it holds and runs, which peers are alive, from the cache of
:mod:`after.peers`) and ``now``, and returns the actions that follow: :class:`Write` (a
document to write, and why) and what to do in memory (:class:`Hold`, :class:`Defer`,
:class:`Drop`, :class:`Keep`, :class:`Restart`), or :class:`Confirm` when the answer hangs on
whether another process is dead, which only a fresh read of its heartbeat can say (done off
the loop; the task is decided again once it is known). Nothing here does I/O or reads the
clock; the transitions themselves are those of :mod:`after.task`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from . import calendar as cal
from . import overlap, skipping
from . import task as rules
from .dates import format_date, from_ms, parse_date, to_ms
from .jobnames import JobError
from .redact import redact_text

log = logging.getLogger("after.worker")


class Kind(Enum):
    """Why a document is written: decides what happens once it is written, or conflicts."""

    CLAIM = "claim"  # waiting -> scheduled by us, held on the timer
    START = "start"  # scheduled -> running: launch the job
    CLAIMSTART = "claimstart"  # waiting -> running in one write (a task already due)
    FINISH = "finish"  # a run ended (or was missed, or interrupted elsewhere)
    ERROR = "error"  # the task cannot run
    CANCEL = "cancel"  # the user's cancel, applied
    HANDBACK = "handback"  # held -> waiting again (a graceful stop)
    PARK = "park"  # a reschedule beyond the horizon -> waiting
    RESUME = "resume"  # a paused task the user set waiting -> from its next occurrence
    RESOLVE = "resolve"  # delete a losing revision


@dataclass
class Write:
    """A document to write, and why."""

    kind: Kind
    doc: dict
    spec: rules.Spec | None = None
    outcome: rules.Outcome | None = None
    run: dict | None = None
    skipped: list[dict] | None = None  # run records of occurrences skipped (``overlap``)
    detached: str | None = None  # the token of a run detached from the task (after.overlap)
    token: str | None = None  # the run a START or CLAIMSTART begins
    due: datetime | None = None  # the occurrence a CLAIMSTART runs
    takeover: bool = False  # a FINISH of another (dead) process's run
    fence: bool = False  # a START or CLAIMSTART written ahead of ``due`` (the lead window)
    accepted: bool = False  # written, but not confirmed by a quorum (202)
    # Sent while this process surely held its lease until then (monotonic, Peers.sure_until)
    sure_until: float = float("-inf")
    attempts: int = 0  # failed tries (not conflicts) so far
    not_before: float = 0.0  # epoch seconds before which it is not tried again


@dataclass
class Hold:
    """Hold the task on the timer until ``due`` (a task already running stays as it is)."""

    doc: dict
    spec: rules.Spec
    due: datetime


@dataclass
class Defer:
    """Claim the task after the claim delay, unless it changes meanwhile."""

    doc: dict
    spec: rules.Spec
    due: datetime


@dataclass
class Wait:
    """Due now, and the pool cannot begin it soon: left ``waiting`` (no write; the other
    processes of the name may take it) and claimed and started as a thread frees up, higher
    priority then earlier first, unless it changes meanwhile."""

    doc: dict
    spec: rules.Spec
    due: datetime


@dataclass
class Drop:
    """Forget a task held (not running) or deferred."""

    docid: str


@dataclass
class Keep:
    """A newer version of a task this process runs: keep it for when the run ends."""

    doc: dict


@dataclass
class Restart:
    """Ours and ``running``, with no run behind it (a lost answer): run it now."""

    doc: dict
    spec: rules.Spec
    due: datetime


@dataclass
class Confirm:
    """Whether ``owner`` is dead decides this task: read its heartbeat, then decide again."""

    owner: str
    doc: dict


Action = Write | Hold | Defer | Wait | Drop | Keep | Restart | Confirm


class Liveness(Enum):
    ALIVE = "alive"
    DEAD = "dead"  # its heartbeat was read and has expired
    UNKNOWN = "unknown"  # not in the cache: only a read of its heartbeat can tell


@dataclass(frozen=True)
class Identity:
    """Who records a run: the worker name, and this process."""

    name: str
    process: str
    host: str
    pid: int


@dataclass(frozen=True)
class View:
    """What :func:`decide` may know besides the document."""

    me: Identity
    horizon_ms: int  # hold what is due within this many milliseconds
    held: Mapping[str, bool]  # tasks this process holds: id -> running
    liveness: Callable[[str], Liveness]
    preferred: Callable[[str], bool]  # does this process claim the task first?
    check_job: Callable[[str], object]  # raises JobError for a job the folder lacks
    # may a run start now (room in the pool, reserved by a True answer; ``ahead``: a start
    # written before its instant, which only needs a thread free now)? If not, a task
    # already due is left waiting in line (Wait), one due later claimed and held
    can_start: Callable[..., bool] = lambda ahead=False: True
    lead_ms: int = 0  # the lead window: start writes go this far ahead of the due instant
    paused: bool = False  # the worker name is paused (after pause NAME): claim nothing


# Over 60 lines on purpose: one status after another, so that every decision about a task's
# current version reads in one place, in the order of the state machine.
def decide(doc: dict, view: View, now: datetime) -> list[Action]:
    """The actions that follow from the current version of a task document."""
    docid = doc.get("_id", "")
    if docid.startswith("_design/"):
        return []
    if doc.get("_deleted") or doc.get("worker") != view.me.name:
        return [Drop(docid)]
    status = doc.get("status")
    info = rules.info(doc)
    owner = rules.owner(info)
    held = view.held.get(docid)
    if status in rules.FINISHED:
        return [Drop(docid)]
    if status in (rules.CANCEL, rules.RESCHEDULE, rules.WAITING, rules.PAUSED) \
            and info.get("started") and owner:
        # It is running somewhere: the process running it applies this when it finishes
        # (``waiting`` then means: run it again, at its date, after this run).
        life = Liveness.ALIVE if owner == view.me.process else view.liveness(owner)
        if life is Liveness.UNKNOWN:
            return [Confirm(owner, doc)]
        if life is Liveness.ALIVE:
            return [Keep(doc)] if held is not None else []
    if status == rules.CANCEL:
        return [Drop(docid), Write(Kind.CANCEL, rules.cancel(doc, now))]
    if status == rules.PAUSED:  # a process holding it lets it go, and writes nothing
        return [Drop(docid)]
    try:
        spec = rules.parse(doc)
        view.check_job(spec.job)
    except (rules.TaskError, JobError) as exc:
        message = redact_text(str(exc))
        log.warning("task %s cannot run: %s", docid, message)
        return [Drop(docid), Write(Kind.ERROR, rules.mark_error(doc, message, now))]
    if status == rules.WAITING and "paused" in info:  # resumed by a plain write
        return [Drop(docid), Write(Kind.RESUME, rules.resume(doc, spec, now))]
    if view.paused and not (owner == view.me.process and status == rules.RUNNING):
        return paused_name(doc, owner, held, view)
    if status in (rules.WAITING, rules.RESCHEDULE):
        if to_ms(spec.due) <= to_ms(now) + view.horizon_ms:  # (moved by a repeat's jitter)
            return [Drop(docid), *claim_or_defer(doc, spec, spec.due, view, now)]
        if status == rules.RESCHEDULE:
            return [Drop(docid), Write(Kind.PARK, rules.hand_back(doc))]
        return [Drop(docid)]
    moved = rules.date_moved(doc)
    due = spec.due if moved else due_of(info, spec)
    if owner and not owner.startswith(f"{view.me.name}@") and status == rules.SCHEDULED:
        # moved here from another worker name: that name's process no longer holds it (its
        # writes conflict with the move, and its feed no longer shows it): claim it
        log.info("task %s moved to %s from %s: claiming it", docid, view.me.name, owner)
        return [Drop(docid), *claim_or_defer(doc, spec, due, view, now)]
    if owner == view.me.process:
        if status == rules.SCHEDULED and moved:  # a new date on a task we hold
            if to_ms(due) > to_ms(now) + view.horizon_ms:
                return [Drop(docid), Write(Kind.PARK, rules.hand_back(doc))]
            return [Drop(docid), claim(doc, spec, due, view.me.process, now, view.lead_ms,
                                       view.can_start, wait=False)]
        if status == rules.SCHEDULED:
            return [] if held is True else [Hold(doc, spec, due)]
        # running, ours: it ends when its run does, unless nothing runs it
        return [Keep(doc)] if held is True else [Restart(doc, spec, due)]
    life = view.liveness(owner) if owner else Liveness.DEAD
    if life is Liveness.UNKNOWN:
        return [Drop(docid), Confirm(owner, doc)]
    if life is Liveness.ALIVE:
        return [Drop(docid)]
    if status == rules.SCHEDULED:
        log.info("taking over %s from %s (lease expired)", docid, owner)
        return [Drop(docid), *claim_or_defer(doc, spec, due, view, now)]
    return [Drop(docid), take_over(doc, spec, owner, info, view.me, now)]


def paused_name(doc: dict, owner: str | None, held: bool | None, view: View) -> list[Action]:
    """The worker name is paused: claim nothing, start nothing; a task this process holds
    (not running) is handed back, ``waiting``, for when the name resumes."""
    docid = doc["_id"]
    if owner == view.me.process and doc.get("status") in (rules.SCHEDULED, rules.RESCHEDULE) \
            and held is not True:
        return [Drop(docid), Write(Kind.HANDBACK, rules.hand_back(doc))]
    return [Drop(docid)]


def take_over(doc: dict, spec: rules.Spec, owner: str | None, info: dict, me: Identity,
              now: datetime) -> Write:
    """The process running ``doc`` is gone: its run was interrupted; run it again here."""
    log.warning("task %s was running on %s, which stopped: running it again", doc["_id"], owner)
    try:
        started = parse_date(info.get("started", format_date(now)), "after.started")
    except ValueError:
        started = now
    outcome = rules.Outcome(rules.INTERRUPTED, started, now,
                            error=f"interrupted: worker process {owner} stopped")
    finished = rules.finish(doc, spec, outcome, now)
    if finished["status"] == rules.SCHEDULED:  # run again, here, now
        finished[rules.NS].update(owner=me.process, due=format_date(now))
    run = run_record(doc, spec, outcome, me, owner=owner)
    return Write(Kind.FINISH, finished, outcome=outcome, run=run, spec=spec, takeover=True)


def resolutions(doc: dict) -> list[Write]:
    """Concurrent writes on a cluster (or replication) left conflicting revisions: keep the
    revision CouchDB picked as the winner (every node picks the same) and delete the others,
    so every process decides on the same version. Takes ``_conflicts`` off ``doc``."""
    losers = doc.pop("_conflicts", None)
    if not losers:
        return []
    log.warning("task %s had %d conflicting revision(s): keeping %s", doc["_id"], len(losers),
                doc.get("_rev"))
    return [Write(Kind.RESOLVE, {"_id": doc["_id"], "_rev": rev, "_deleted": True})
            for rev in losers]


def due_of(info: dict, spec: rules.Spec) -> datetime:
    try:
        return parse_date(info["due"], "after.due")
    except (KeyError, ValueError):
        return spec.due


# Sharing: the preferred process of a task (see Peers.preferred) claims it at once; the
# others wait ``claim_delay`` and claim it only if nobody has (it died, or is not known yet).
# Claims stay exact through ``_rev`` either way; this only spreads the work.

def claim_or_defer(doc: dict, spec: rules.Spec, due: datetime, view: View,
                   now: datetime) -> list[Action]:
    if view.preferred(doc["_id"]):
        return [claim(doc, spec, due, view.me.process, now, view.lead_ms, view.can_start)]
    return [Defer(doc, spec, due)]


def claim(doc: dict, spec: rules.Spec, due: datetime, me: str, now: datetime,
          lead_ms: int = 0, can_start: Callable[..., bool] = lambda ahead=False: True,
          wait: bool = True) -> Write | Wait:
    """The claim of a task. One already due, or due within the lead window, is claimed and
    started in the same write (``running`` at once: one revision, one round trip and one
    feed event fewer) when a job thread is free for it; ahead of its due instant, that write
    is a fence (see :func:`fence`). One already due with no thread free is not claimed
    (:class:`Wait`, when ``wait``): claiming it ``scheduled`` and starting it later took a
    third write per task in a backlog, and kept it from the other processes."""
    claimed = rules.claim(doc, me, due, now)
    if overlap.detaches(spec):
        lead_ms = 0  # its run is detached as it starts: no start written ahead
    if rules.missed(spec, due, now) or to_ms(due) - to_ms(now) > lead_ms or gated(spec):
        return Write(Kind.CLAIM, claimed, spec=spec)
    early = due > now
    if not can_start(ahead=early):
        if wait and not early:
            return Wait(doc, spec, due)
        return Write(Kind.CLAIM, claimed, spec=spec)
    number = rules.counter(rules.meta(dict(doc)), "runs") + 1
    return detached(Write(Kind.CLAIMSTART, rules.start(claimed, me, due if early else now,
                                                       number),
                          spec=spec, token=uuid.uuid4().hex[:8], due=due, fence=early), now)


def detached(write: Write, now: datetime) -> Write:
    """The start of an ``overlap: allow`` task's run, detached from the task (its next
    occurrence scheduled at once, :func:`after.overlap.detach`), when there is a next one."""
    if overlap.detaches(write.spec) and write.due is not None:
        doc = overlap.detach(write.doc, write.spec, write.token, write.due, now)
        if doc is not None:
            write.doc, write.detached = doc, write.token
    return write


def gated(spec: rules.Spec) -> bool:
    """Whether an occurrence of the task must pass :mod:`after.gates` before it starts (a
    calendar, a concurrency cap): then it is claimed and held, never started in the claim's
    write nor fenced ahead, and the gates are asked when it falls due."""
    return spec.concurrency is not None or (spec.repeat is not None
                                            and spec.repeat.exclude is not None)


def screen(doc: dict, spec: rules.Spec, calendars: dict[str, cal.Exclusion], me: Identity,
           now: datetime) -> Write | None:
    """The occurrence of ``doc`` (its ``date``) fell due: None when it may run; the write
    that records it ``skipped`` when its day is excluded; an ``error`` when it names a
    calendar that does not exist (``calendars``: those that do, by name)."""
    exclusion = spec.repeat.exclude if spec.repeat is not None else None
    wrong = cal.missing(exclusion, calendars)
    if wrong is not None:
        log.warning("task %s cannot run: %s", doc["_id"], wrong)
        return Write(Kind.ERROR, rules.mark_error(doc, wrong, now))
    reason = cal.excluded(exclusion, spec.date, spec.repeat.zone if spec.repeat else "UTC",
                          calendars)
    if reason is None:
        return None
    log.info("task %s: occurrence %s %s", doc["_id"], format_date(spec.date), reason)
    return skip(doc, spec, reason, me, now, calendars)


def skip(doc: dict, spec: rules.Spec, reason: str, me: Identity, now: datetime,
         calendars: dict[str, cal.Exclusion] | None = None) -> Write:
    """An occurrence not run on purpose: its run record (``skipped``), and the next one;
    past every excluded day in one step when ``calendars`` is given (after.skipping)."""
    leap = skipping.leap(doc, spec, now, calendars) if calendars is not None else None
    outcome = rules.Outcome(rules.SKIPPED, now, now, error=reason + (leap.note if leap else ""))
    return Write(Kind.FINISH, rules.finish(doc, spec, outcome, now,
                                           following=leap.following if leap else None),
                 outcome=outcome, run=run_record(doc, spec, outcome, me), spec=spec)


def fence(doc: dict, spec: rules.Spec, due_ms: int, me: Identity) -> Write:
    """The start of a held occurrence, written ahead of its due instant (within the lead
    window): ``running`` under this process, ``after.started`` the due instant. The job
    begins when the timer fires, with no write between the timer and the job; the run's own
    start is recorded when it ends (``last_run.started``).

    Safe under the lease rules as any start is: the task is this process's, ``running``,
    covered by its heartbeat; if the process dies before or during the run, another takes it
    over as ``interrupted`` and runs it (at least once). A ``cancel`` or ``reschedule`` that
    reaches the owner before the due instant is applied at once (the fence is undone in
    memory, :func:`after.task.unfence`); one that comes later is applied when the run ends."""
    number = rules.counter(rules.meta(dict(doc)), "runs") + 1
    return Write(Kind.START, rules.start(doc, me.process, from_ms(due_ms), number), spec=spec,
                 token=uuid.uuid4().hex[:8], due=from_ms(due_ms), fence=True)


def fire(doc: dict, spec: rules.Spec, due_ms: int, me: Identity, now: datetime) -> Write:
    """A held occurrence fell due: start it, or record it missed (past ``max_delay``)."""
    due = from_ms(due_ms)
    if rules.missed(spec, due, now):
        late = (now - due).total_seconds()
        outcome = rules.Outcome(rules.MISSED, now, now,
                                error=f"missed: would have started {late:.1f}s late "
                                      f"(max_delay {spec.max_delay:g}s)")
        log.warning("task %s missed its run due %s", doc["_id"], format_date(due))
        return Write(Kind.FINISH, rules.finish(doc, spec, outcome, now), outcome=outcome,
                     run=run_record(doc, spec, outcome, me), spec=spec)
    number = rules.counter(rules.meta(dict(doc)), "runs") + 1
    return detached(Write(Kind.START, rules.start(doc, me.process, now, number), spec=spec,
                          token=uuid.uuid4().hex[:8], due=due), now)


def end(doc: dict, spec: rules.Spec, outcome: rules.Outcome, me: Identity, now: datetime, *,
        trace: str | None = None, response: dict | None = None) -> Write:
    """A run of ours ended (or timed out): its transition, its run record, and one
    ``skipped`` record for each occurrence that fell due while it went (``overlap``)."""
    finished = rules.finish(doc, spec, outcome, now)
    return Write(Kind.FINISH, finished, outcome=outcome,
                 run=run_record(doc, spec, outcome, me, trace=trace, response=response),
                 spec=spec, skipped=skipped_records(doc, finished, spec, outcome, me))


def end_detached(doc: dict, spec: rules.Spec, token: str, outcome: rules.Outcome,
                 me: Identity, now: datetime, dead: Callable[[str], bool], *,
                 trace: str | None = None, response: dict | None = None) -> Write:
    """A detached run of ours ended (``doc``: the task as its start wrote it): its outcome
    into the task, its run record; and the detached runs of processes found dead, recorded
    ``interrupted`` and taken off the task."""
    new = overlap.end(doc, token, outcome) or doc
    lost = overlap.orphans(new, dead)
    records = []
    for other, entry in lost:
        started = rules.instant(entry.get("started")) or now
        cut = rules.Outcome(rules.INTERRUPTED, started, now, error="interrupted: worker "
                            f"process {entry.get('owner')} stopped (not run again: overlap "
                            "allow)")
        records.append(run_record(overlap.as_run(doc, other), spec, cut, me,
                                  owner=entry.get("owner")))
    if lost:
        new = overlap.drop(new, [other for other, _ in lost])
    run = run_record(overlap.as_run(doc, token), spec, outcome, me, trace=trace,
                     response=response)
    return Write(Kind.FINISH, new, outcome=outcome, run=run, spec=spec, skipped=records,
                 detached=token)


def skipped_records(doc: dict, finished: dict, spec: rules.Spec, outcome: rules.Outcome,
                    me: Identity) -> list[dict]:
    """The ``skipped`` run records of the occurrences :func:`after.task.overlapped` found,
    when ``finished`` counted them (not when the run is retried, or the user's word won)."""
    counted = rules.counter(rules.info(finished), "skipped") - rules.counter(
        rules.info(doc), "skipped")
    if counted <= 0:
        return []
    skipped, _buffered = rules.overlapped(doc, spec, outcome)
    info = rules.meta(dict(doc))
    number = rules.counter(info, "run") or rules.counter(info, "runs") + 1
    return [{
        "_id": f"{doc['_id']}#{number:08d}#s{to_ms(when)}",
        "type": "run",
        "task": doc["_id"],
        "number": number,
        "worker": me.name,
        "process": me.process,
        "host": me.host,
        "pid": me.pid,
        "job": spec.job,
        "scheduled": format_date(when),
        "started": format_date(when),
        "ended": format_date(when),
        "duration_ms": 0,
        "outcome": rules.SKIPPED,
        "error": {"message": f"skipped: run {number} of this task was still going "
                             f"(overlap {spec.overlap})"},
    } for when in skipped[:counted]]


def refinish(write: Write, fresh: dict, me: Identity, now: datetime) -> list[Write] | None:
    """Our FINISH conflicted: apply the outcome to the current version ``fresh``, unless
    another process has taken the task over (then only the run is recorded: the write comes
    back with no document). None: decide on ``fresh`` again."""
    if write.detached:  # into whatever the task has become
        new = overlap.end(fresh, write.detached, write.outcome)
        if new is None:
            return []
        return [Write(Kind.FINISH, new, outcome=write.outcome, run=write.run, spec=write.spec,
                      skipped=write.skipped, detached=write.detached)]
    info = rules.info(fresh)
    if write.takeover and (fresh.get("status") != rules.RUNNING or not same_run(fresh, write)):
        return None  # no longer the run taken over: another process took it over first
    if not write.takeover and info.get("owner") != me.process:
        return []
    new = rules.finish(fresh, write.spec, write.outcome, now)
    if write.takeover and new["status"] == rules.SCHEDULED:
        new[rules.NS]["owner"] = me.process
        new[rules.NS]["due"] = format_date(now)
    return [Write(Kind.FINISH, new, outcome=write.outcome, run=write.run, spec=write.spec,
                  takeover=write.takeover)]


def same_run(fresh: dict, write: Write) -> bool:
    """Is ``fresh`` still running the run that ``write`` (a takeover) ended: the same
    owner, the same run number? Two processes that found its owner dead at once both write
    a takeover; the one that conflicts may re-read the task already started again by the
    other (running, another owner), and must leave it alone (CI saw the job run twice)."""
    info = rules.info(fresh)
    number = rules.counter(info, "run") or rules.counter(info, "runs") + 1
    return write.run is not None and info.get("owner") == write.run.get("process") \
        and number == write.run.get("number")


def occurrence_fields(spec: rules.Spec | None) -> dict:
    """What a run record says of its occurrence: its id (the idempotency key), its date,
    and for a one-off ``manual`` or ``backfill`` run, its kind and the task (``parent``)
    it runs an occurrence of, under which ``after runs`` lists it."""
    if spec is None:
        return {}
    if spec.occurrence is None:
        return {"occurrence": spec.occurrence_id, "occurrence_date": format_date(spec.date)}
    return {"occurrence": spec.occurrence_id,
            "occurrence_date": format_date(spec.occurrence.date),
            "kind": spec.occurrence.kind, "parent": spec.occurrence.task}


def run_record(doc: dict, spec: rules.Spec | None, outcome: rules.Outcome, me: Identity, *,
               owner: str | None = None, trace: str | None = None,
               response: dict | None = None) -> dict:
    """The run record of one run (``<db>_runs``), for ``after runs ID``."""
    info = rules.meta(dict(doc))
    number = rules.counter(info, "run") or rules.counter(info, "runs") + 1
    record = {
        "_id": f"{doc['_id']}#{number:08d}#{uuid.uuid4().hex[:6]}",
        "type": "run",
        "task": doc["_id"],
        "number": number,
        "attempt": rules.counter(info, "attempt") or 1,
        "worker": me.name,
        "process": owner or me.process,
        "host": me.host,
        "pid": me.pid,
        "job": spec.job if spec else None,
        "scheduled": info.get("due") or doc.get("date"),
        **occurrence_fields(spec),
        "started": format_date(outcome.started),
        "ended": format_date(outcome.ended),
        "duration_ms": outcome.duration_ms,
        "outcome": outcome.outcome,
    }
    scheduled = rules.instant(record["scheduled"])
    if scheduled is not None:  # from the occurrence's date (or its retry's), however it waited
        record["lateness_ms"] = round((outcome.started - scheduled).total_seconds() * 1000, 3)
    if outcome.ok:
        record["result"] = outcome.result
    else:
        record["error"] = {"message": outcome.error}
        if trace:
            record["error"]["traceback"] = trace
    if response is not None:
        record["response"] = response
    if spec is not None and outcome.outcome != rules.MISSED and rules.isolated(doc, spec):
        record["isolation"] = rules.PROCESS  # it ran in a child process of its own
    return record
