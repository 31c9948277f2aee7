"""What must hold before an occurrence starts: its day not excluded, a concurrency slot.

The worker asks its :class:`Gates` when a held occurrence falls due (``Worker._fire``):

- **Calendars** (``repeat.exclude``, :mod:`after.rules.calendar`): an occurrence on an excluded
  day is not run but recorded ``skipped`` (:func:`after.worker.runs.skip`); a task naming a
  calendar document that does not exist ends ``error``. Shared calendars are read from the
  tasks database and kept :data:`CALENDAR_TTL` seconds, so an edit takes effect within that
  long, without a restart.
- **Concurrency caps** (``"concurrency": {"key": K, "limit": N}``): at most N runs with the
  key K at once, across every process of every machine and every worker name. A run holds
  one of N slot documents, ``slot:K#0`` .. ``slot:K#<N-1>`` in ``<db>_workers``, taken like
  a claim: written with ``_rev`` (or created), so of two processes taking the same slot one
  gets a conflict. A slot names its holder (a process id, as a task's ``after.owner``); the
  holder frees it when its run ends in any way (done, error, timeout, a graceful stop). A
  holder that dies (kill -9) frees nothing: its slot is taken over once the holder is dead,
  judged as :mod:`after.peers` judges a peer, on this process's monotonic clock: its
  heartbeat document gone, or unchanged for a lease. On a cluster a slot written with a 202
  is read back (every leaf) before the run starts, as the worker confirms a 202 start.

A due occurrence with no free slot stays held by its process and is tried again every
:data:`SLOT_RETRY` seconds and at once when a run of this process frees a slot, earliest due
first; its run record's lateness counts from the occurrence's date. Across processes, date
order holds too: a process that finds a free slot leaves it, for up to :data:`YIELD_MAX`
seconds, when another live process holds an earlier due occurrence with the same key (one
Mango query on the tasks database, made only when a slot is free; who holds a task is who
owns its partition). Without that, the process that freed a slot took
it again for its own next occurrence (measured: 9 occurrences over 3 processes ran as
o0 o2 o4 o3 o5 o6 o1 o7 o8).

The gates' I/O (a few small requests per gated run: read the key's slots, write one, write
it free; a token; a calendar) is done on a thread of their own, :class:`GateKeeper`: the
loop asks and goes on, and the answer comes back on its inbox; none for tasks without a gate.
"""

# Longer than 500 lines on purpose: the gates an occurrence passes before it starts (calendars,
# concurrency slots, rate tokens) share the 202 read-back that confirms a taken slot or token.

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from after.config import workers_db
from after.couch.caps import RATE_PREFIX, SLOT_PREFIX, slot_id, token_id
from after.couch.store import Conflict, NotFound, StoreError, describe_error
from after.rules import calendar as cal
from after.rules import task as rules
from after.rules.dates import format_date, from_ms, to_ms
from after.worker import runs as r
from after.worker.partitions import partition_of

log = logging.getLogger("after.worker")

#: Seconds a shared calendar document is kept before it is read again.
CALENDAR_TTL = 2.0
#: Seconds between two tries at a slot while occurrences wait for one.
SLOT_RETRY = 0.25
#: Longest a process leaves a free slot to an earlier occurrence another process holds.
YIELD_MAX = 2.0
class Calendars:
    """Shared calendar documents, read through a short cache."""

    def __init__(self, store, ttl: float = CALENDAR_TTL,
                 monotonic: Callable[[], float] = time.monotonic):
        self.store, self.ttl, self.mono = store, ttl, monotonic
        self.cache: dict[str, tuple[float, cal.Exclusion | None]] = {}

    def get(self, names: tuple[str, ...]) -> dict[str, cal.Exclusion]:
        """The calendars of ``names`` that exist (a bad one counts as empty, logged). When
        the database cannot be read, the last copy is used, or none (the occurrence runs)."""
        found = {}
        for name in names:
            at, value = self.cache.get(name, (float("-inf"), None))
            if self.mono() - at >= self.ttl:
                value = self._read(name, value)
                self.cache[name] = (self.mono(), value)
            if value is not None:
                found[name] = value
        return found

    def _read(self, name: str, last: cal.Exclusion | None) -> cal.Exclusion | None:
        try:
            doc = self.store.get(cal.PREFIX + name)
        except NotFound:
            return None
        except StoreError as exc:
            log.warning("cannot read calendar %s (%s): %s", name, "using the last copy" if
                        last is not None else "no day of it is skipped for now",
                        describe_error(exc))
            return last if last is not None else cal.Exclusion()
        try:
            return cal.parse_calendar(doc)
        except cal.CalendarError as exc:
            log.warning("calendar %s cannot be used (it excludes nothing): %s", name, exc)
            return cal.Exclusion()


