"""The writes of a run, from its start to its end and record: pure, ``now`` passed in.

- :func:`begin`: the task as its run sees it (``running`` under this process, the attempt
  counted), made in memory at the due instant: nothing is written before the job begins;
  the partition the task belongs to is this process's (see :mod:`after.worker.partitions`);
- :func:`end`: the task after the run (its next date, a retry, ``done`` or ``error``) and
  the run's record; :func:`missed` and :func:`skip` for an occurrence not run;
  :func:`catch_up` for a task whose date passed while no worker ran it (:mod:`after.rules.catchup`);
- :func:`take_over`: a run that was going in a process now dead, ``interrupted``;
- :func:`refinish`: an end whose write conflicted, applied to the task as it is now;
- :func:`run_record`: one run's record in ``<db>_runs``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum

from after.rules import occurrence as occ
from after.rules import overlap, skipping
from after.rules import task as rules
from after.rules.dates import format_date, from_ms, parse_date, to_ms


class Kind(Enum):
    """Why a task document is written: what its answer means (:func:`~.decide.settle`)."""

    INTENT = "intent"  # a run's intent, in ``<db>_runs`` (after.worker.intents)
    UNINTENT = "unintent"  # an intent withdrawn: the run will not begin
    VISIBLE = "running"  # a run going for a while, shown ``running``
    DETACH = "detach"  # an overlap-allow run's start: the task moves to its next occurrence
    FINISH = "finish"  # a run ended (or was missed, skipped, or interrupted elsewhere)
    ERROR = "error"  # the task cannot run
    CANCEL = "cancel"  # the user's cancel, applied
    HANDBACK = "handback"  # a run shown ``running`` that will not go on here: ``waiting``
    PARK = "park"  # a reschedule beyond the horizon -> waiting
    RESUME = "resume"  # a paused task the user set waiting -> from its next occurrence
    RESOLVE = "resolve"  # delete a losing revision
    CATCHUP = "catchup"  # a task whose date passed, moved by its catch-up policy
    STAMP = "stamp"  # a pause written with plain HTTP, stamped with when (as after's are)


@dataclass(slots=True)
class Write:
    """A task document to write, and why."""

    kind: Kind
    doc: dict
    spec: rules.Spec | None = None
    outcome: rules.Outcome | None = None
    run: dict | None = None  # the run's record, written once the task's write lands
    skipped: list[dict] | None = None  # records of occurrences not run (skipped, missed)
    token: str | None = None  # the run a VISIBLE, DETACH or FINISH is about
    detached: bool = False  # about a run apart from its task (``overlap: allow``)
    takeover: bool = False  # a FINISH of another (dead) process's run
    begun: dict | None = None  # a FINISH: the task as the run saw it (see refinish)

    @property
    def docid(self) -> str:
        return self.doc["_id"]


@dataclass(frozen=True)
class Identity:
    """Who records a run: the worker name, and this process."""

    name: str
    process: str
    host: str
    pid: int


def due_of(info: dict, spec: rules.Spec) -> datetime:
    """The instant a task's current occurrence fires: a pending retry's, else its date."""
    try:
        return parse_date(info["due"], "after.due")
    except (KeyError, ValueError):
        return spec.due


def next_number(doc: dict) -> int:
    """The number of the run a process holding ``doc`` as it is makes ready."""
    return rules.counter(rules.info(doc), "runs") + 1


def begin(doc: dict, spec: rules.Spec, due: datetime, me: str, now: datetime,
          token: str | None = None) -> dict:
    """The task as a run that begins at ``now`` sees it and ends it: held and started by
    ``me`` (the attempt counted, the run numbered, its ``token`` kept: the run's record id
    is derived from it). In memory only: the write of the run's end is checked against
    ``doc``'s revision."""
    number = next_number(doc)
    started = rules.start(rules.claim(doc, me, due, now), me, now, number)
    if token is not None:
        started[rules.NS]["token"] = token
    return started


def detach(started: dict, spec: rules.Spec, token: str, due: datetime, now: datetime
           ) -> Write | None:
    """The start of an ``overlap: allow`` run, apart from its task (its next occurrence at
    once, :func:`after.rules.overlap.detach`); None when there is no next one (it runs in place)."""
    doc = overlap.detach(started, spec, token, due, now)
    if doc is None:
        return None
    return Write(Kind.DETACH, doc, spec=spec, token=token, detached=True)


