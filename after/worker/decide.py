"""What a worker process does about a task, and about the answer to a write: pure.

:func:`decide` takes the current version of a task document, a :class:`View` of what this
process knows (the partitions it owns, the runs it has going, which processes are alive) and
``now``, and returns the actions that follow. :func:`settle` takes a write and the answer to
it and returns the same kind of actions. Data in, data out: nothing here does I/O, reads the
clock, makes random ids or logs; what should be logged comes back as :class:`Note` s, and the
loop (:mod:`after.worker.loop`) carries everything out. The transitions themselves are those
of :mod:`after.rules.task` and :mod:`after.worker.runs`.

A task is this process's to run when its partition is (:mod:`after.worker.partitions`):
then it is held on the timer until its occurrence, and run then with no write in between.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import datetime

from after.rules import task as rules
from after.rules.dates import to_ms
from after.rules.redact import redact_text
from after.worker import runs as r
from after.worker.partitions import partition_of
from after.worker.runs import Identity, Kind, Write
from after.worker.writer import Answer


@dataclass(frozen=True)
class View:
    """What :func:`decide` may know besides the document: a snapshot, plain data."""

    me: Identity
    horizon_ms: int  # hold what is due within this many milliseconds
    owned: frozenset[int] = frozenset()  # partitions this process owns
    running: AbstractSet[str] = frozenset()  # tasks this process has a run of (in the task)
    live: frozenset[str] = frozenset()  # processes known alive
    dead: frozenset[str] = frozenset()  # processes known dead
    job_errors: Mapping[str, str] = field(default_factory=dict)  # job -> why it cannot run
    # debounced tasks: id -> (revision, when this process first saw it, epoch ms)
    versions: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    paused: bool = False  # this process's worker name is paused: as if down, it writes no
    # catch-up (its tasks are caught up once, by their policy, when the name resumes)


@dataclass
class Hold:
    """Hold the task on the timer until ``due_ms`` (epoch ms)."""

    doc: dict
    spec: rules.Spec
    due_ms: int


@dataclass
class Drop:
    """Forget a task held on the timer or waiting for room (a run of it goes on)."""

    docid: str


@dataclass
class Keep:
    """A newer version of a task this process runs: its run's end is written on it."""

    doc: dict


@dataclass
class Ask:
    """Whether ``owner`` is alive decides this task: read its heartbeat, then decide again."""

    owner: str
    doc: dict


@dataclass
class Shown:
    """A run's ``running`` was written: the run's task is ``doc`` now."""

    token: str
    doc: dict


@dataclass
class Begin:
    """The start of a detached (``overlap: allow``) run was written: begin its job."""

    token: str
    doc: dict


@dataclass
class Over:
    """A run's end was written (or given up): its records go out, it is forgotten."""

    docid: str
    token: str | None
    records: list[dict]
    outcome: rules.Outcome | None = None
    job: str | None = None
    detached: bool = False


@dataclass
class Note:
    """A line for the log."""

    level: str  # "info", "warning", "error"
    message: str


Action = Write | Hold | Drop | Keep | Ask | Shown | Begin | Over | Note

ALIVE, DEAD, UNKNOWN = "alive", "dead", "unknown"


def liveness(owner, view: View) -> str:
    """Is the process ``owner`` alive, as far as the view tells?"""
    if owner == view.me.process:
        return ALIVE
    if not isinstance(owner, str) or not owner:
        return DEAD  # no process is named so (a user's write)
    if owner in view.dead:
        return DEAD
    if owner in view.live:
        return ALIVE
    return UNKNOWN


# Over 60 lines on purpose: one status after another, so that every decision about a task's
# current version reads in one place, in the order of the state machine.
def decide(doc: dict, view: View, now: datetime) -> list[Action]:
    """The actions that follow from the current version of a task document."""
    docid = doc.get("_id", "")
    if not isinstance(docid, str) or docid.startswith("_design/"):
        return []
    if doc.get("_deleted") or doc.get("worker") != view.me.name:
        return [Drop(docid)]
    mine = partition_of(docid) in view.owned
    losers: list[Action] = list(r.resolutions(doc)) if mine else []
    if docid in view.running:
        return [*losers, Keep(doc)]  # applied when the run ends
    if not mine:
        return [Drop(docid)]
    status = doc.get("status")
    info = rules.info(doc)
    owner = rules.owner(info)
    if status in rules.FINISHED:
        return [*losers, Drop(docid)]
    elsewhere = bool(info.get("started")) and owner != view.me.process
    if elsewhere and status in (rules.RUNNING, rules.CANCEL, rules.RESCHEDULE, rules.WAITING,
                                rules.PAUSED):
        # A run going in another process (shown ``running``), or a user's word over one:
        # that process applies it when its run ends; if it is gone, the run was cut short.
        life = liveness(owner, view)
        if life == UNKNOWN:
            return [*losers, Drop(docid), Ask(owner, doc)]
        if life == ALIVE:
            return [*losers, Drop(docid)]
    if status == rules.CANCEL:
        return [*losers, Drop(docid), Write(Kind.CANCEL, rules.cancel(doc, now))]
    if status == rules.PAUSED:
        if "paused" not in info:  # a plain pause: stamped, so that a plain resume is one
            return [*losers, Drop(docid), Write(Kind.STAMP, rules.stamp_pause(doc, now))]
        return [*losers, Drop(docid)]
    try:
        spec = rules.parse(doc)
        problem = view.job_errors.get(spec.job)
        if problem is not None:
            raise rules.TaskError(problem)
    except rules.TaskError as exc:
        message = redact_text(str(exc))
        return [*losers, Drop(docid), Note("warning", f"task {docid} cannot run: {message}"),
                Write(Kind.ERROR, rules.mark_error(doc, message, now))]
    if status == rules.RUNNING:
        # Shown running with no run of this process behind it: its process died (or this
        # one lost the run, or its end's write), so the run was cut short: run it again.
        return [*losers, Drop(docid),
                Note("warning", f"task {docid} was running on {owner}, which stopped: "
                                "running it again"),
                r.take_over(doc, spec, owner, view.me, now)]
    if status == rules.WAITING and "paused" in info:  # resumed by a plain write
        return [*losers, Drop(docid), Write(Kind.RESUME, rules.resume(doc, spec, now))]
    caught = (r.catch_up(doc, spec, view.me, now)
              if status == rules.WAITING and not view.paused else None)
    if caught is not None:  # its date passed while no worker ran it: its catch-up policy
        return [*losers, Drop(docid), Note("warning", r.caught_up(caught, now)), caught]
    moved = status in (rules.WAITING, rules.RESCHEDULE) or rules.date_moved(doc)
    due = spec.due if moved else r.due_of(info, spec)
    if spec.debounce is not None and status == rules.WAITING:
        due = r.debounced(due, spec.debounce, view.versions.get(docid), doc.get("_rev"), now)
    if to_ms(due) > to_ms(now) + view.horizon_ms:
        if status == rules.RESCHEDULE or status == rules.SCHEDULED and rules.date_moved(doc):
            return [*losers, Drop(docid), Write(Kind.PARK, rules.hand_back(doc))]
        return [*losers, Drop(docid)]
    return [*losers, Hold(doc, spec, to_ms(due))]


