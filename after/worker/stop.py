"""How a worker process stops, and confines a fault.

- :func:`shutdown` (SIGTERM, ``after stop``; DESIGN: graceful stop): start nothing new, let
  the runs going finish within ``grace`` seconds while their ends are written, then record
  what still runs ``interrupted`` and show it ``waiting`` again; the partitions are given up
  at once (those with runs going once their runs are shown ``running``), so that another
  process takes them while the runs finish; then leave the registry. A second signal stops at once:
  the partitions return to the pool when the lease runs out. Returns the exit code: 0 after
  a graceful stop, 130 after a hurried one.
- :func:`fault`: a failure of the worker's own code while handling one task is that task's
  alone: it is forgotten, and ends ``error`` with a one-line reason.
"""

from __future__ import annotations

import logging
from datetime import datetime

from after.rules import task as rules
from after.rules.dates import format_date
from after.rules.redact import redact_text
from after.worker import decide as d
from after.worker import leases, running, writing
from after.worker import partitions as parts
from after.worker import runs as r

log = logging.getLogger("after.worker")


def shutdown(worker) -> int:
    log.info("worker %s stopping", worker.name)
    if worker.follower is not None:
        worker.follower.stop(timeout=1.0)
    worker.timer.stop(timeout=2)
    if worker.stop_now.is_set():
        return stopped(worker, 130, "stopped at once: the tasks of its partitions return when "
                                    f"the lease ({worker.settings.lease:g}s) runs out")
    state = worker.state
    for docid in list(state.held):
        running.drop(worker, docid)
    state.line.clear()
    for run in [run for run in state.runs.values() if worker.runner.withdraw(run.token)]:
        running.let_go(worker, run)  # not begun: nothing ran
    # Every partition given up now, not after the grace period: one with no run going is
    # free at once, one with runs once they are shown running (the next owner leaves those
    # to this process), so tasks due while the runs finish start elsewhere on time.
    state.giving |= state.owned
    state.owned.clear()
    leases.give_when_shown(worker, worker.peers.now())
    worker._publish()  # the next heartbeat says "stopping": the others share its partitions
    deadline = worker.peers.clock() + worker.settings.grace
    while (state.runs or state.detached or state.inflight or state.outbox) \
            and not worker.stop_now.is_set():
        now = worker.peers.now()
        if now.timestamp() >= deadline:
            break
        for kind, value in worker._drain(min(0.5, deadline - now.timestamp())):
            if kind in ("finished", "written", "unbegun", "change", "parts", "registry",
                        "beat"):
                try:
                    worker._handle(kind, value, now)
                except Exception as exc:
                    worker._fault(kind, value, exc, now)
        running.deadlines(worker, now)
        running.ends(worker, now, force=True)
        leases.give_when_shown(worker, now)
        writing.flush(worker)
        worker._publish()
    now = worker.peers.now()
    for run in list(state.runs.values()) + list(state.detached.values()):
        outcome = rules.Outcome(rules.INTERRUPTED, run.started or now, now,
                                error="interrupted: the worker stopped before the run ended "
                                      "(grace period over)")
        if run.detached:  # overlap-allow runs: recorded, not run again
            running.end(worker, run, (outcome, None, None), now)
            continue
        record = r.run_record(run.doc, run.spec, outcome, worker.me)
        if run.intent is not None:  # written over its intent
            record.update(_id=run.intent["_id"], _rev=run.intent.get("_rev"))
        worker.recorder.record(record)
        run.visible = run.visible or run.docid in state.inflight
        running.let_go(worker, run)  # shown running: back to waiting, for the next owner
    writing.flush(worker)
    settle_writes(worker, timeout=5.0)
    worker.writer.stop(timeout=1)
    worker.intents.stop(timeout=1)
    give_up_partitions(worker, now)
    return stopped(worker, 130 if worker.stop_now.is_set() else 0)


def settle_writes(worker, timeout: float) -> None:
    """Take in the answers to the writes still out (their runs' records go out with them),
    for at most ``timeout`` seconds."""
    deadline = worker.peers.mono() + timeout
    state = worker.state
    while (state.inflight or state.outbox or state.intent_out or worker.intents.inflight) \
            and worker.peers.mono() < deadline:
        now = worker.peers.now()
        for kind, value in worker._drain(0.2):
            if kind in ("written", "change", "beat"):
                try:
                    worker._handle(kind, value, now)
                except Exception as exc:
                    worker._fault(kind, value, exc, now)
        writing.flush(worker)


def give_up_partitions(worker, now: datetime) -> None:
    """Write the partitions this process owns free, so that another takes them at once."""
    state = worker.state
    owned = sorted(state.owned | state.giving)
    docs = [parts.part_doc(worker.name, k, None, format_date(now), state.parts.get(k))
            for k in owned if state.parts.get(k, {}).get("owner") == worker.id]
    state.owned.clear()
    state.giving.clear()
    if docs:
        worker.peers.write_parts(docs)


def stopped(worker, code: int, why: str | None = None) -> int:
    worker.runner.shutdown()
    worker.reads.stop()
    worker.gates.close()  # its runs are over or handed back: their slots are free
    worker.peers.stop(timeout=2)
    if why:
        log.warning("%s", why)
    else:
        worker.recorder.stop(timeout=5)
        worker.peers.leave()
    if worker.state.inflight and code == 0:
        log.error("%d task update(s) could not be written before exit; they are decided "
                  "again by the next owner of their partitions", len(worker.state.inflight))
    log.info("worker %s stopped", worker.name)
    return code




def fault(worker, kind: str, value, exc: Exception, now: datetime) -> None:
    docid, doc = event_task(kind, value, worker.state)
    if docid is None:
        log.exception("unexpected error handling %s", kind)
        return
    message = reason(exc, "process")
    log.error("task %s: %s", docid, message, exc_info=exc)
    running.drop(worker, docid)
    worker.state.counts["faults"] += 1
    worker.emit("fault")
    if doc is None or doc.get("worker") != worker.name or doc.get("status") in rules.FINISHED:
        return
    running.do(worker, [d.Drop(docid), r.Write(r.Kind.ERROR, rules.mark_error(doc, message, now))],
               now)


def event_task(kind: str, value, state) -> tuple[str | None, dict | None]:
    """The id (and document, when the event carries one) of the task an inbox event is
    about; (None, None) when it is about no task."""
    if kind in ("change", "recheck", "written") and isinstance(value, dict):
        docid = value.get("_id")
        return (docid if isinstance(docid, str) else None), value
    if kind == "fire" and isinstance(value, tuple):
        held = state.held.get(value[1])
        return value[1], held.doc if held is not None else None
    if kind in ("finished", "unbegun"):
        run = state.runs.get(value[0])
        return value[0], run.doc if run is not None else None
    return None, None


def reason(exc: BaseException, stage: str) -> str:
    """One line, at most about 350 characters, with no secret in it."""
    detail = (str(exc).strip().splitlines() or [""])[0][:300]
    return redact_text(f"the worker could not {stage} this task: "
                       f"{type(exc).__name__}: {detail}".rstrip(": "))
