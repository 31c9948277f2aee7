"""What one worker process holds: the loop's state, in one object that the loop alone owns.

:class:`State` is every field the loop reads and changes: the tasks held on the timer, the
runs going, the line of due tasks waiting for room, the writes in flight, the partitions owned,
what the last read of the registry said. No other thread reads or writes it: the others
post to the loop's inbox, and read only :attr:`State.published` (a dict replaced whole at
the end of each turn: the heartbeat's status, the dashboard's, the metrics') and
:attr:`State.peers` (the gates' thread: who is dead, who owns each partition).
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime

from after.jobs import TaskContext
from after.rules import task as rules

SEEN_LIMIT = 100_000  # task revisions remembered to ignore stale feed events


@dataclass(slots=True)
class Run:
    """A run this process launched: queued for a job thread, or going."""

    docid: str
    token: str
    # the task as the run sees it (``running``), at the revision its end is written on (None
    # until ARM_AHEAD before the instant of a run made ready ahead: after.worker.running.arm)
    doc: dict | None
    spec: rules.Spec
    due_ms: int
    detached: bool = False  # an ``overlap: allow`` run, apart from its task
    visible: bool = False  # written ``running`` (it went on for a while, or a handover)
    started: datetime | None = None
    deadline_ms: int | None = None
    lateness: float = 0.0  # seconds from the due instant to the launch
    context: TaskContext | None = None
    # the run ended, its end not written yet (waiting in State.ends, or for a write of its
    # task in flight): (outcome, trace, response)
    ended: tuple | None = None
    timed_out: bool = False
    cancel_ms: int | None = None  # a cancel came while it ran: ended canceled by then at most
    # another process took it over (this one was found dead): told to stop like a canceled
    # run, and recorded ``interrupted`` (running.fence)
    fenced: bool = False
    intent: dict | None = None  # its intent in <db>_runs (after.worker.intents)
    landed: bool = False  # the intent is written: the run may begin


@dataclass(slots=True)
class Held:
    """A task of one of this process's partitions, on the timer until its occurrence."""

    doc: dict
    spec: rules.Spec
    due_ms: int
    armed: Run | None = None  # its run, made ready ahead of the instant (what the job sees)
    fired: bool = False  # its instant came: it runs as soon as its intent is written
    rank: tuple = (0, 0)  # its place in line (see rank)
    # read back by id (a quorum read on a cluster) and found current: the version held is
    # not a lagging copy's (a copy whose node just came back may show a task done since as
    # still waiting)
    confirmed: bool = False
    rearms: int = 0  # times its run was made ready before, by this process (a newer version)


class Seen(OrderedDict):
    """The newest revision number seen or written of each task (a bounded LRU)."""

    def newer(self, doc: dict, recheck: bool = False) -> bool:
        """Remember ``doc``'s revision; False for one older than what this process saw or
        wrote, or the same one unless ``recheck``."""
        docid, number = doc["_id"], rules.rev_number(doc.get("_rev"))
        known = self.get(docid, 0)
        if number < known or (number == known and not recheck):
            return False
        self.saw(docid, number)
        return True

    def saw(self, docid: str, number: int) -> None:
        self[docid] = max(number, self.pop(docid, 0))
        if len(self) > SEEN_LIMIT:
            self.popitem(last=False)


def rank(doc: dict, due_ms: int) -> tuple[int, int]:
    """Where a due task stands in line for a job thread (and its timer among those firing
    at once): the highest ``priority`` first, then the earliest due."""
    return (-rules.priority_of(doc), due_ms)


class Line:
    """Due tasks waiting for room (a job thread, the queue in front of them), the highest
    ``priority`` first, then the earliest due: a heap; an entry whose rank is no longer its
    task's is skipped."""

    def __init__(self):
        self.waiting: dict[str, tuple] = {}
        self._heap: list[tuple] = []
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self.waiting)

    def __contains__(self, docid: str) -> bool:
        return docid in self.waiting

    def add(self, docid: str, rank: tuple) -> None:
        self.waiting[docid] = rank
        heapq.heappush(self._heap, (rank, next(self._arrivals), docid))

    def remove(self, docid: str) -> None:
        self.waiting.pop(docid, None)

    def pop(self) -> str | None:
        while self._heap:
            rank, _, docid = heapq.heappop(self._heap)
            if self.waiting.get(docid) == rank:
                del self.waiting[docid]
                return docid
        self.waiting.clear()
        return None

    def clear(self) -> None:
        self.waiting.clear()
        self._heap.clear()


