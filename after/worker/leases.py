"""Partitions and leases: which tasks are this process's to run (after.worker.partitions).

Each read of the registry (:func:`registry`) says who is alive and who owns what; the loop
takes the partitions it should own and are free, and gives up, once their runs are shown
running, those another live process should have (:func:`plan`). A lease that may have
lapsed (:func:`lease`) lets go of everything. Partitions taken from a process found dead are
held back until its open intents are read (:func:`orphans`). Functions of the
:class:`~after.worker.loop.Worker` ``w``, on its thread.
"""

from __future__ import annotations

import logging
from datetime import datetime

from after.rules import task as rules
from after.rules.dates import format_date, from_ms, to_ms
from after.worker import carrying, intents, running
from after.worker import partitions as parts
from after.worker import runs as r
from after.worker.peers import Registry
from after.worker.running import SHOW

log = logging.getLogger("after.worker")

# A process takes no partition before this long after its first read of the registry (it
# reads it again meanwhile, peers.REREAD): processes started at the same moment take their
# shares at once instead of the first taking all and handing most over.
JOIN = 0.15


def lease(w, mono: float) -> None:
    """Has this process's lease lapsed, or may it have, since the last turn (frozen by
    SIGSTOP or a paused VM, starved, cut off from the database)? Then it lets go of its
    partitions and the runs not begun, and holds off for a lease."""
    state = w.state
    if state.beat_sent is None:
        w.lease_until = float("-inf")
        return
    sure = state.beat_sent + w.settings.lease - w.settings.heartbeat
    if state.registry_read and (mono >= sure or state.lapses != state.lapses_seen):
        state.lapses_seen = state.lapses
        lapse(w, mono)
        return
    w.lease_until = sure if not state.away_until else float("-inf")
    if state.away_until and mono >= state.away_until:
        state.away_until = 0.0
        log.warning("worker %s: back in the pool after a lapse of its lease", w.name)
        plan(w, from_ms(int(w.peers.clock() * 1000)))


def share(state) -> None:
    """What the gates' thread reads of the peers (who is dead, who owns each partition),
    replaced whole as the registry's read or a lease write changes it."""
    state.peers = (frozenset(state.dead),
                   {k: doc.get("owner") for k, doc in state.parts.items()})


def registry(w, registry: Registry, now: datetime) -> None:
    state = w.state
    was_paused = state.paused
    state.registry_read = True
    mono = w.peers.mono()
    if state.joined is None:
        state.joined = mono
    if mono - state.joined < w.settings.lease:  # joining: processes started together (a
        w.peers.ask(("read", None))  # pool restarted) see each other within REREAD
    state.live, state.dead, state.paused = registry.live, registry.dead, registry.paused
    state.leaving = registry.leaving
    if registry.degraded != state.degraded:
        state.degraded = registry.degraded
        if registry.degraded:
            log.warning("worker %s: the database answers 202 (a cluster with too few copies "
                        "up to confirm a write): no partition is taken or given up until it "
                        "confirms writes again; the partitions owned are run as before",
                        w.name)
        else:
            log.warning("worker %s: the database confirms writes again", w.name)
    state.parts = {k: doc for k, doc in registry.parts.items()}
    share(state)
    if state.paused != was_paused:
        log.warning("worker %s %s", w.name, "paused: starting nothing" if state.paused
                    else "resumed")
        if state.paused:
            for docid in list(state.held):
                running.drop(w, docid)
            # launched but not begun (every job thread busy): not begun either
            for run in [run for run in state.runs.values() if w.runner.withdraw(run.token)]:
                running.let_go(w, run)
                state.seen.pop(run.docid, None)  # decided again on resume
        else:
            w.poller.now.set()
    lease(w, w.peers.mono())
    plan(w, now)


