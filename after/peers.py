"""The processes of one worker name: heartbeats, leases, and who claims what.

Each process writes a heartbeat document (``<db>_workers``, id ``name@host:pid:token``) every
``--heartbeat`` seconds: that is the lease on everything the process holds or runs.
:class:`Peers` writes this process's heartbeat, keeps a cache of the other processes of its
name, says whether a task's owner is still alive, and which process should claim a task
first.

Liveness never compares clocks across machines. A heartbeat changes its ``_rev`` at every
beat; a peer is dead when this process has read its heartbeat and found the same revision
it first saw at least ``lease`` seconds before, on this process's own monotonic clock (or
found no heartbeat at all: a graceful stop removes it). A clock minutes ahead or behind makes
no difference, nor does a step of the wall clock. A peer seen for the first time gets a full
lease from that moment. (The ``expires`` field a heartbeat still carries is for people:
``after list`` and the dashboard show it.)

The worker's loop never waits on this: :meth:`Peers.start` runs the heartbeats, the reads of
the other heartbeats and of a possibly dead owner's on a thread of their own, which posts to
the loop's inbox ``("peer", owner)`` once a possibly dead owner is known, and ``("dead",
owner)`` the moment a peer's lease runs out, so its tasks are taken over without waiting for
a poll. The same thread samples the server's clock (:mod:`after.clock`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from . import pausing
from .clock import WARN_OFFSET, Offset, date_header
from .config import workers_db
from .dates import format_date, parse_date, to_ms
from .decide import Liveness
from .store import Conflict, NotFound, Store, StoreError, describe_error

log = logging.getLogger("after.peers")

CALIBRATION = 16  # samples of the server's clock taken at start...
CALIBRATION_GAP = 0.07  # ... this many seconds apart (phases across the server's second)
SAMPLE_EVERY = 10.0  # then one every this many seconds
PRUNE_AFTER = 300.0  # heartbeats unchanged this long (and 10 leases) are removed


def process_id(name: str) -> str:
    return f"{name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


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
        self.unreadable: dict[str, float] = {}  # owners whose heartbeat could not be read
        self.rev: str | None = None
        self.beat_sent: float | None = None  # when the last heartbeat that landed was sent
        self.lapses = 0  # times a heartbeat landed after this process's lease may have lapsed
        self.paused = False  # the name is paused (its document, after.pausing), as last read
        self.warned_offset = False
        self._asks: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the clock ---------------------------------------------------------------------------

    def clock(self) -> float:
        """Epoch seconds on the server's clock as far as this process can tell: the local
        clock, corrected when it is known to be off (:meth:`after.clock.Offset.correction`)."""
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

    def beat(self, status: dict, *, force: bool = False) -> list[str]:
        """Write this process's heartbeat (``status``: held, running, counts...) and refresh
        the cache of the others; returns the peers found dead by that read. When the write
        fails, logs it (``force``: raises)."""
        now = self.now()
        doc = {
            "_id": self.id,
            "type": "worker",
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "started": format_date(self.started),
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
                self.store.put(doc, db=self.db)
            except Conflict:
                current = self.store.get_or_none(self.id, db=self.db) or {}
                doc["_rev"] = current.get("_rev")
                self.store.put(doc, db=self.db)
        except StoreError as exc:
            if force:
                raise
            log.warning("heartbeat failed: %s", describe_error(exc))
            return self.refresh()
        self.rev = doc["_rev"]
        if sent >= self.sure_until():  # (counted before beat_sent moves: see Worker._lapsed)
            self.lapses += self.beat_sent is not None
        self.beat_sent = sent
        return self.refresh()

    def sure_until(self, margin: float | None = None) -> float:
        """The monotonic instant until which no other process can have found this one dead:
        a lease from the sending of the last heartbeat that landed (another process counts
        a lease from when it reads a heartbeat changed, which is after), less ``margin`` for
        reads that lag. Past it, this process may have lost what it held (frozen by SIGSTOP,
        starved, cut off from the database): see Worker._lapsed."""
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

    def refresh(self) -> list[str]:
        """Re-read the processes of this name; returns those found dead by this read (their
        heartbeat unchanged for a lease); removes the ones gone for long."""
        try:
            docs = self.store.prefixed(f"{self.name}@", db=self.db)
        except StoreError as exc:
            log.warning("cannot read the worker registry: %s", describe_error(exc))
            return []
        at = self.mono()
        newly, stale, present = [], [], set()
        self.paused = any(pausing.is_pause(doc, self.name) for doc in docs)
        for doc in docs:
            if doc.get("type") != "worker":  # the name's pause document
                continue
            present.add(doc["_id"])
            if self.observe(doc, doc["_id"], at):
                newly.append(doc["_id"])
            seen = self.observed.get(doc["_id"])
            if seen and at - seen[1] >= max(10 * self.lease, PRUNE_AFTER):
                stale.append({"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True})
        for gone in [p for p in self.observed if p not in present]:  # left gracefully
            self.observe(None, gone, at)
        for owner, since in list(self.dead.items()):  # forget the long dead
            if at - since > 3600:
                del self.dead[owner]
        if stale:  # processes long gone (killed, machine lost): drop them from the registry
            try:
                self.store.bulk_docs(stale, db=self.db)
                log.info("pruned %d dead process(es) of %s from the registry", len(stale),
                         self.name)
            except StoreError:
                pass
        if newly:
            log.info("process(es) %s stopped heartbeating for %g s: taking over their tasks",
                     ", ".join(newly), self.lease)
        return newly

    def liveness(self, owner: str) -> Liveness:
        """Is the process ``owner`` alive? From the cache alone (no I/O).

        Dead only when a read of its heartbeat found it so (see the module); alive while
        its heartbeat last changed less than a lease ago; a heartbeat that could not be read
        counts as alive for a second (never take over on a guess); anything else is UNKNOWN:
        ask :meth:`confirm`."""
        if owner == self.id:
            return Liveness.ALIVE
        if not isinstance(owner, str):  # no process is named so (a user's write)
            return Liveness.DEAD
        if owner in self.dead:
            return Liveness.DEAD
        at = self.mono()
        if self.live.get(owner, float("-inf")) > at:
            return Liveness.ALIVE
        if at - self.unreadable.get(owner, float("-inf")) < 1.0:
            return Liveness.ALIVE
        return Liveness.UNKNOWN

    def confirm(self, owner: str) -> bool:
        """Read ``owner``'s heartbeat into the cache (blocking: on the peers' thread);
        True when that finds it newly dead."""
        try:
            beat = self.store.get_or_none(owner, db=self.db)
        except StoreError as exc:
            log.warning("cannot read the heartbeat of %s: %s", owner, describe_error(exc))
            self.unreadable[owner] = self.mono()
            return False
        return self.observe(beat, owner, self.mono())

    def ask(self, owner: str) -> None:
        """Have the peers' thread :meth:`confirm` ``owner`` (the answer goes to the inbox)."""
        self._asks.put(owner)

    def start(self, every: float, status: Callable[[], dict],
              post: Callable[[tuple], None]) -> None:
        """Beat every ``every`` seconds with ``status()``, answer :meth:`ask` and sample the
        server's clock, on a thread of their own; posts ``("peer", owner)`` for each answer
        and ``("dead", owner)`` for each peer found dead."""
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
        while not self._stop.is_set():
            now = self.mono()
            if now >= next_sample:
                calibrating = len(self.offset.samples) < CALIBRATION
                next_sample = now + (CALIBRATION_GAP if calibrating else SAMPLE_EVERY)
                try:
                    self.sample_clock()
                except Exception:
                    log.exception("unexpected error sampling the server's clock")
                continue
            if now >= next_beat:
                next_beat = now + every
                was = self.paused
                try:
                    for owner in self.beat(status()):
                        post(("dead", owner))
                except Exception:  # the lease must not die of a bug
                    log.exception("unexpected error writing the heartbeat")
                if self.paused != was:
                    post(("paused", self.paused))
                continue
            try:
                owner = self._asks.get(timeout=max(0.0, min(next_beat, next_sample) - now))
            except queue.Empty:
                continue
            if owner is not None:
                if self.confirm(owner):
                    post(("dead", owner))
                post(("peer", owner))

    def preferred(self, docid: str) -> bool:
        """Should this process claim ``docid`` first? Every process of the name computes the
        same answer (rendezvous hashing over the live processes it knows), so each task has
        one first claimant and the work spreads without a storm of conflicts."""
        at = self.mono()
        live = {p for p, until in dict(self.live).items() if until > at} | {self.id}
        if len(live) == 1:
            return True

        def weight(process: str) -> bytes:
            return hashlib.blake2b(f"{process}|{docid}".encode(), digest_size=8).digest()

        return max(live, key=weight) == self.id