class Caps:
    """The concurrency slots this process holds, and the occurrences waiting for one (not
    the job threads)."""

    def __init__(self, store, db: str, me: str, lease: float,
                 monotonic: Callable[[], float] = time.monotonic,
                 known_dead: Callable[[str], bool] = lambda holder: False,
                 holder_of: Callable[[str], str | None] = lambda docid: None):
        self.store, self.db, self.me, self.lease, self.mono = store, db, me, lease, monotonic
        # a holder this process already knows dead (a peer of its name, after.peers)
        self.known_dead = known_dead
        self.holder_of = holder_of  # the process that holds a task (owns its partition)
        self.held: dict[str, dict] = {}  # task id -> the slot document it holds
        self.waiting: dict[str, tuple[int, str]] = {}  # task id -> (due ms, key)
        self.observed: dict[str, tuple[str, float]] = {}  # holder -> (heartbeat rev, since)
        self.yielding: dict[str, float] = {}  # task id -> since when it leaves slots to others
        self.next_try: dict[str, float] = {}  # key -> when to try its slots again

    # -- liveness of a slot's holder, as after.peers judges a peer -------------------------

    def observe(self, holder: str, beat: dict | None, at: float) -> bool:
        """Take in one read of ``holder``'s heartbeat at monotonic ``at``; True when it is
        dead: no heartbeat, or one unchanged for a lease since this process first saw it."""
        if holder == self.me:
            return False
        if beat is None:
            self.observed.pop(holder, None)
            return True
        rev = beat.get("_rev", "")
        seen = self.observed.get(holder)
        if seen is None or seen[0] != rev:
            self.observed[holder] = seen = (rev, at)
        return at - seen[1] >= self.lease

    def _dead(self, holder: str) -> bool:
        if self.known_dead(holder):
            return True
        try:
            beat = self.store.get_or_none(holder, db=self.db)
        except StoreError as exc:
            log.warning("cannot read the heartbeat of slot holder %s: %s", holder,
                        describe_error(exc))
            return False  # never take a slot on a guess
        return self.observe(holder, beat, self.mono())

    # -- taking and freeing -----------------------------------------------------------------

    def take(self, docid: str, key: str, limit: int, due_ms: int, now: datetime) -> bool:
        """A slot of ``key`` for the run of ``docid``: True when this process holds one
        (taken now or before); otherwise the occurrence waits (:meth:`due`)."""
        if docid in self.held:
            return True
        if self.mono() >= self.next_try.get(key, 0.0) and not self._after_ours(docid, key,
                                                                               due_ms):
            if self._acquire(docid, key, limit, due_ms, now):
                self.waiting.pop(docid, None)
                self.yielding.pop(docid, None)
                return True
            self.next_try[key] = self.mono() + SLOT_RETRY
        self.waiting.setdefault(docid, (due_ms, key))
        return False

    def _after_ours(self, docid: str, key: str, due_ms: int) -> bool:
        """Whether an earlier occurrence of this process waits for the same key: it goes
        first (a timer that fires in the turn a slot frees must not overtake it)."""
        return any(k == key and (due, t) < (due_ms, docid)
                   for t, (due, k) in self.waiting.items())

    def _earlier_elsewhere(self, docid: str, key: str, due_ms: int) -> bool:
        """Whether another live process holds a due, earlier occurrence with the same key
        (dated before ``due_ms``): a free slot is left to it, for at most
        :data:`YIELD_MAX` seconds from the first time this occurrence saw a slot free (it may
        wait for a job thread, not for a slot; counted anew once no slot is free). Dates are
        compared as written (an offset other than Z may blur the order by its hours)."""
        since = self.yielding.setdefault(docid, self.mono())
        if self.mono() - since >= YIELD_MAX:
            return False
        try:
            docs, _ = self.store.find(
                {"status": {"$in": [rules.WAITING, rules.SCHEDULED]},
                 "date": {"$lt": format_date(from_ms(due_ms))},
                 "concurrency.key": key}, limit=20, fields=["_id", "after"])
        except StoreError:
            return False
        for doc in docs:
            holder = self.holder_of(doc["_id"])
            due = rules.instant(rules.info(doc).get("due"))
            if doc["_id"] != docid and holder and holder != self.me \
                    and not self.known_dead(holder) \
                    and (due is None or due.timestamp() * 1000 <= due_ms):
                return True  # (a retry due later is not waiting)
        return False

    def _acquire(self, docid: str, key: str, limit: int, due_ms: int, now: datetime) -> bool:
        try:
            slots = {doc["_id"]: doc for doc in
                     self.store.prefixed(f"{SLOT_PREFIX}{key}#", db=self.db)}
        except StoreError as exc:
            log.warning("cannot read the slots of %s: %s", key, describe_error(exc))
            return False
        ours = {doc["_id"] for doc in self.held.values()}
        for slot, doc in list(slots.items()):  # ours, for a run that is over: free it
            if doc.get("holder") == self.me and slot not in ours:
                slots[slot] = self._free(doc) or doc
        yielded = None
        # More than one slot free: taking one leaves another to any earlier occurrence, so
        # the query for one is only made for the last free slot.
        free = limit - sum(1 for n in range(limit)
                           if (slots.get(slot_id(key, n)) or {}).get("holder"))
        for n in range(limit):
            current = slots.get(slot_id(key, n))
            holder = current.get("holder") if current else None
            if holder and (holder == self.me or not self._dead(holder)):
                continue
            if yielded is None:
                yielded = free <= 1 and self._earlier_elsewhere(docid, key, due_ms)
            if yielded:
                return False
            doc = {"_id": slot_id(key, n), "type": "slot", "key": key, "holder": self.me,
                   "task": docid, "since": format_date(now)}
            if current is not None:
                doc["_rev"] = current["_rev"]
            if holder:
                log.info("slot %s: its holder %s is dead: taking it over", doc["_id"], holder)
            try:
                answer = self.store.put(doc, db=self.db)
            except Conflict:
                continue  # another process took it first
            except StoreError as exc:
                log.warning("cannot take slot %s: %s", doc["_id"], describe_error(exc))
                return False
            if answer.get("status") == 202 and not confirmed(self.store, self.db, doc):
                continue
            self.held[docid] = doc
            return True
        if yielded is None:  # no slot was free: the next one that frees starts a new wait
            self.yielding.pop(docid, None)
        return False

    def release(self, docid: str) -> None:
        """The run of ``docid`` is over: free its slot (if it holds one)."""
        self.waiting.pop(docid, None)
        self.yielding.pop(docid, None)
        doc = self.held.pop(docid, None)
        if doc is not None:
            self._free(doc)
            self.next_try.pop(doc["key"], None)  # a waiting occurrence may take it at once

    def _free(self, doc: dict) -> dict | None:
        """Write ``doc`` free (unless another process holds it now); the document written."""
        for _ in range(3):
            free = {**doc, "holder": None, "task": None, "freed": format_date(datetime.now(UTC))}
            try:
                self.store.put(free, db=self.db)
                return free
            except Conflict:
                try:
                    current = self.store.get(doc["_id"], db=self.db)
                except StoreError:
                    return None
                if current.get("holder") != self.me:
                    return None  # taken over meanwhile (this process was thought dead)
                doc = current
            except StoreError as exc:
                log.warning("cannot free slot %s (it comes back when this process's lease "
                            "runs out, if it stops): %s", doc["_id"], describe_error(exc))
                return None
        return None

    def settle(self, running: Callable[[str], bool]) -> None:
        """Free the slots whose run is over (or never began: its start lost a conflict),
        and forget waiting occurrences this process no longer holds."""
        for docid in [t for t in self.held if not running(t)]:
            self.release(docid)

    def due(self, held: Callable[[str], bool]) -> list[str]:
        """The waiting occurrences whose key may be tried again now, earliest due first."""
        for docid in [t for t in self.waiting if not held(t)]:
            del self.waiting[docid]
            self.yielding.pop(docid, None)
        at = self.mono()
        ready = [t for t, (_, key) in self.waiting.items() if at >= self.next_try.get(key, 0.0)]
        return sorted(ready, key=lambda t: self.waiting[t])

    def wait(self) -> float | None:
        """Seconds until a waiting occurrence's key may be tried again (None: none waits)."""
        if not self.waiting:
            return None
        keys = {key for _, key in self.waiting.values()}
        return max(0.0, min(self.next_try.get(k, 0.0) for k in keys) - self.mono())

    def release_all(self) -> None:
        for docid in list(self.held):
            self.release(docid)
        self.waiting.clear()