def debounced(due: datetime, debounce: float, seen: tuple[str, int] | None, rev: str | None,
              now: datetime) -> datetime:
    """``debounce``: the run of a task waits until ``debounce`` seconds went by with no new
    version of it, counted from when this process first saw the current one (``seen``:
    (revision, epoch ms); none, or another revision: now). A rewrite within the window
    moves the run; a process that takes the task over counts from when it reads it."""
    first = seen[1] if seen is not None and seen[0] == rev else to_ms(now)
    return max(due, from_ms(first + int(debounce * 1000)))


def gated(spec: rules.Spec) -> bool:
    """Whether an occurrence must pass :mod:`after.worker.gates` before it starts (a
    calendar, a concurrency cap, a rate limit): they are asked when it falls due."""
    return spec.concurrency is not None or spec.rate is not None \
        or (spec.repeat is not None and spec.repeat.exclude is not None)


def missed(doc: dict, spec: rules.Spec, due: datetime, me: Identity, now: datetime) -> Write:
    """An occurrence past its ``max_delay`` (or its catch-up's bound): recorded ``missed``,
    not run."""
    late = (now - due).total_seconds()
    limit = rules.late_bound(spec)
    outcome = rules.Outcome(rules.MISSED, now, now,
                            error=f"missed: would have started {late:.1f}s late "
                                  f"({limit[1] if limit else 'late'})")
    held = rules.claim(doc, me.process, due, now)  # (as a run sees it: the user's word taken)
    return Write(Kind.FINISH, rules.finish(held, spec, outcome, now), outcome=outcome,
                 run=run_record(held, spec, outcome, me), spec=spec)


def skip(doc: dict, spec: rules.Spec, reason: str, me: Identity, now: datetime,
         due: datetime | None = None, calendars: dict | None = None) -> Write:
    """An occurrence not run on purpose: its run record (``skipped``), and the next one;
    past every excluded day in one step when ``calendars`` is given (after.rules.skipping)."""
    held = rules.claim(doc, me.process, due or spec.due, now)
    leap = skipping.leap(held, spec, now, calendars) if calendars is not None else None
    outcome = rules.Outcome(rules.SKIPPED, now, now, error=reason + (leap.note if leap else ""))
    return Write(Kind.FINISH, rules.finish(held, spec, outcome, now,
                                           following=leap.following if leap else None),
                 outcome=outcome, run=run_record(held, spec, outcome, me), spec=spec)


def end(doc: dict, spec: rules.Spec, outcome: rules.Outcome, me: Identity, now: datetime,
        token: str | None = None, *, trace: str | None = None,
        response: dict | None = None) -> Write:
    """A run of ours ended (or timed out): its transition, its record, one ``skipped``
    record for each occurrence that fell due while it went (``overlap``), and one ``missed``
    record for each that fell due while it waited to start
    (:func:`after.rules.task.fell_missed`)."""
    finished = rules.finish(doc, spec, outcome, now)
    return Write(Kind.FINISH, finished, outcome=outcome, token=token,
                 run=run_record(doc, spec, outcome, me, trace=trace, response=response,
                                token=token),
                 spec=spec, skipped=skipped_records(doc, finished, spec, outcome, me)
                 + fell_records(doc, finished, spec, outcome, me, now), begun=doc)


def catch_up(doc: dict, spec: rules.Spec, me: Identity, now: datetime) -> Write | None:
    """A task ``waiting`` at a date that passed, caught up by its policy
    (:func:`after.rules.task.catch_up`): the write that moves it to the occurrence to run now, or
    past them all, and one ``missed`` record per occurrence passed; None when it simply
    runs its date."""
    caught = rules.catch_up(doc, spec, now)
    if caught is None:
        return None
    new, plan = caught
    outcome = rules.Outcome(rules.MISSED, now, now,
                            error=plan.why.get(plan.missed[-1]) if plan.missed else None)
    return Write(Kind.CATCHUP, new, spec=spec, outcome=outcome,
                 skipped=missed_records(doc, spec, plan.missed, plan.why, me, now))