def plan(w, now: datetime) -> None:
    """Take the partitions this process should own and are free; give up the others."""
    state = w.state
    if state.parts_pending or w.away() or not state.registry_read:
        return
    if w.peers.mono() - state.joined < JOIN:  # what it sees first may be alone: a pool
        return  # started together splits its partitions once, with no hand-over
    if state.degraded:  # a take would be buried (202), a partition given up left to no one
        if state.owned:
            start_polling(w)
        return
    # a process that is stopping gives its partitions up: they are shared among the others
    # (each is taken once its lease document says it is free)
    plan = parts.plan(w.id, state.parts, state.live - state.leaving, state.dead,
                      state.owned | state.giving)
    await_handover(w, plan.wait)
    for k in plan.give:
        if k in state.checking:  # a dead process's runs in it are decided here first: its
            continue  # next owner, taking it from a live process, would not read them
        if k not in state.giving:  # (owned, or named by its lease after a lapse)
            state.owned.discard(k)
            state.giving.add(k)
            for docid in [i for i in state.held if parts.partition_of(i) == k]:
                running.drop(w, docid)
            for run in state.runs.values():  # shown running: the next owner leaves it
                if parts.partition_of(run.docid) == k and not run.visible \
                        and run.ended is None:
                    running.fire(w, (SHOW, run.token), now)
    docs = [parts.part_doc(w.name, k, w.id, format_date(now), state.parts.get(k))
            for k in plan.take]
    if not docs:
        start_polling(w)  # nothing to take: what it owns is what it gets
    docs += ready_to_give(w, now)
    if docs:
        state.parts_pending = True
        w.peers.ask(("parts", docs))


def await_handover(w, waiting: tuple[int, ...]) -> None:
    """Partitions of its own still held by a live process, which gives them up as soon as
    their runs are shown (a process joining its name): the registry is read again within
    ``REREAD`` seconds rather than at the next beat, for a lease at most."""
    state = w.state
    if not waiting:
        state.awaiting = None
        return
    mono = w.peers.mono()
    if state.awaiting is None:
        state.awaiting = mono
    if mono - state.awaiting < w.settings.lease:
        w.peers.ask(("read", None))


def ready_to_give(w, now: datetime) -> list[dict]:
    """The lease documents, free, of the partitions given up whose runs are all shown.

    Only a lease that names this process, as last read, is written free. One that does not
    is no longer being given up: it is free already, or another process took it (a give
    answered 202 lands on a copy that lags, and the next read shows the taker's version;
    written free over it, the lease would say no one runs what the taker runs, and a third
    process could take it)."""
    state = w.state
    for k in [k for k in state.giving if (state.parts.get(k) or {}).get("owner") != w.id]:
        state.giving.discard(k)
    ready = [k for k in state.giving
             if not any(parts.partition_of(run.docid) == k and not run.visible
                        for run in state.runs.values())]
    return [parts.part_doc(w.name, k, None, format_date(now), state.parts.get(k))
            for k in sorted(ready)]


def give_when_shown(w, now: datetime) -> None:
    if w.state.giving and not w.state.parts_pending:
        for run in list(w.state.runs.values()):
            if parts.partition_of(run.docid) in w.state.giving and not run.visible:
                running.fire(w, (SHOW, run.token), now)
        docs = ready_to_give(w, now)
        if docs:
            w.state.parts_pending = True
            w.peers.ask(("parts", docs))


def parts_written(w, docs: list[dict], answers: list[dict], now: datetime) -> None:
    state = w.state
    state.parts_pending = False
    took = []
    asked: set[str] = set()
    # Whose open intents to read for a partition taken: its last owner's, and those of every
    # process known dead (a partition may have passed through a process that died before it
    # read its predecessor's intents, or been freed by one whose runs then died with it).
    known_dead = set(state.dead) - {w.id}
    for doc, answer in zip(docs, answers, strict=False):
        k = doc["partition"]
        was = (state.parts.get(k) or {}).get("owner")
        if "error" in answer:
            if doc.get("owner") is None:  # not given up (written meanwhile): read again
                state.giving.discard(k)
            continue
        if answer.get("accepted"):  # a 202: not proof that no other process took it
            state.parts.pop(k, None)
            continue
        doc["_rev"] = answer.get("rev", doc.get("_rev"))
        state.parts[k] = doc
        share(state)
        if doc.get("owner") == w.id and not w.away():
            state.owned.add(k)
            took.append(k)
            owners = known_dead | ({was} if isinstance(was, str) and was != w.id else set())
            if owners:  # their runs in it: decided before anything of it is
                state.checking[k] = tuple(sorted(owners))
                asked |= owners
                # and their intents of its due tasks read by id (probes)
                state.inherited[k] = (state.checking[k], to_ms(now))
        elif doc.get("owner") is None:
            state.giving.discard(k)
    polling = state.polling
    start_polling(w)  # (its first round scans the newest changes)
    if took:
        state.counts["partitions"] = len(state.owned)
        log.info("worker %s took %d partition(s) (%d of %d owned)", w.name, len(took),
                 len(state.owned), parts.PARTITIONS)
        if polling:  # their tasks: among the newest changes at once (a view may be
            w.reads.scan(w.name, w.settings, frozenset(took))  # indexing), and the due view
        w.poller.now.set()
    if asked:
        w.reads.orphans(sorted(asked))


