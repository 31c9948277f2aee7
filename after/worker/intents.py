"""A run's intent: written in ``<db>_runs`` before the run begins, so that a process that dies
leaves word of the runs it may have begun. Pure.

Nothing is written to a task between the timer and its job, so the task itself cannot say
that its run began. The intent does, in the runs database (no validation to run: several
times cheaper than a task write on CouchDB), under the id the run's record will have
(:func:`after.worker.runs.record_id`): written when the task is held on the timer (within
the horizon, so a burst's intents go out as its tasks come in, not all at its instant), and
the run begins only once it landed. Its record is written over it when the run ends; a run
that will not begin after all (canceled, rescheduled, its partition given up) has its
intent deleted. An intent's outcome is ``intended``: readers of runs leave it out.

An intent's id is derived from its task, its run number, its process and the times that
process made the run ready before (:func:`expected`): a successor computes it.

When a process takes over a partition whose owner died (:mod:`after.worker.partitions`), it
reads the dead process's intents still open (``"outcome": "intended"``: a query, and by id
for each task then due, see :func:`after.worker.leases.probes`) and decides each
(:func:`orphan`): a run due before now, of an occurrence the task has not counted, may have
begun: it was interrupted (recorded so, over its intent) and the task runs again, in a child
process of its own (a job may be what ended the process: it takes down no second one), as
:func:`after.worker.runs.take_over` does for a run shown ``running``. Intents of runs that
were not due yet, or of tasks that moved on, are deleted; one whose run was counted (the
process died between its task's write and its record's) becomes that record.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from after.rules import task as rules
from after.rules.dates import format_date, parse_date
from after.worker.runs import Identity, Kind, Write, occurrence_fields, record_id, take_over

INTENDED = rules.INTENDED  # an intent's outcome until its run's record is written over it


def intent(started: dict, spec: rules.Spec, me: Identity, token: str, due: datetime,
           now: datetime | None = None) -> dict:
    """The intent of the run ``token`` of the task as that run sees it (``started``), due
    at ``due``, made ready at ``now``: its ``started`` is the earliest the run may begin (its
    instant, or when it was made ready if that is later: a task held overdue, say handed
    back by a stop that cut its run past the grace). A successor records the run from it."""
    info = rules.info(started)
    number = rules.counter(info, "run") or rules.counter(info, "runs") + 1
    return {
        "_id": record_id(started["_id"], number, me.process, token),
        "type": "run",
        "task": started["_id"],
        "number": number,
        "attempt": rules.counter(info, "attempt") or 1,
        "worker": me.name,
        "process": me.process,
        "host": me.host,
        "pid": me.pid,
        "job": spec.job,
        "scheduled": format_date(due),
        **occurrence_fields(spec),
        "started": format_date(max(due, now) if now is not None else due),
        "outcome": INTENDED,
        "token": token,
    }


#: Times a run may be made ready anew (a newer version of its task came while it was held)
#: and still have its intent found by id (:func:`expected`); one made ready more often than
#: that is found by the query of open intents alone.
REARMS = 4


def expected(docid: str, number: int, process: str) -> list[str]:
    """The ids the intent of run ``number`` of ``docid`` has if ``process`` wrote it (the
    run's token says how many times the run was made ready before, up to :data:`REARMS`; the
    id is derived from that count: :func:`after.worker.runs.record_id`). Read by id, each is
    a quorum read on a cluster, where a query (``_find``) reads one copy of each range, which
    may be one that lags (its node just came back)."""
    return [record_id(docid, number, process, f"/{k}") for k in range(REARMS)]


def write(doc: dict, token: str) -> Write:
    return Write(Kind.INTENT, doc, token=token)


def withdraw(doc: dict, token: str | None = None) -> Write:
    """Delete an intent (its ``_id`` and ``_rev``): its run will not begin."""
    return Write(Kind.UNINTENT, {"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True},
                 token=token)


#: Seconds allowed between two processes' clocks (each the server's, as each estimates it)
#: when an intent's instant is weighed against the end of its dead process's lease.
SKEW = 1.0


def begun_after(last: dict, expires: datetime | None) -> bool:
    """Did the run ``last`` (a task's ``last_run``) begin after ``expires`` (by more than
    :data:`SKEW`), when the process whose lease ended then could not have begun it?"""
    try:
        started = parse_date(last.get("started"), "started")
    except ValueError:
        return False
    return expires is not None and started > expires + timedelta(seconds=SKEW)


def scheduled(found: dict) -> datetime | None:
    """The instant the run of intent ``found`` was due (None: unreadable)."""
    try:
        return parse_date(found.get("scheduled"), "scheduled")
    except ValueError:
        return None


def was_due(found: dict, now: datetime) -> bool:
    """Was the run of intent ``found`` due by ``now`` (so that it may have begun)?"""
    due = scheduled(found)
    return due is not None and due <= now


def interrupted(found: dict, now: datetime, why: str) -> Write:
    """The record, over intent ``found``, of a run that may have begun: ``interrupted``,
    the task left as it is (``why``)."""
    return Write(Kind.INTENT, {**found, "outcome": rules.INTERRUPTED, "ended": format_date(now),
                               "error": {"message": f"interrupted: worker process "
                                                    f"{found.get('process')} stopped ({why})"}})


def orphan(found: dict, task: dict | None, me: Identity, now: datetime,
           expires: datetime | None = None) -> list[Write]:
    """What to do about ``found``, an open intent of a process found dead, whose task is
    ``task`` now (None: deleted): the writes that follow (the task's, the record's).
    ``expires``: when the dead process's last heartbeat said its lease ends; it begins no
    run after that (its job threads check the lease first), so an intent due later (by
    :data:`SKEW` at least) was never begun: withdrawn, not recorded interrupted. An intent is
    written when its task is held, long before its instant: a process killed while it held
    thousands of tasks leaves that many intents, none of them a run."""
    due = scheduled(found)
    if due is None:
        return [withdraw(found)]
    number = found.get("number")
    if task is None or task.get("worker") != me.name or not isinstance(number, int):
        return [withdraw(found)]  # gone, or another name's now: nothing to do here
    info = rules.info(task)
    if rules.counter(info, "runs") >= number:  # its run was counted: only its record is due
        last = info.get("last_run") if isinstance(info.get("last_run"), dict) else {}
        other = isinstance(last.get("token"), str) and last["token"] != found.get("token")
        if last.get("number") != number or other or begun_after(last, expires):
            # another run of that number (another process's: it took the task over when
            # this one's lease ran out, or was given its partition while this one lived and
            # then froze before its intent's withdrawal; or this process's own, made ready
            # anew under another token): this intent's run never began (chaos seed 27 on
            # the cluster, 2026-12-07: a second record of a run the job's history showed
            # once)
            return [withdraw(found)]
        record = {**found, **{k: v for k, v in last.items() if k != "number"},
                  "outcome": last.get("outcome"), "recovered": True}
        if isinstance(record.get("error"), str):  # a record's error, as the runner writes it
            record["error"] = {"message": record["error"]}
        record.pop("token", None)
        return [Write(Kind.INTENT, record)]
    if due > now or task.get("status") not in rules.RUNNABLE:
        return [withdraw(found)]  # not due yet, or canceled, paused, finished: not begun
    if expires is not None and due > expires + timedelta(seconds=SKEW):
        return [withdraw(found)]  # due after its process's lease ended: never begun
    try:
        spec = rules.parse(task)
    except rules.TaskError:
        return [withdraw(found)]  # the worker marks it error when it decides it
    if found.get("occurrence") not in (None, spec.occurrence_id) \
            and task.get("status") != rules.RUNNING:
        # the task is at another occurrence now (moved by someone else's write): the run
        # may have begun all the same; recorded so, and the task left to go on from there
        return [interrupted(found, now, "the task has moved on since")]
    owner = found.get("process")
    if task.get("status") == rules.RUNNING and info.get("owner") != owner:
        # another process runs it now (it took the task over, or began it as its own): the
        # run of this intent may have begun; recorded so, and the task left to that process
        # (chaos seed 565746910: taken over under a live run, it ran twice)
        return [interrupted(found, now, "another process runs the task now")]
    if task.get("status") == rules.RUNNING and info.get("owner") == owner \
            and rules.counter(info, "run") == number:
        began = task  # shown running: as its process wrote it (attempt counted once)
    else:  # begun, if at all, no earlier than it was made ready (the intent says when)
        try:
            earliest = max(due, parse_date(found.get("started"), "started"))
        except ValueError:
            earliest = due
        began = rules.start(rules.claim(task, owner, due, now), owner, earliest, number)
        began[rules.NS]["token"] = found.get("token")
    return [take_over(began, spec, owner, me, now, intent=found)]