def caught_up(write: Write, now: datetime) -> str:
    """What the log says of a catch-up (:func:`catch_up`'s write)."""
    doc = write.doc
    if doc.get("status") != rules.WAITING:
        going = "its series is over"
    elif rules.instant(doc.get("date")) <= now:
        going = f"it runs {doc['date']} now"
    else:
        going = f"it goes on at {doc['date']}"
    return (f"task {doc['_id']}: {len(write.skipped or ())} occurrence(s) missed while no "
            f"worker ran it, recorded (catch-up {write.spec.policy}); {going}")


def missed_records(doc: dict, spec: rules.Spec, dates, why: dict, me: Identity,
                   now: datetime) -> list[dict]:
    """One ``missed`` run record per occurrence of ``dates`` (nominal), found so at ``now``:
    numbered as the task's next run, with the occurrence's id and date (what ``after audit``
    reads). Their ids are the task's, the number and the occurrence: one occurrence
    recorded twice (two processes caught it up at once) is one record."""
    info = rules.meta(dict(doc))
    number = rules.counter(info, "run") or rules.counter(info, "runs") + 1
    records = []
    for when in dates:
        due = occ.jittered(spec.id, when, spec.repeat.jitter if spec.repeat else 0)
        records.append({
            "_id": f"{doc['_id']}#{number:08d}#m{to_ms(when)}",
            "type": "run", "task": doc["_id"], "number": number, "worker": me.name,
            "process": me.process, "host": me.host, "pid": me.pid, "job": spec.job,
            "scheduled": format_date(due), "occurrence": occ.key(spec.id, when),
            "occurrence_date": format_date(when), "started": format_date(now),
            "ended": format_date(now), "duration_ms": 0,
            "lateness_ms": round((now - due).total_seconds() * 1000, 3),
            "outcome": rules.MISSED,
            "error": {"message": why.get(when) or "missed"}})
    return records


def fell_records(doc: dict, finished: dict, spec: rules.Spec, outcome: rules.Outcome,
                 me: Identity, now: datetime) -> list[dict]:
    """The ``missed`` records of the occurrences that fell due while a run waited to start
    (:func:`after.rules.task.fell_missed`), when ``finished`` counted them (not when the run is
    retried, or the user's word won)."""
    counted = rules.counter(rules.info(finished), "missed") - rules.counter(
        rules.info(doc), "missed") - (outcome.outcome == rules.MISSED)
    if counted <= 0:
        return []
    fell = rules.fell_missed(doc, spec, outcome)[-counted:]
    why = {when: f"missed: it fell due while the run of {format_date(spec.date)} waited to "
                 f"start (catch-up {spec.policy}: that one run stands for them)"
           for when in fell}
    return missed_records(doc, spec, fell, why, me, now)


def end_detached(doc: dict, spec: rules.Spec, token: str, outcome: rules.Outcome,
                 me: Identity, now: datetime, dead: Callable[[str], bool], *,
                 trace: str | None = None, response: dict | None = None) -> Write:
    """A detached run of ours ended (``doc``: the task as its start wrote it): its outcome
    into the task, its record; and the detached runs of processes found dead, recorded
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
                 token=token, detached=True)


def take_over(doc: dict, spec: rules.Spec, owner: str | None, me: Identity,
              now: datetime, intent: dict | None = None) -> Write:
    """The process running ``doc`` is gone: its run was interrupted; the task is run again
    (at least once), here, now. ``intent``: that run's intent, which its record replaces."""
    info = rules.info(doc)
    try:
        started = parse_date(info.get("started", format_date(now)), "after.started")
    except ValueError:
        started = now
    outcome = rules.Outcome(rules.INTERRUPTED, started, now,
                            error=f"interrupted: worker process {owner} stopped")
    finished = rules.finish(doc, spec, outcome, now)
    if finished["status"] == rules.SCHEDULED:  # run again, now
        finished[rules.NS].update(owner=me.process, due=format_date(now))
    last = rules.info(finished).get("last_run") or {}
    if isinstance(last.get("error"), str) and last["error"] != outcome.error:
        # not run again (interrupted too often): the record says why, as the task does
        outcome = replace(outcome, error=last["error"])
    run = run_record(doc, spec, outcome, me, owner=owner, token=info.get("token")
                     if isinstance(info.get("token"), str) else None)
    if intent is not None:  # written over the run's intent (the same id, when it has a token)
        run.update(_id=intent["_id"], _rev=intent.get("_rev"))
    return Write(Kind.FINISH, finished, outcome=outcome, run=run, spec=spec, takeover=True)