@dataclass
class State:
    """The loop's state. Fields only; the loop (:mod:`after.worker.loop`) changes them."""

    held: dict[str, Held] = field(default_factory=dict)  # on the timer
    runs: dict[str, Run] = field(default_factory=dict)  # by task id (one run per task)
    detached: dict[str, Run] = field(default_factory=dict)  # overlap-allow runs, by token
    tokens_of: dict[str, str] = field(default_factory=dict)  # run token -> task id
    timed: set[str] = field(default_factory=set)  # tokens of the runs with a timeout
    line: Line = field(default_factory=Line)  # due, waiting for room
    gated: dict[str, int] = field(default_factory=dict)  # due, waiting for a gate: id -> due
    inflight: dict[str, object] = field(default_factory=dict)  # id -> the write sent
    parked: dict[str, dict] = field(default_factory=dict)  # newest doc seen meanwhile
    outbox: dict[str, list] = field(default_factory=dict)  # writes decided, by task id
    intent_out: list = field(default_factory=list)  # intents to write (after.worker.intents)
    ends: list = field(default_factory=list)  # (run, since): ended, its end to write
    to_show: deque = field(default_factory=deque)  # (monotonic, token): to show running
    # partition taken -> the dead processes whose open intents are being read for it
    checking: dict[int, tuple] = field(default_factory=dict)
    waiting_check: dict[str, dict] = field(default_factory=dict)  # decided once checked
    # partition taken from dead processes -> (those processes, when taken, epoch ms): their
    # intents of its tasks then due are read by id too (after.worker.leases.probes)
    inherited: dict[int, tuple[tuple, int]] = field(default_factory=dict)
    decided: set = field(default_factory=set)  # (id, rev) of the dead's intents decided
    seen: Seen = field(default_factory=Seen)
    # tasks with a ``debounce``: id -> (revision, when first seen, epoch ms) (after.worker.runs)
    versions: dict[str, tuple[str, int]] = field(default_factory=dict)
    verify: dict[str, str] = field(default_factory=dict)  # to read back: id -> revision
    # a decision that writes, on a version not read back yet: id -> that version, decided
    # again once read back and found current (after.worker.carrying.changed)
    unconfirmed: dict[str, dict] = field(default_factory=dict)
    # a read back that could not confirm (a read that failed, a copy not there yet): read
    # again REREAD seconds later (the timer's AGAIN), not at once
    reread: dict[str, str] = field(default_factory=dict)
    asked: dict[str, list[dict]] = field(default_factory=dict)  # owner -> tasks to decide
    owned: set[int] = field(default_factory=set)  # partitions this process owns
    giving: set[int] = field(default_factory=set)  # partitions being given up
    parts_pending: bool = False  # a write of partition leases is out
    # since when (monotonic) it waits for partitions of its own that a live process is to
    # give up (None: it waits for none): the registry is read again until then
    awaiting: float | None = None
    joined: float | None = None  # when (monotonic) it first read the registry
    parts: dict[int, dict] = field(default_factory=dict)  # lease documents, as last read
    live: frozenset[str] = frozenset()
    dead: frozenset[str] = frozenset()
    known: dict[str, bool] = field(default_factory=dict)  # owners of other names: alive?
    paused: bool = False
    registry_read: bool = False  # a first read of the registry came
    degraded: bool = False  # the cluster answers 202: no partition taken or given up
    leaving: frozenset = frozenset()  # live processes stopping: no partition is theirs
    beat_sent: float | None = None  # monotonic: the last heartbeat that landed was sent
    lapses: int = 0  # heartbeats that landed after this process's lease may have lapsed
    lapses_seen: int = 0
    away_until: float = 0.0  # back from a lapse of its lease: takes nothing until then
    feed_lost: bool = False
    polling: bool = False  # the poller started (once the partitions were first taken)
    next_check: float = 0.0  # monotonic: the next self-check (after.worker.check)
    suspects: set = field(default_factory=set)  # what the last self-check found
    tokens: itertools.count = field(default_factory=itertools.count)
    counts: dict[str, int] = field(default_factory=lambda: {
        "runs": 0, "done": 0, "failed": 0, "missed": 0, "canceled": 0, "faults": 0,
        "corrected": 0,
        "handed_back": 0, "partitions": 0})
    published: dict = field(default_factory=dict)  # read by other threads; replaced whole
    # (the heartbeat's status); and what the gates' thread reads: who is dead, and the owner
    # of each partition (after.worker.gates.GateKeeper.of), replaced whole as they change
    # (after.worker.leases.share)
    peers: tuple[frozenset, dict] = (frozenset(), {})