class Rates:
    """Rate limits: ``"rate": {"key": K, "limit": N, "per": S}`` lets at most N runs with the
    key K begin in any S seconds, across every process of every machine and every worker
    name. The key has N token documents, ``rate:K#0`` .. ``rate:K#<N-1>`` in
    ``<db>_workers``; a run begins once it took one, by writing the token's ``next`` (when
    it may be taken again: ``per`` seconds on) with the ``_rev`` it read (or creating it),
    so of two processes taking the same token one gets a conflict. A token is never given
    back: a run that then does not begin (a cancel, a stop) spends it all the same, which
    keeps the limit. No holder to outlive: a token frees itself with time, whoever took it.
    A 202 on a cluster is confirmed as a slot's is (:func:`confirmed`).

    The instants are the worker's (the server's clock as each process estimates it,
    :mod:`after.couch.clock`): processes whose estimates differ by d may together begin N runs
    in ``per - d`` seconds. A capped and rate-limited occurrence takes its slot first, then
    its token, so that a token is taken only by a run that begins at once."""

    def __init__(self, store, db: str, me: str,
                 monotonic: Callable[[], float] = time.monotonic,
                 clock: Callable[[], datetime] | None = None):
        self.store, self.db, self.me, self.mono = store, db, me, monotonic
        # the instant a token is weighed and taken at, read when it is (the loop's ``now``
        # is its turn's, which may be some way back: measured, a token taken 0.15 s early)
        self.clock = clock
        self.taken: dict[str, dict] = {}  # task id -> the token its run took
        self.waiting: dict[str, tuple[int, str]] = {}  # task id -> (due ms, key)
        self.next_try: dict[str, float] = {}  # key -> when (monotonic) a token may be free

    def take(self, docid: str, rate: rules.Rate, due_ms: int, now: datetime) -> bool:
        """A token of ``rate.key`` for the run of ``docid``: True when it has one (taken
        now, or before and not spent); otherwise the occurrence waits (:meth:`due`)."""
        if docid in self.taken:
            return True
        key = rate.key
        earlier = any(k == key and (due, t) < (due_ms, docid)
                      for t, (due, k) in self.waiting.items())
        if not earlier and self.mono() >= self.next_try.get(key, 0.0):
            wait = self._acquire(docid, rate, now)
            if wait is None:
                self.waiting.pop(docid, None)
                return True
            self.next_try[key] = self.mono() + max(SLOT_RETRY, wait)
        self.waiting.setdefault(docid, (due_ms, key))
        return False

    def _acquire(self, docid: str, rate: rules.Rate, now: datetime) -> float | None:
        """Take a free token: None when taken; else seconds until one may be free."""
        key = rate.key
        if self.clock is not None:
            now = max(now, self.clock())
        now_ms = to_ms(now)
        try:
            tokens = {doc["_id"]: doc for doc in
                      self.store.prefixed(f"{RATE_PREFIX}{key}#", db=self.db)}
        except StoreError as exc:
            log.warning("cannot read the rate tokens of %s: %s", key, describe_error(exc))
            return SLOT_RETRY
        soonest = None
        for n in range(rate.limit):
            current = tokens.get(token_id(key, n))
            free_at = _next_ms(current)
            if free_at > now_ms:
                soonest = free_at if soonest is None else min(soonest, free_at)
                continue
            doc = {"_id": token_id(key, n), "type": "rate", "key": key, "task": docid,
                   "by": self.me, "taken": format_date(now),
                   "next": format_date(from_ms(now_ms + int(rate.per * 1000)))}
            if current is not None:
                doc["_rev"] = current["_rev"]
            try:
                answer = self.store.put(doc, db=self.db)
            except Conflict:
                continue  # another process took it first
            except StoreError as exc:
                log.warning("cannot take rate token %s: %s", doc["_id"], describe_error(exc))
                return SLOT_RETRY
            if answer.get("status") == 202 and not confirmed(self.store, self.db, doc):
                continue
            self.taken[docid] = doc
            return None
        return SLOT_RETRY if soonest is None else max(0.0, (soonest - now_ms) / 1000)

    def begun(self, docid: str, rate: rules.Rate, now: datetime) -> None:
        """The run of ``docid`` is launched: its token's ``next`` is moved to a period from
        now, if later (its intent was written between the take and now: on a cluster, tens
        to hundreds of milliseconds, enough to let N + 1 runs begin in a period; measured,
        4 of 3 in 2 s). The token is spent."""
        doc = self.taken.pop(docid, None)
        self.waiting.pop(docid, None)
        if doc is None:
            return
        if self.clock is not None:
            now = max(now, self.clock())
        later = to_ms(now) + int(rate.per * 1000)
        if later <= _next_ms(doc):
            return
        moved = {**doc, "next": format_date(from_ms(later)), "began": format_date(now)}
        try:
            self.store.put(moved, db=self.db)
        except StoreError as exc:  # taken again already (a period went by), or unreachable
            log.debug("token %s not moved: %s", doc["_id"], describe_error(exc))

    def forget(self, docid: str) -> None:
        """The occurrence of ``docid`` will not run here: a token it took stays spent."""
        self.taken.pop(docid, None)
        self.waiting.pop(docid, None)

    def due(self, held: Callable[[str], bool]) -> list[str]:
        for docid in [t for t in self.waiting if not held(t)]:
            del self.waiting[docid]
        at = self.mono()
        return [t for t, (_, key) in self.waiting.items() if at >= self.next_try.get(key, 0.0)]