def hand_back(doc: dict) -> Write:
    """A run shown ``running`` that will not go on here (not begun, or cut by a stop):
    the task ``waiting`` again, the attempt counted back."""
    return Write(Kind.HANDBACK, rules.hand_back(rules.unfence(doc)))


def resolutions(doc: dict) -> list[Write]:
    """Concurrent writes on a cluster (or replication) left conflicting revisions: keep the
    revision CouchDB picked as the winner (every node picks the same) and delete the others.
    Takes ``_conflicts`` off ``doc``."""
    losers = doc.pop("_conflicts", None)
    return [Write(Kind.RESOLVE, {"_id": doc["_id"], "_rev": rev, "_deleted": True})
            for rev in losers or ()]


def refinish(write: Write, fresh: dict, me: Identity, now: datetime) -> list[Write] | None:
    """Our FINISH conflicted: apply its outcome to the current version ``fresh``, unless
    another process has taken the run over (then only the run is recorded: ``[]``). None:
    decide on ``fresh`` again."""
    if write.detached:  # into whatever the task has become
        new = overlap.end(fresh, write.token, write.outcome)
        if new is None:
            return []
        return [Write(Kind.FINISH, new, outcome=write.outcome, run=write.run, spec=write.spec,
                      skipped=write.skipped, token=write.token, detached=True)]
    info = rules.info(fresh)
    if fresh.get("worker") != me.name:
        return []  # moved to another worker name meanwhile: theirs now, only the record
    if write.takeover and (fresh.get("status") != rules.RUNNING or not same_run(fresh, write)):
        return None  # no longer the run taken over: another process took it over first
    number = (write.run or {}).get("number")
    if not write.takeover and (
            fresh.get("status") == rules.RUNNING and info.get("owner") not in (None, me.process)
            or write.outcome is not None and write.outcome.outcome not in (
                rules.MISSED, rules.SKIPPED) and isinstance(number, int)
            and rules.counter(info, "runs") >= number):
        return []  # another process took our run over (and may have ended it): record only
    if write.outcome is not None and write.outcome.outcome in (rules.MISSED, rules.SKIPPED) \
            and fresh.get("status") not in rules.RUNNABLE:
        return None  # canceled, paused or finished meanwhile: nothing to record
    base = carry(fresh, write.begun, me.process) if write.begun is not None else fresh
    new = rules.finish(base, write.spec, write.outcome, now)
    if write.takeover and new["status"] == rules.SCHEDULED:
        new[rules.NS]["owner"] = me.process
        new[rules.NS]["due"] = format_date(now)
    return [Write(Kind.FINISH, new, outcome=write.outcome, run=write.run, spec=write.spec,
                  takeover=write.takeover, token=write.token)]


def same_run(fresh: dict, write: Write) -> bool:
    """Is ``fresh`` still running the run that ``write`` (a takeover) ended: the same
    owner, the same run number? Two processes that found its owner dead at once both write
    a takeover; the one that conflicts may re-read the task already started again by the
    other, and must leave it alone."""
    info = rules.info(fresh)
    number = rules.counter(info, "run") or rules.counter(info, "runs") + 1
    return write.run is not None and info.get("owner") == write.run.get("process") \
        and number == write.run.get("number")