def settle(write: Write, answer: Answer, view: View, now: datetime) -> list[Action]:
    """The actions that follow from the answer to ``write``."""
    docid = write.docid
    if write.kind is Kind.RESOLVE:
        return []  # done, or someone resolved it first
    if answer.refused is not None:
        note = Note("warning", f"task {docid}: {write.kind.value} write refused: "
                               f"{answer.refused}")
        if write.kind is Kind.ERROR:
            return [Note("error", f"task {docid}: even its error was refused: "
                                  f"{answer.refused}"), Drop(docid)]
        return [note, *_over(write), Drop(docid),
                Write(Kind.ERROR, rules.mark_error(write.doc, answer.refused, now))]
    if answer.failed is not None:  # decided again from the database, at the next poll
        return [*_over(write), Drop(docid)]
    if answer.conflict:
        return _conflicted(write, answer.fresh, view, now)
    doc = write.doc
    if write.kind is Kind.VISIBLE:
        return [Shown(write.token, doc)]
    if write.kind is Kind.CATCHUP:  # the occurrences passed are recorded; then on from there
        return [Over(docid, None, write.skipped or [], write.outcome, write.spec.job),
                *decide(doc, view, now)]
    if write.kind is Kind.DETACH:
        return [Begin(write.token, doc), *decide(doc, _without(view, docid), now)]
    if write.kind is Kind.FINISH:
        return [*_over(write), *([] if write.detached else
                                 decide(doc, _without(view, docid), now))]
    return decide(doc, view, now)


def _conflicted(write: Write, fresh: dict | None, view: View, now: datetime
                ) -> list[Action]:
    docid = write.docid
    if write.kind is Kind.VISIBLE:
        return [] if fresh is None else [Keep(fresh)]  # the run goes on; its end applies it
    if write.kind is Kind.FINISH:
        if fresh is None:  # deleted meanwhile: the run is recorded all the same
            return [*_over(write), Drop(docid)]
        again = r.refinish(write, fresh, view.me, now)
        if again == []:  # another process took the run over: only the record
            return [*_over(write), *decide(fresh, _without(view, docid), now)]
        if again:
            return list(again)
        # no longer the run it ended (a takeover another process made first): nothing
        return [Over(docid, write.token, [], detached=write.detached),
                *decide(fresh, _without(view, docid), now)]
    if write.kind is Kind.DETACH:  # not begun: the task decided again as it is now
        return [Over(docid, write.token, [], detached=True),
                *([] if fresh is None else decide(fresh, view, now))]
    if fresh is None:
        return [Drop(docid)]
    return decide(fresh, view, now)


def _over(write: Write) -> list[Action]:
    """A write that ends a run (a FINISH), answered: the run is over, whatever became of
    the write, and its records go out; nothing for the other writes."""
    if write.kind is not Kind.FINISH:
        return []
    records = ([write.run] if write.run is not None else []) + (write.skipped or [])
    return [Over(write.docid, write.token, records, write.outcome,
                 write.spec.job if write.spec else None, write.detached)]


class _Except(AbstractSet):
    """``tasks`` but ``docid``: a view, not a copy."""

    def __init__(self, tasks: AbstractSet[str], docid: str):
        self.tasks, self.docid = tasks, docid

    def __contains__(self, item) -> bool:
        return item != self.docid and item in self.tasks

    def __iter__(self):
        return (item for item in self.tasks if item != self.docid)

    def __len__(self) -> int:
        return len(self.tasks) - (self.docid in self.tasks)


def _without(view: View, docid: str) -> View:
    return replace(view, running=_Except(view.running, docid)) if docid in view.running \
        else view
