"""The processes of one worker name: heartbeats, leases and partitions, on a thread of their own.

Each process writes a heartbeat document (``<db>_workers``, id ``name@host:pid:token``) every
``--heartbeat`` seconds: that is the lease on the partitions it owns and the runs it goes on
with. :class:`Peers` is the I/O of it, off the worker's loop: each beat it writes the
heartbeat, reads the name's registry (the heartbeats, the name's pause document, the
partitions' lease documents, in one request) and posts what it read to the loop as a
:class:`Registry`; it writes the partition leases the loop asks for and posts the answers;
and it reads the heartbeat of a task's owner of another name when asked. The loop decides;
this thread only reads, writes and judges liveness.

Liveness never compares clocks across machines. A heartbeat changes its ``_rev`` at every
beat; a peer is dead when this process has read its heartbeat and found the same revision
it first saw at least ``lease`` seconds before, on this process's own monotonic clock (or
found no heartbeat at all: a graceful stop removes it). A peer seen for the first time gets a
full lease from that moment.

This process's own lease is judged on the heartbeat's own round trip, on a connection of its
own (never behind the loop's writes): :meth:`Peers.sure_until` is the sending of the last
heartbeat that landed, plus a lease, less a beat (another process counts a lease from when it
*reads* the heartbeat changed, which is later). The same thread samples the server's clock
(:mod:`after.couch.clock`).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from after.config import workers_db
from after.couch import pausing
from after.couch.clock import WARN_OFFSET, Offset, date_header
from after.couch.store import Conflict, NotFound, Store, StoreError, describe_error
from after.rules.dates import format_date
from after.worker import partitions as parts

log = logging.getLogger("after.peers")

CALIBRATION = 16  # samples of the server's clock taken at start...
CALIBRATION_GAP = 0.07  # ... this many seconds apart (phases across the server's second)
SAMPLE_EVERY = 10.0  # then one every this many seconds
CONFIRMS = 8  # partition takes read back at once
REREAD = 0.2  # seconds between reads of the registry asked for between beats
PRUNE_AFTER = 300.0  # heartbeats unchanged this long (and 10 leases) are removed


def process_id(name: str) -> str:
    return f"{name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Registry:
    """One read of a worker name's registry, as the loop takes it in."""

    live: frozenset[str]  # processes whose heartbeat changed within a lease
    dead: frozenset[str]  # processes found dead (heartbeat unchanged for a lease, or gone)
    parts: dict[int, dict] = field(default_factory=dict)  # partition -> its lease document
    paused: bool = False
    beat_sent: float | None = None  # monotonic: when the last heartbeat that landed was sent
    lapses: int = 0  # heartbeats that landed after this process's lease may have lapsed
    degraded: bool = False  # the last heartbeat was answered 202: a cluster without a quorum
    leaving: frozenset[str] = frozenset()  # live processes whose heartbeat says stopping