def skipped_records(doc: dict, finished: dict, spec: rules.Spec, outcome: rules.Outcome,
                    me: Identity) -> list[dict]:
    """The ``skipped`` run records of the occurrences :func:`after.rules.task.overlapped` found,
    when ``finished`` counted them (not when the run is retried, or the user's word won)."""
    counted = rules.counter(rules.info(finished), "skipped") - rules.counter(
        rules.info(doc), "skipped")
    if counted <= 0:
        return []
    skipped, _buffered = rules.overlapped(doc, spec, outcome)
    info = rules.meta(dict(doc))
    number = rules.counter(info, "run") or rules.counter(info, "runs") + 1
    return [{
        "_id": f"{doc['_id']}#{number:08d}#s{when.timestamp() * 1000:.0f}",
        "type": "run", "task": doc["_id"], "number": number, "worker": me.name,
        "process": me.process, "host": me.host, "pid": me.pid, "job": spec.job,
        "scheduled": format_date(when), "started": format_date(when),
        "ended": format_date(when), "duration_ms": 0, "outcome": rules.SKIPPED,
        "error": {"message": f"skipped: run {number} of this task was still going "
                             f"(overlap {spec.overlap})"},
    } for when in skipped[:counted]]


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


def record_id(docid: str, number: int, process: str, token: str) -> str:
    """A run record's id: the task, the run number, and a suffix of the process and the
    run's token, or of its start when it has none (two processes may both record a run
    numbered the same: the first interrupted). Known before the run begins: its intent
    (:mod:`after.worker.intents`) is written under it, and its record over it. A token that
    ends ``/K`` (a run made ready ahead, its task made ready K times before for that run)
    gives the suffix of the process and K alone: a successor computes the ids of a dead
    process's intents without knowing its tokens (:func:`after.worker.intents.expected`)."""
    _, slash, rearms = token.rpartition("/")
    seed = f"{process}|#{rearms}" if slash else f"{process}|{token}"
    suffix = hashlib.blake2b(seed.encode(), digest_size=3).hexdigest()
    return f"{docid}#{number:08d}#{suffix}"


def run_record(doc: dict, spec: rules.Spec | None, outcome: rules.Outcome, me: Identity, *,
               owner: str | None = None, trace: str | None = None,
               response: dict | None = None, token: str | None = None) -> dict:
    """The record of one run (``<db>_runs``), for ``after runs ID``; ``token``: the run's,
    whose intent it is written over."""
    info = rules.meta(dict(doc))
    number = rules.counter(info, "run") or rules.counter(info, "runs") + 1
    process = owner or me.process
    record = {
        "_id": record_id(doc["_id"], number, process, token or format_date(outcome.started)),
        "type": "run",
        "task": doc["_id"],
        "number": number,
        "attempt": rules.counter(info, "attempt") or 1,
        "worker": me.name,
        "process": process,
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


def from_due_ms(due_ms: int) -> datetime:
    return from_ms(due_ms)


#: What a run writes under ``after`` when it is shown ``running`` (see :func:`carry`).
RUN_FIELDS = ("owner", "attempt", "started", "run", "due", "claimed", "date", "next_run",
              "token")


def taken_over(newer: dict, started: dict, me: str) -> bool:
    """Does ``newer``, a version of a task whose run ``started`` goes in process ``me``,
    show the run taken over by another process (this one having been found dead: frozen or
    cut off past its lease)? Shown ``running`` under another process, or having counted a
    run numbered as this one or later. (A partition passed on to a new owner is not that:
    the new owner leaves a run going to its process, and writes nothing.)"""
    info = rules.info(newer)
    return newer.get("status") == rules.RUNNING and info.get("owner") not in (None, me) \
        or rules.counter(info, "runs") >= rules.counter(rules.info(started), "run") > 0


def carry(newer: dict, started: dict, me: str) -> dict:
    """A newer version of a task whose run is going here, as the run's end must see it: the
    other writer's word (its status, its fields) with the run's own (owner, attempt,
    start). A version shown ``running`` under another process, or one that counted a run
    numbered as this one or later (another process took the run over) is not carried: the
    end's write then conflicts, and only the run is recorded."""
    info = rules.info(newer)
    if taken_over(newer, started, me):
        return started  # taken over (and maybe run again): not this run's any more
    new = dict(newer)
    ns = new[rules.NS] = dict(info)
    ours = rules.info(started)
    if new.get("status") in (rules.WAITING, rules.SCHEDULED) and not info.get("started"):
        # the status a run not shown running leaves in the database: not the writer's word
        # (a ``waiting`` written over a run shown running is: run it again after)
        new["status"] = started.get("status", rules.RUNNING)
    ns.update({key: ours[key] for key in RUN_FIELDS if key in ours})
    return new
