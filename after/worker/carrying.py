"""Deciding and carrying out: a task document decided with the pure rules of
:mod:`after.worker.decide` (on a :class:`~after.worker.decide.View` of the state), and what a
decision returns carried out. Functions of the :class:`~after.worker.loop.Worker` ``w``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from after.jobs import JobError
from after.rules import task as rules
from after.rules.dates import to_ms
from after.worker import decide as d
from after.worker import partitions as parts
from after.worker import running
from after.worker import runs as r

log = logging.getLogger("after.worker")


def view(w) -> d.View:
    """What a decision may know of the state. The runs are a read-only view of the state's
    own (no copy: thousands of them in a burst, and a decision per answer), read on the
    loop's thread only, where nothing changes them while a decision is made."""
    state = w.state
    known_live = frozenset(p for p, alive in state.known.items() if alive)
    known_dead = frozenset(p for p, alive in state.known.items() if not alive)
    return d.View(me=w.me, horizon_ms=int(w.settings.horizon * 1000),
                  owned=frozenset(state.owned), running=state.runs.keys(),
                  live=state.live | known_live, dead=state.dead | known_dead,
                  job_errors=job_errors(w), versions=state.versions,
                  paused=state.paused)


def job_errors(w) -> dict[str, str]:
    return {name: str(func) for name, func in w.jobs.items()
            if isinstance(func, JobError)}


def changed(w, doc: dict, recheck: bool, now: datetime, confirmed: bool = False) -> None:
    """Decide a task's version and carry the decision out. A decision that writes is made
    on a version read back (``confirmed``): one that the feed, a poll or a scan showed is
    read back by id first (a quorum read on a cluster), then decided again. A copy whose node
    just came back may show a task ended since as still ``running`` on a process now dead:
    taken over, it would run again (chaos seed 204211593, replayed); and a write made on a
    copy's stale revision may still land on that copy, a conflict that can win."""
    docid = doc.get("_id")
    if not isinstance(docid, str) or docid.startswith("_design/"):
        return
    if docid in w.state.inflight or docid in w.state.outbox:
        w.state.parked[docid] = doc  # decided once the write's answer is in
        return
    if parts.partition_of(docid) in w.state.checking:
        # its partition was a dead process's: decided once that process's open intents
        # are read (one of its runs may have begun: after.worker.intents)
        w.state.waiting_check[docid] = doc
        return
    if not doc.get("_deleted") and not w.state.seen.newer(doc, recheck):
        return  # an echo of our own write, or older than what we know
    w.state.unconfirmed.pop(docid, None)  # this version decides, or waits in its place
    if doc.get("debounce") is not None or docid in w.state.versions:
        seen(w, doc, now)
    job = (doc.get("job") or {}).get("name") if isinstance(doc.get("job"), dict) else None
    if isinstance(job, str) and parts.partition_of(docid) in w.state.owned:
        running.job(w, job)  # resolved before deciding: the decision is pure
    conflicts = doc.get("_conflicts")  # (decide takes them off the doc: after.worker.runs)
    actions = d.decide(doc, view(w), now)
    if not confirmed and any(isinstance(action, r.Write) for action in actions):
        running.do(w, [a for a in actions if not isinstance(a, (r.Write, d.Note))], now)
        w.state.unconfirmed[docid] = {**doc, "_conflicts": conflicts} if conflicts else doc
        w.state.verify[docid] = doc.get("_rev")
        return
    running.do(w, actions, now)


def confirmed(w, current: dict[str, str], again: list[str], now: datetime) -> None:
    """The read back answered: a version that waited for it to write (:func:`changed`), found
    current, is decided again and its writes made; one it could not read is read again (a
    changed one came back as a recheck, decided in its place)."""
    state = w.state
    for docid, rev in current.items():
        doc = state.unconfirmed.get(docid)
        if doc is not None and doc.get("_rev") == rev:
            del state.unconfirmed[docid]
            changed(w, doc, True, now, confirmed=True)
    for docid in again:
        doc = state.unconfirmed.get(docid)
        if doc is not None:
            state.reread[docid] = doc.get("_rev")


def peer(w, owner: str, alive: bool | None, now: datetime) -> None:
    """The peers' thread told whether ``owner`` lives: the tasks that waited on it are
    decided again."""
    if alive is not None:
        w.state.known[owner] = alive
    for doc in w.state.asked.pop(owner, []):
        changed(w, doc, True, now)


def feed(w, up: bool) -> None:
    """The feed came up or went down: after it comes back, everything is checked again."""
    w.emit("feed", connected=up)
    w.state.feed_lost = w.state.feed_lost or not up
    if up and w.state.feed_lost:
        w.poller.now.set()


def seen(w, doc: dict, now: datetime) -> None:
    """When this process first saw the current version of a task with a ``debounce`` (its
    run waits for a quiet window from then: after.worker.runs.debounced); forgotten once
    the task no longer waits."""
    docid, rev = doc["_id"], doc.get("_rev")
    if doc.get("_deleted") or doc.get("debounce") is None or doc.get("status") != rules.WAITING:
        w.state.versions.pop(docid, None)
    elif (w.state.versions.get(docid) or (None,))[0] != rev:
        w.state.versions[docid] = (rev, to_ms(now))