class Peers:
    def __init__(self, store: Store, name: str, *, lease: float, db: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic, margin: float = 1.0):
        self.store = store
        self.name = name
        self.lease = lease
        self.margin = margin  # taken off a lease of this process's own (sure_until)
        self.db = db or workers_db(store.db)
        self.id = process_id(name)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.mono = monotonic
        self.offset = Offset()
        self.started = self.now()
        # what this process read of the others: id -> (revision, when it first saw it, on
        # its monotonic clock); alive ones: id -> until when (monotonic); dead ones: since
        self.observed: dict[str, tuple[str, float]] = {}
        self.live: dict[str, float] = {}
        self.dead: dict[str, float] = {}
        self.stopping: set[str] = set()  # seen saying it stops: gone when its heartbeat is
        self.rev: str | None = None
        self.beat_sent: float | None = None  # when the last heartbeat that landed was sent
        self.lapses = 0  # times a heartbeat landed after this process's lease may have lapsed
        # partition -> the revision of its lease document this process wrote and confirmed
        # its own (answered 201, and read back from every copy with no other claim beside it
        # unless the server keeps one copy: one_copy)
        self.mine: dict[int, str] = {}
        self.one_copy: bool | None = None  # the server keeps one copy (asked at the first take)
        self.degraded = False  # the last heartbeat answered 202 (too few copies of a cluster)
        self.warned_offset = False
        self._asks: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the clock ---------------------------------------------------------------------------

    def clock(self) -> float:
        """Epoch seconds on the server's clock as far as this process can tell."""
        return time.time() + self.offset.correction()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def sample_clock(self) -> None:
        """One sample of the server's clock (blocking: on the peers' thread)."""
        try:
            sent, received, date = self.store.clock_sample()
        except StoreError as exc:
            log.debug("cannot sample the server's clock: %s", describe_error(exc))
            return
        server = date_header(date)
        if server is None:
            return
        self.offset.add(sent, received, server)
        estimate = self.offset.estimate()
        off = self.offset.beyond(WARN_OFFSET) and len(self.offset.samples) >= CALIBRATION
        if off and not self.warned_offset:
            log.warning("this machine's clock is %+.3f s off the database server's: tasks "
                        "fire on the server's time; keep the clocks in sync (NTP)", -estimate)
        self.warned_offset = off

    # -- heartbeats --------------------------------------------------------------------------

    def beat(self, status: dict, *, force: bool = False,
             landed: Callable[[float, int], None] = lambda sent, lapses: None
             ) -> Registry | None:
        """Write this process's heartbeat (``status``: held, running, counts...) and read the
        registry; None when the registry could not be read. When the write fails, logs it
        (``force``: raises)."""
        now = self.now()
        doc = {
            "_id": self.id, "type": "worker", "name": self.name, "host": self.host,
            "pid": self.pid, "started": format_date(self.started),
            "last_seen": format_date(now),
            "expires": format_date(now + timedelta(seconds=self.lease)),
            **status,
        }
        estimate = self.offset.estimate()
        if estimate is not None:  # local - server, as people think of it: + is ahead
            doc["clock_offset"] = -estimate
            doc["clock_off"] = self.offset.beyond(WARN_OFFSET)  # surely: after list warns
        if self.rev:
            doc["_rev"] = self.rev
        sent = self.mono()
        try:
            try:
                answer = self.store.put(doc, db=self.db)
            except Conflict:
                current = self.store.get_or_none(self.id, db=self.db) or {}
                doc["_rev"] = current.get("_rev")
                answer = self.store.put(doc, db=self.db)
        except StoreError as exc:
            if force:
                raise
            log.warning("heartbeat failed: %s", describe_error(exc))
            return self.refresh()
        self.rev = doc["_rev"]
        self.degraded = answer.get("status") == 202
        if sent >= self.sure_until():  # (counted before beat_sent moves: see the loop's lapse)
            self.lapses += self.beat_sent is not None
        self.beat_sent = sent
        landed(sent, self.lapses)  # before the registry is read: the lease is this beat's
        return self.refresh()

    def sure_until(self, margin: float | None = None) -> float:
        """The monotonic instant until which no other process can have found this one dead:
        a lease from the sending of the last heartbeat that landed, less ``margin`` for
        reads that lag."""
        if self.beat_sent is None:
            return float("-inf")
        return self.beat_sent + self.lease - (self.margin if margin is None else margin)

    def leave(self) -> None:
        """Remove this process's heartbeat (a graceful stop: it holds nothing any more)."""
        try:
            if self.rev:
                self.store.delete(self.id, self.rev, db=self.db)
        except StoreError as exc:
            log.warning("cannot remove the heartbeat: %s", describe_error(exc))

    def observe(self, doc: dict | None, owner: str, at: float) -> bool:
        """Take in one read of ``owner``'s heartbeat (None: there is none) at monotonic
        ``at``; returns True when it makes ``owner`` newly dead."""
        if owner == self.id:
            return False
        if doc is None:
            self.stopping.discard(owner)
            self.observed.pop(owner, None)
            self.live.pop(owner, None)
            newly = owner not in self.dead
            self.dead.setdefault(owner, at)
            return newly
        rev = doc.get("_rev", "")
        seen = self.observed.get(owner)
        if seen is None or seen[0] != rev:
            seen = self.observed[owner] = (rev, at)
            self.dead.pop(owner, None)
        if at - seen[1] >= self.lease:
            self.live.pop(owner, None)
            newly = owner not in self.dead
            self.dead.setdefault(owner, at)
            return newly
        self.live[owner] = seen[1] + self.lease
        return False

    def refresh(self) -> Registry | None:
        """Re-read the name's registry: heartbeats, pause, partitions (None when it could
        not be read); removes the heartbeats gone for long."""
        try:
            docs = self.store.prefixed(f"{self.name}@", db=self.db, conflicts=True)
        except StoreError as exc:
            log.warning("cannot read the worker registry: %s", describe_error(exc))
            return None
        at = self.mono()
        newly, stale, present, leaving = [], [], set(), set()
        for doc in docs:
            if doc.get("type") != "worker":  # the name's pause and partition documents
                continue
            present.add(doc["_id"])
            if doc.get("stopping") and doc["_id"] != self.id:
                leaving.add(doc["_id"])
            if self.observe(doc, doc["_id"], at):
                newly.append(doc["_id"])
            seen = self.observed.get(doc["_id"])
            if seen and at - seen[1] >= max(10 * self.lease, PRUNE_AFTER):
                stale.append({"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True})
        for owner in leaving:
            self.stopping.add(owner)
        for gone in [p for p in self.observed if p not in present]:  # left gracefully?
            self.observe(self.missing(gone), gone, at)
        for owner, since in list(self.dead.items()):  # forget the long dead
            if at - since > 3600:
                del self.dead[owner]
        found = parts.parts_of(docs, self.name)
        for doc in found.values():  # a partition's owner never seen beating: gone
            owner = doc.get("owner")
            if isinstance(owner, str) and owner != self.id and owner not in present \
                    and owner not in self.observed and owner not in self.dead:
                self.observe(self.missing(owner), owner, at)
        for k, doc in list(found.items()):
            if doc.get("_conflicts"):
                settled = self.settle(doc)
                if settled is None:
                    continue
                if settled.doc is None:
                    del found[k]
                else:
                    found[k] = settled.doc
        if stale:  # processes long gone (killed, machine lost): drop them from the registry
            try:
                self.store.bulk_docs(stale, db=self.db)
                log.info("pruned %d dead process(es) of %s from the registry", len(stale),
                         self.name)
            except StoreError:
                pass
        if newly:
            log.info("process(es) %s stopped heartbeating for %g s: taking over their work",
                     ", ".join(newly), self.lease)
        return Registry(
            live=frozenset(p for p, until in self.live.items() if until > at) | {self.id},
            dead=frozenset(self.dead), parts=found,
            paused=any(pausing.is_pause(doc, self.name) for doc in docs),
            beat_sent=self.beat_sent, lapses=self.lapses, degraded=self.degraded,
            leaving=frozenset(leaving))

    def missing(self, owner: str) -> dict | None:
        """``owner``'s heartbeat, missing from a read of the registry: gone (None) if it
        said it was stopping, or if every copy says it is deleted or never was. On a
        cluster a read of many documents takes each from one copy, and a copy that lags
        (a node just restarted) may not have a heartbeat yet: read alone, from every copy,
        it is there, and its process is alive. (Taken for dead, a live process's partitions
        were taken from it, each a conflict between nodes to settle.)"""
        if owner in self.stopping:
            return None
        try:
            leaves = self.store.leaves(owner, db=self.db)
        except NotFound:
            return None
        except StoreError as exc:  # as last seen, until a read says otherwise
            log.warning("cannot read the heartbeat of %s: %s", owner, describe_error(exc))
            seen = self.observed.get(owner)
            return {"_id": owner, "_rev": seen[0]} if seen else None
        return parts.winner(leaves)

    def confirm(self, owner: str) -> bool | None:
        """Is ``owner`` (a process of another name, most likely) alive? Reads its heartbeat
        (blocking: on the peers' thread); None when it could not be read."""
        try:
            beat = self.store.get_or_none(owner, db=self.db)
        except StoreError as exc:
            log.warning("cannot read the heartbeat of %s: %s", owner, describe_error(exc))
            return None
        self.observe(beat, owner, self.mono())
        return owner not in self.dead

    def write_parts(self, docs: list[dict]) -> list[dict]:
        """Write partition lease documents (blocking: on the peers' thread); the answers,
        in order (``error`` for each that failed: a conflict, the server, or a take that
        is not this process's after all: answered 202, or another claim beside it on a
        cluster, see :mod:`after.worker.partitions`)."""
        try:
            answers = self.store.bulk_docs(docs, db=self.db)
        except StoreError as exc:
            log.warning("cannot write %d partition lease(s): %s", len(docs),
                        describe_error(exc))
            return [{"id": doc["_id"], "error": "unavailable"} for doc in docs]
        taken = []
        for i, (doc, answer) in enumerate(zip(docs, answers, strict=False)):
            k = doc["partition"]
            if "error" in answer:
                continue
            if doc.get("owner") != self.id:  # given up
                self.mine.pop(k, None)
            elif answer.get("accepted"):  # 202: not proof; buried, taken again later
                log.warning("partition %d of %s: its take was answered 202 (not confirmed by "
                            "a quorum of copies): not used", k, self.name)
                self.bury([parts.tombstone(doc)])
                answers[i] = {"id": doc["_id"], "error": "accepted"}
            else:
                taken.append(i)
        if taken and self.one_copy is None:
            self.one_copy = self.store.one_copy()
        if self.one_copy:  # (pouchdb-server: a take answered 201 has no branch beside it;
            # its 21 reads back, behind two other processes' drains on a server that answers
            # one request at a time, held the third process's start up by 0.6-1.2 s)
            for i in taken:
                self.mine[docs[i]["partition"]] = docs[i]["_rev"]
            return answers
        # each take read back, CONFIRMS at once: one after another, behind a busy server's
        # queue (another process's backlog), 21 reads held a process's start up by 1-1.5 s
        with ThreadPoolExecutor(min(CONFIRMS, len(taken)) or 1) as pool:
            confirmed = pool.map(lambda i: self.confirm_take(docs[i]["partition"], docs[i],
                                                             answers[i]), taken)
            for i, answer in zip(taken, list(confirmed), strict=True):
                answers[i] = answer
        return answers

    def confirm_take(self, k: int, doc: dict, answer: dict) -> dict:
        """A take answered 201, read back from every copy: this process's, unless another
        process may be using the partition in a version beside it."""
        try:
            leaves = self.store.leaves(doc["_id"], db=self.db)
        except StoreError as exc:
            log.warning("cannot read back the lease of partition %d: %s", k,
                        describe_error(exc))
            self.bury([parts.tombstone(doc)])
            return {"id": doc["_id"], "error": "unconfirmed"}
        ours, buried = parts.taken(doc, leaves, self.id, self.dead)
        self.bury(list(buried))
        if not ours:
            log.warning("partition %d of %s: another process took it at the same time "
                        "(a conflict between cluster nodes); left to it", k, self.name)
            return {"id": doc["_id"], "error": "contested"}
        self.mine[k] = doc["_rev"]
        return answer

    def settle(self, doc: dict) -> parts.Settled | None:
        """A lease document read with conflicts: its versions weighed, those no process
        may be using buried (None when its versions could not be read)."""
        try:
            leaves = self.store.leaves(doc["_id"], db=self.db)
        except StoreError as exc:
            log.warning("cannot read the versions of %s: %s", doc["_id"], describe_error(exc))
            return None
        settled = parts.settle(leaves, self.id, self.mine.values(), self.dead)
        self.bury(list(settled.buried))
        if settled.doc is not None and settled.doc.get("_contested"):
            log.warning("%s names %s in versions side by side (a conflict between cluster "
                        "nodes): free only once all but one let it go", doc["_id"],
                        ", ".join(settled.owners))
        return settled

    def bury(self, tombstones: list[dict]) -> None:
        """Write tombstones over versions of lease documents (``new_edits=false``)."""
        if not tombstones:
            return
        try:
            self.store.bulk_docs(tombstones, db=self.db, new_edits=False)
        except StoreError as exc:
            log.warning("cannot bury %d lease version(s): %s", len(tombstones),
                        describe_error(exc))

    # -- the thread --------------------------------------------------------------------------

    def ask(self, request: tuple) -> None:
        """Have the peers' thread do ``request``: ``("confirm", owner)``, ``("parts", docs)``
        or ``("read", None)`` (read the registry again before the next beat: partitions
        are being handed over); its answer is posted to the loop."""
        self._asks.put(request)

    def start(self, every: float, status: Callable[[], dict],
              post: Callable[[tuple], None]) -> None:
        """Beat every ``every`` seconds with ``status()``, post ``("beat", (sent, lapses))``
        as each heartbeat lands and ``("registry", Registry)`` as the registry is read;
        answer :meth:`ask` (``("peer", (owner, alive))``, ``("parts", (docs, answers))``);
        sample the server's clock; all on a thread of its own."""
        self._thread = threading.Thread(target=self._run, args=(every, status, post),
                                        name="after-peers", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._asks.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, every: float, status, post) -> None:
        next_beat = next_sample = 0.0
        next_read = float("inf")  # a read of the registry asked for between beats
        last_read = float("-inf")
        while not self._stop.is_set():
            now = self.mono()
            if now >= next_read:  # (no beat: only what the others wrote is read)
                next_read = float("inf")
                last_read = now
                registry = self.refresh()
                if registry is not None:
                    post(("registry", registry))
                continue
            if now >= next_beat:
                next_beat = now + every
                last_read = now
                try:
                    registry = self.beat(
                        status(), landed=lambda sent, lapses: post(("beat", (sent, lapses))))
                    if registry is not None:
                        post(("registry", registry))
                except Exception:  # the lease must not die of a bug
                    log.exception("unexpected error writing the heartbeat")
                continue
            if now >= next_sample:
                calibrating = len(self.offset.samples) < CALIBRATION
                next_sample = now + (CALIBRATION_GAP if calibrating else SAMPLE_EVERY)
                try:
                    self.sample_clock()
                except Exception:
                    log.exception("unexpected error sampling the server's clock")
                continue
            try:
                request = self._asks.get(
                    timeout=max(0.0, min(next_beat, next_sample, next_read) - now))
            except queue.Empty:
                continue
            if request is None:
                continue
            try:
                kind, value = request
                if kind == "read":  # soon, not more often than every REREAD seconds (a
                    at = max(now, last_read + REREAD)  # beat reads it too)
                    if at < next_beat:
                        next_read = min(next_read, at)
                elif kind == "confirm":
                    post(("peer", (value, self.confirm(value))))
                elif kind == "parts":
                    post(("parts", (value, self.write_parts(value))))
            except Exception:
                log.exception("unexpected error answering %s", request[0])