def start_polling(w) -> None:
    """The poller's first round (a scan of the newest changes, then the due view) once
    this process knows its partitions: what it finds is decided with them."""
    if not w.state.polling:
        w.state.polling = True
        w.poller.start(frozenset(w.state.owned))


def holder_of(w, docid: str) -> str | None:
    """The process that holds ``docid``: the owner of its partition, as last read."""
    owner = (w.state.parts.get(parts.partition_of(docid)) or {}).get("owner")
    return owner if isinstance(owner, str) else None


def intent_written(w, write: r.Write, answer, now: datetime) -> None:
    """A run's intent landed (or not): the run may begin once its task falls due."""
    if write.kind is r.Kind.UNINTENT and answer.failed is not None \
            and not w.stop_requested.is_set():
        # A withdrawal the database could not take (the writer tried, with backoff): sent
        # again. An intent left open is decided, once its process is found dead, as a run
        # that may have begun: recorded from the task's next run of that number, or run.
        w.state.intent_out.append(write)
        return
    if write.kind is not r.Kind.INTENT or write.token is None:
        return
    docid = write.doc.get("task")
    held = w.state.held.get(docid)
    run = held.armed if held is not None else None
    if answer.conflict and answer.fresh is not None \
            and answer.fresh.get("token") == write.token:
        write.doc["_rev"] = answer.fresh["_rev"]  # ours: a lost answer, sent again
    elif answer.conflict and run is not None and run.token == write.token:
        # Its id is another intent's: one this process wrote for that run before, not
        # withdrawn yet (the task let go and held again: its count of times made ready
        # began again). Made ready anew, under the next id.
        held.armed = None
        held.rearms += 1
        running.arm(w, held, now, gated=True)  # (a gated run is made once let through)
        return
    elif answer.failed is not None and run is not None and run.token == write.token \
            and not w.stop_requested.is_set():
        # The database could not be reached (the writer tried, with backoff): the run
        # waits for its intent, sent again, rather than begin with none (had its process
        # died then, it would have run again with no record of this one).
        log.warning("task %s: the intent of its run could not be written yet (%s): sent "
                    "again, the run waits for it", docid, answer.failed)
        w.state.intent_out.append(write)
        return
    elif not answer.ok:
        # Refused by the database (it will not take it again): the run goes on all the
        # same, with no intent behind it; said, so that it is seen.
        log.warning("task %s: the intent of its run could not be written (%s): it runs "
                    "without one", docid, answer.refused or answer.failed or "conflict")
        write.doc.pop("_rev", None)
    if run is None or run.token != write.token:  # made ready anew, or let go meanwhile
        if write.doc.get("_rev"):
            w.state.intent_out.append(intents.withdraw(write.doc, write.token))
        return
    run.landed = True
    # what is kept of it: where the record goes (a burst held long ahead holds thousands)
    run.intent = {"_id": write.doc["_id"], **({"_rev": write.doc["_rev"]}
                                             if write.doc.get("_rev") else {})}
    running.line_up(w, held)


DECIDED_LIMIT = 100_000  # intents decided, remembered so that each is decided once

#: Milliseconds past the take of a partition within which a task's run may be one its dead
#: owner began (its lease had run out by the take; ARM_AHEAD and the skew allowed for).
PROBE_MS = int((running.ARM_AHEAD + 2 * intents.SKEW) * 1000)


def probes(w, verify: dict[str, str]) -> dict[str, tuple[int, tuple]]:
    """Of the held tasks to read back (``verify``), those of a partition taken from dead
    processes that were due by its take (by :data:`PROBE_MS`): the run each would make
    ready, with those processes, so that their intents of it are read by id with the task
    (``_find``, which found their open intents when the partition was taken, reads one copy
    of each range on a cluster: a copy that lags can miss one). Task id -> (run number,
    the processes)."""
    state, found = w.state, {}
    if not state.inherited:
        return found
    for docid in verify:
        inherited = state.inherited.get(parts.partition_of(docid))
        held = state.held.get(docid)
        if inherited is not None and held is not None \
                and held.due_ms <= inherited[1] + PROBE_MS:
            found[docid] = (r.next_number(held.doc), inherited[0])
    return found


