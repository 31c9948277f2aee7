"""The processes of one worker name: heartbeats, leases, and who claims what.

Each process writes a heartbeat document (``<db>_workers``, id ``name@host:pid:token``) every
few seconds, valid until its ``expires``: that is the lease on everything the process holds
or runs. :class:`Peers` writes this process's heartbeat, keeps a cache of the other processes
of its name, says whether a task's owner is still alive, and which process should claim a
task first.

The worker's loop never waits on this: :meth:`Peers.start` runs the heartbeats and the reads
of a possibly dead owner's heartbeat on a thread of their own, which posts each answer to the
loop's inbox; the loop asks :meth:`Peers.liveness`, which answers from the cache alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from .dates import format_date, parse_date, to_ms, utcnow
from .decide import Liveness
from .store import Conflict, Store, StoreError, describe_error

log = logging.getLogger("after.peers")


def process_id(name: str) -> str:
    return f"{name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Peers:
    def __init__(self, store: Store, name: str, *, lease: float, db: str | None = None):
        self.store = store
        self.name = name
        self.lease = lease
        self.db = db or f"{store.db}_workers"
        self.id = process_id(name)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started = utcnow()
        self.live: dict[str, int] = {}  # processes of this name: id -> expires (epoch ms)
        self.dead_checked: dict[str, int] = {}  # owners read and found dead: id -> when (ms)
        self.unreadable: dict[str, int] = {}  # owners whose heartbeat could not be read
        self.rev: str | None = None
        self._asks: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, status: dict, *, force: bool = False) -> bool:
        """Write this process's heartbeat (``status``: held, running, counts...) and refresh
        the cache of the others. Returns False when the write failed (``force``: raise)."""
        now = utcnow()
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
        if self.rev:
            doc["_rev"] = self.rev
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
            return False
        self.rev = doc["_rev"]
        self.refresh()
        return True

    def leave(self) -> None:
        """Remove this process's heartbeat (a graceful stop: it holds nothing any more)."""
        try:
            if self.rev:
                self.store.delete(self.id, self.rev, db=self.db)
        except StoreError as exc:
            log.warning("cannot remove the heartbeat: %s", describe_error(exc))

    def refresh(self) -> None:
        """Re-read the processes of this name; prune the ones gone for long."""
        try:
            docs = self.store.prefixed(f"{self.name}@", db=self.db)
        except StoreError as exc:
            log.warning("cannot read the worker registry: %s", describe_error(exc))
            return
        live, dead = {}, []
        prune_before = to_ms(utcnow()) - int(max(10 * self.lease, 300) * 1000)
        for doc in docs:
            expires = expiry(doc)
            if expires < prune_before and doc["_id"] != self.id:
                dead.append({"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True})
            else:
                live[doc["_id"]] = expires
        if dead:  # processes long gone (killed, machine lost): drop them from the registry
            try:
                self.store.bulk_docs(dead, db=self.db)
                log.info("pruned %d dead process(es) of %s from the registry", len(dead),
                         self.name)
            except StoreError:
                pass
        self.live = live

    def liveness(self, owner: str, now_ms: int) -> Liveness:
        """Is the process ``owner`` alive? From the cache alone (no I/O).

        The cache answers "alive"; "dead" is only ever concluded from a fresh read of that
        process's own heartbeat document (a process started a moment ago is not in the cache
        yet), remembered for a second so a dead process's many tasks cost one read; anything
        else is UNKNOWN: ask :meth:`confirm`. A heartbeat that could not be read counts as
        alive for a second: never take over on a guess."""
        if owner == self.id or self.live.get(owner, 0) > now_ms:
            return Liveness.ALIVE
        if now_ms - self.unreadable.get(owner, -10 ** 15) < 1000:
            return Liveness.ALIVE
        if now_ms - self.dead_checked.get(owner, -10 ** 15) < 1000:
            return Liveness.DEAD
        return Liveness.UNKNOWN

    def confirm(self, owner: str, now_ms: int) -> None:
        """Read ``owner``'s heartbeat into the cache (blocking: on the peers' thread)."""
        try:
            beat = self.store.get_or_none(owner, db=self.db)
        except StoreError as exc:
            log.warning("cannot read the heartbeat of %s: %s", owner, describe_error(exc))
            self.unreadable[owner] = now_ms
            return
        expires = expiry(beat) if beat is not None else 0
        if expires > now_ms:
            self.live = {**self.live, owner: expires}
        else:
            self.dead_checked[owner] = now_ms

    def ask(self, owner: str) -> None:
        """Have the peers' thread :meth:`confirm` ``owner`` (the answer goes to the inbox)."""
        self._asks.put(owner)

    def start(self, every: float, status: Callable[[], dict],
              post: Callable[[tuple], None]) -> None:
        """Beat every ``every`` seconds with ``status()``, and answer :meth:`ask`, on a
        thread of their own; each answer is posted as ``("peer", owner)``."""
        self._thread = threading.Thread(target=self._run, args=(every, status, post),
                                        name="after-peers", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._asks.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, every: float, status, post) -> None:
        next_beat = 0.0
        while not self._stop.is_set():
            now = utcnow()
            if now.timestamp() >= next_beat:
                next_beat = now.timestamp() + every
                try:
                    self.beat(status())
                except Exception:  # the lease must not die of a bug
                    log.exception("unexpected error writing the heartbeat")
                continue
            try:
                owner = self._asks.get(timeout=max(0.0, next_beat - now.timestamp()))
            except queue.Empty:
                continue
            if owner is not None:
                self.confirm(owner, to_ms(utcnow()))
                post(("peer", owner))

    def preferred(self, docid: str, now: datetime | None = None) -> bool:
        """Should this process claim ``docid`` first? Every process of the name computes the
        same answer (rendezvous hashing over the live processes it knows), so each task has
        one first claimant and the work spreads without a storm of conflicts."""
        now_ms = to_ms(now or utcnow())
        live = {p for p, expires in self.live.items() if expires > now_ms} | {self.id}
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