def _next_ms(token: dict | None) -> int:
    """When a token document may be taken again, epoch ms (0: now; never read: free)."""
    when = rules.instant((token or {}).get("next"))
    return 0 if when is None else to_ms(when)


def confirmed(store, db: str, doc: dict) -> bool:
    """A slot or a rate token written with a 202 (fewer copies than the quorum took it) is
    read back, every leaf, and is ours only if our revision is its one live leaf. A 202 most
    often means another process took the same document through another node at the same
    time: the copies that refused ours hold its revision, and it may have had a 201 and be
    running its job. So a branch of ours beside another live one is given up (deleted),
    never the other: whichever revision CouchDB serves, it stays with the other process.
    Quorum reads see the other branch: it is on every copy that refused ours (measured:
    deleting the other branch when ours won let 3 runs go at once under a cap of 2 on the
    3-node cluster)."""
    try:
        leaves = [leaf for leaf in store.leaves(doc["_id"], db=db) if not leaf.get("_deleted")]
    except StoreError as exc:
        log.warning("cannot confirm %s yet: %s", doc["_id"], describe_error(exc))
        return False
    if [leaf["_rev"] for leaf in leaves] == [doc["_rev"]]:
        return True
    if any(leaf["_rev"] == doc["_rev"] for leaf in leaves):
        log.warning("%s was taken at the same time by another process (%d live revisions): "
                    "leaving it to that one", doc["_id"], len(leaves))
        try:
            store.bulk_docs([{"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True}], db=db)
        except StoreError as exc:
            log.warning("cannot give %s up (it comes back after this process's lease, if "
                        "it stops): %s", doc["_id"], describe_error(exc))
    return False


class Gates:
    """The calendars, the caps and the rate limits, asked synchronously (their I/O done by
    the caller: the worker's :class:`GateKeeper` thread)."""

    retry_ms = int(SLOT_RETRY * 1000)

    def __init__(self, store, db: str, me: r.Identity, lease: float,
                 known_dead: Callable[[str], bool] = lambda holder: False,
                 holder_of: Callable[[str], str | None] = lambda docid: None,
                 clock: Callable[[], datetime] | None = None):
        self.me = me
        self.calendars = Calendars(store)
        self.caps = Caps(store, db, me.process, lease, known_dead=known_dead,
                         holder_of=holder_of)
        self.rates = Rates(store, db, me.process, clock=clock)

    def ask(self, held, now: datetime) -> str | list | None:
        """A held occurrence fell due: None when it may run; ``"wait"`` for a concurrency
        slot; else the writes that record it skipped (an excluded day) or end the task
        ``error`` (a calendar that does not exist)."""
        spec = held.spec
        exclusion = spec.repeat.exclude if spec.repeat is not None else None
        if exclusion is not None:
            write = screen(held.doc, spec, self.calendars.get(exclusion.calendars), self.me,
                           now, from_ms(held.due_ms))
            if write is not None:
                return write
        cap, rate, docid = spec.concurrency, spec.rate, held.doc["_id"]
        if rules.missed(spec, from_ms(held.due_ms), now):
            return None  # recorded missed: no run, no slot, no token
        if cap is not None and not self.caps.take(docid, cap.key, cap.limit, held.due_ms,
                                                  now):
            return "wait"
        if rate is not None and not self.rates.take(docid, rate, held.due_ms, now):
            return "wait"  # (its slot, if it took one, kept: it begins once it has both)
        return None

    def due(self, held: Callable[[str], bool]) -> list[str]:
        """The occurrences waiting for a slot or a token that may try again now, earliest
        due first."""
        ready = set(self.caps.due(held)) | set(self.rates.due(held))
        waiting = {**self.rates.waiting, **self.caps.waiting}
        return sorted(ready, key=lambda t: waiting.get(t, (0, "")))

    def release(self, docid: str) -> None:
        self.caps.release(docid)

    def forget(self, docid: str) -> None:
        self.caps.waiting.pop(docid, None)
        self.caps.yielding.pop(docid, None)
        self.rates.forget(docid)

    def release_all(self) -> None:
        self.caps.release_all()


#: what the GateKeeper answers while the gates' thread works on a question
ASKED = "asked"


class GateKeeper:
    """The loop's face of the gates (issue 22: no blocking I/O on the loop). The gates and
    their state belong to a thread of their own; the loop asks (:meth:`ask` returns
    :data:`ASKED`) and goes on, and the answer comes back on its inbox as ``("gated",
    (docid, verdict))``: kept here (:meth:`answered`) until the occurrence fires again and
    takes it. What the loop tells the gates (a run begun, a slot to free, an occurrence
    forgotten) goes on the same queue, so the thread sees it in order; when freeing a slot
    lets waiting occurrences try again, the thread posts ``("gate_retry", docids)``."""

    retry_ms = Gates.retry_ms

    @classmethod
    def of(cls, worker, store) -> GateKeeper:
        """A worker's: the gates' thread knows who is dead and who holds a task from what
        the loop publishes (``State.peers``, replaced whole), never from its live state."""
        state = worker.state
        gates = Gates(store, workers_db(store.db), worker.me, worker.settings.lease,
                      known_dead=lambda holder: holder in state.peers[0],
                      holder_of=lambda docid: state.peers[1].get(partition_of(docid)),
                      clock=worker.peers.now)
        return cls(gates, worker.inbox.put, clock=worker.peers.now)

    def __init__(self, gates: Gates, post: Callable[[tuple], None],
                 clock: Callable[[], datetime]):
        self.gates, self.post, self.clock = gates, post, clock
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.asked: set[str] = set()  # the loop's: questions on the thread
        self.answers: dict[str, str | list | None] = {}  # the loop's: answers not yet taken
        self.thread: threading.Thread | None = None

    # -- the loop's side ---------------------------------------------------------------------

    def ask(self, held, now: datetime) -> str | list | None:
        """As :meth:`Gates.ask`, or :data:`ASKED` while the thread works on it."""
        docid = held.doc["_id"]
        if docid in self.answers:
            return self.answers.pop(docid)
        if docid not in self.asked:
            self.asked.add(docid)
            self._put(("ask", held))
        return ASKED

    def answered(self, docid: str, verdict: str | list | None) -> bool:
        """The thread's answer is in: kept for the occurrence's next fire (True), or, when
        no question of it is out any more (forgotten meanwhile), dropped (False)."""
        if docid not in self.asked:
            return False
        self.asked.discard(docid)
        self.answers[docid] = verdict
        return True

    def begun(self, docid: str, spec: rules.Spec, now: datetime) -> None:
        """A run is launched: a rate-limited one's token period counts from now."""
        if spec.rate is not None:
            self._put(("begun", docid, spec.rate, now))

    def release(self, docid: str) -> None:
        self._put(("release", docid))

    def forget(self, docid: str) -> None:
        self.asked.discard(docid)
        self.answers.pop(docid, None)
        self._put(("forget", docid))

    def forget_rate(self, docid: str) -> None:
        self._put(("forget_rate", docid))

    def close(self, timeout: float = 2.0) -> None:
        """Free every slot this process holds (its runs are over or handed back) and end the
        thread, waiting ``timeout`` seconds at most."""
        if self.thread is None:
            return  # never asked: nothing taken
        self.requests.put(("release_all",))
        self.requests.put(None)
        self.thread.join(timeout)

    def _put(self, request: tuple) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._serve, name="after-gates", daemon=True)
            self.thread.start()
        self.requests.put(request)

    # -- the gates' thread -------------------------------------------------------------------

    def _serve(self) -> None:
        gates = self.gates
        while (request := self.requests.get()) is not None:
            kind, *args = request
            try:
                if kind == "ask":
                    held = args[0]
                    self.post(("gated", (held.doc["_id"], gates.ask(held, self.clock()))))
                elif kind == "begun":
                    gates.rates.begun(*args)
                elif kind == "release":
                    gates.release(args[0])
                    ready = gates.due(lambda docid: True)
                    if ready:
                        self.post(("gate_retry", ready))
                elif kind == "forget":
                    gates.forget(args[0])
                elif kind == "forget_rate":
                    gates.rates.forget(args[0])
                elif kind == "release_all":
                    gates.release_all()
            except Exception:  # a bug must not leave an occurrence waiting for ever
                log.exception("the gates failed on %s", kind)
                if kind == "ask":
                    self.post(("gated", (args[0].doc["_id"], "wait")))


def screen(doc: dict, spec: rules.Spec, calendars: dict[str, cal.Exclusion], me: r.Identity,
           now: datetime, due: datetime | None = None) -> list | None:
    """The occurrence of ``doc`` (its ``date``) fell due: None when it may run; the write
    that records it ``skipped`` when its day is excluded; an ``error`` when it names a
    calendar that does not exist (``calendars``: those that do, by name)."""
    exclusion = spec.repeat.exclude if spec.repeat is not None else None
    wrong = cal.missing(exclusion, calendars)
    if wrong is not None:
        log.warning("task %s cannot run: %s", doc["_id"], wrong)
        return [r.Write(r.Kind.ERROR, rules.mark_error(doc, wrong, now))]
    reason = cal.excluded(exclusion, spec.date, spec.repeat.zone if spec.repeat else "UTC",
                          calendars)
    if reason is None:
        return None
    log.info("task %s: occurrence %s %s", doc["_id"], format_date(spec.date), reason)
    return [r.skip(doc, spec, reason, me, now, due, calendars)]