def _as_read(task: dict | None) -> str:
    if task is None:
        return "none"
    info = rules.info(task)
    return f"{task.get('status')} at {task.get('_rev')}, {rules.counter(info, 'runs')} run(s)"


def orphans(w, owners: list[str], found: list, now: datetime, probed: bool = False) -> None:
    """The open intents of processes found dead (after.worker.intents): each decided once.
    ``probed``: found by id as their tasks were read back (see :func:`probes`), not by the
    query for ``owners``."""
    state = w.state
    found = [item for item in found if (item[0].get("_id"), item[0].get("_rev"))
             not in state.decided]
    if found and probed:
        log.info("open intents of %s found by id that the query of open intents did not "
                 "return (a copy that lagged): %d", ", ".join(sorted(
                     {str(doc.get("process")) for doc, _, _ in found})), len(found))
    elif found:
        due = sum(intents.was_due(doc, now) for doc, _, _ in found)
        log.info("open intents of %s: %d, %d of them due", ", ".join(owners), len(found), due)
    for intent_doc, task, expires in found:
        docid = intent_doc.get("task")
        if not isinstance(docid, str) or parts.partition_of(docid) not in state.owned:
            continue
        if docid in state.runs or any(run.docid == docid for run in state.detached.values()):
            # run here already (read back before this intent was found, or begun before a
            # lapse and still going as the partition is taken again): not taken over under
            # its own run; the intent stays open (withdrawn later: that run of its number
            # began past the dead process's lease, see intents.begun_after)
            log.info("task %s: an open intent of run %s of %s found as it runs here: left "
                     "as it is", docid, intent_doc.get("number"), intent_doc.get("process"))
            continue
        if len(state.decided) >= DECIDED_LIMIT:
            state.decided.clear()
        state.decided.add((intent_doc.get("_id"), intent_doc.get("_rev")))
        for write in intents.orphan(intent_doc, task, w.me, now, rules.instant(expires)):
            if write.kind in (r.Kind.INTENT, r.Kind.UNINTENT):
                if write.kind is r.Kind.UNINTENT and intents.was_due(intent_doc, now):
                    log.info("task %s: the intent of run %s of %s, due %s, withdrawn: not "
                             "begun (the task as read: %s; that process's lease until %s)",
                             docid, intent_doc.get("number"), intent_doc.get("process"),
                             intent_doc.get("scheduled"), _as_read(task), expires)
                state.intent_out.append(write)
            else:
                log.warning("task %s: its run may have begun on %s, which stopped: "
                            "recorded interrupted, run again", docid,
                            intent_doc.get("process"))
                running.drop(w, docid)
                state.outbox.setdefault(write.docid, []).append(write)
    for k, checked in list(state.checking.items()):
        if not probed and set(checked) <= set(owners):
            del state.checking[k]
    for docid, doc in list(state.waiting_check.items()):  # decided now
        if parts.partition_of(docid) not in state.checking:
            del state.waiting_check[docid]
            carrying.changed(w, doc, True, now)
    for held in list(state.held.values()):  # what fell due meanwhile
        running.line_up(w, held)


def lapse(worker, mono: float) -> None:
    """This process's lease may have lapsed (frozen, starved, cut off): another process may
    have found it dead and be taking its partitions, so it lets go of every partition, every
    task held, every run not begun, and holds off for a lease. Runs already going carry on
    (at least once, as for a kill). The leases that still name it are given up once it is
    back (:func:`plan`): another process may be the one to own them now."""
    state = worker.state
    if not state.away_until:
        log.warning("worker %s: this process's lease may have lapsed (frozen, starved, or "
                    "cut off from the database): it lets go of its partitions and holds "
                    "off for %g s, so that nothing runs twice", worker.name,
                    worker.settings.lease)
    state.away_until = mono + worker.settings.lease
    worker.lease_until = float("-inf")
    state.owned.clear()
    state.giving.clear()
    state.counts["partitions"] = 0
    for docid in list(state.held):
        running.drop(worker, docid)
    state.line.clear()
    for run in [run for run in state.runs.values() if worker.runner.withdraw(run.token)]:
        running.let_go(worker, run)