def expiry(doc: dict) -> int:
    """A heartbeat's ``expires`` in epoch ms (0 when unreadable: treated as expired)."""
    try:
        return to_ms(parse_date(doc.get("expires"), "expires"))
    except ValueError:
        return 0


# -- the registry, as `after list` and `after clean` see it -----------------------------------


def dead_entries(docs: list[dict], now_ms: int, *, grace: float = 0.0,
                 keep: tuple[str, ...] = ()) -> list[dict]:
    """The deletions that prune the heartbeats of ``docs`` expired more than ``grace``
    seconds before ``now_ms`` (never those in ``keep``). The one pruning rule: a worker
    prunes its name's entries after a long grace, ``after clean`` at once."""
    before = now_ms - int(grace * 1000)
    return [{"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True} for doc in docs
            if expiry(doc) < before and doc["_id"] not in keep]


def registry(store: Store, db: str, name: str | None = None) -> list[dict]:
    """The heartbeat documents of the processes named ``name`` (of every name by default);
    an empty list when the registry does not exist yet."""
    try:
        docs = store.prefixed(f"{name}@" if name else "", db=db)
    except NotFound:
        return []
    return [doc for doc in docs if doc.get("type") == "worker"]


def prune(store: Store, db: str, name: str | None, now_ms: int, grace: float = 0.0) -> int:
    """Delete the expired heartbeats of ``name`` (every name by default); how many went."""
    dead = dead_entries(registry(store, db, name), now_ms, grace=grace)
    if not dead:
        return 0
    return sum(1 for result in store.bulk_docs(dead, db=db) if "error" not in result)


def state(doc: dict, now_ms: int) -> str:
    """``live``, ``stopping`` or ``stale`` (expired: dead, or too slow to beat)."""
    if expiry(doc) < now_ms:
        return "stale"
    return "stopping" if doc.get("stopping") else "live"
