"""How a worker process stops (DESIGN: graceful stop).

SIGTERM (``after stop``): take nothing new, hand back what is held but not running (a start
written ahead of its instant is undone first), let running jobs finish within ``grace``
seconds while their ends are written, then record what is still running as ``interrupted``
and hand it back. A second signal stops at once: what is held returns to the pool when the
lease runs out. Returns the exit code: 0 after a graceful stop, 130 after a hurried one.
"""

from __future__ import annotations

import logging

from . import decide as d
from . import task as rules
from .decide import Kind, Write

log = logging.getLogger("after.worker")


def shutdown(worker) -> int:
    log.info("worker %s stopping", worker.name)
    if worker.follower is not None:
        worker.follower.stop(timeout=1.0)
    worker.timer.stop(timeout=2)
    if worker.stop_now.is_set():
        return stopped(worker, 130, "stopped at once: held and running tasks return when the "
                                    f"lease ({worker.settings.lease:g}s) runs out")
    held = worker.held
    worker._flush([Write(Kind.HANDBACK, rules.hand_back(
        rules.unfence(h.doc) if h.waiting_to_launch else h.doc))
        for h in held.values() if not h.running or h.waiting_to_launch])
    deadline = worker.peers.now().timestamp() + worker.settings.grace
    while (worker.detached or any(h.running and not h.waiting_to_launch
                                  for h in held.values())) and not worker.stop_now.is_set():
        now = worker.peers.now()
        if now.timestamp() >= deadline:
            break
        writes = []
        for kind, value in worker._drain(min(0.5, deadline - now.timestamp())):
            if kind == "finished":
                writes.extend(worker.on_finished(*value, now=now))
            elif kind == "unbegun":
                writes.extend(worker.on_unbegun(*value))
            elif kind == "change" and value.get("_id") in held:  # a newer revision to end
                entry = held[value["_id"]]
                if rules.rev_number(value.get("_rev")) > rules.rev_number(entry.doc["_rev"]):
                    entry.doc = value
        worker._flush(writes + worker._deadlines(now), now)
    now, leftovers = worker.peers.now(), []
    for entry in held.values():
        if entry.running and entry.token and not entry.waiting_to_launch:
            outcome = rules.Outcome(rules.INTERRUPTED, entry.started or now, now,
                                    error="interrupted: the worker stopped before the run "
                                          "ended (grace period over)")
            worker.recorder.record(d.run_record(entry.doc, entry.spec, outcome, worker.me))
            leftovers.append(Write(Kind.HANDBACK, rules.hand_back(entry.doc)))
    for entry in list(worker.detached.values()):  # overlap-allow runs: recorded, not rerun
        if entry.token:
            outcome = rules.Outcome(rules.INTERRUPTED, entry.started or now, now,
                                    error="interrupted: the worker stopped before the run "
                                          "ended (grace period over; overlap allow: not run "
                                          "again)")
            leftovers.append(d.end_detached(entry.doc, entry.spec, entry.token, outcome,
                                            worker.me, now, lambda owner: False))
    worker._flush(leftovers, now)
    return stopped(worker, 130 if worker.stop_now.is_set() else 0)


def stopped(worker, code: int, why: str | None = None) -> int:
    worker.runner.shutdown()
    worker.caps.release_all()  # its runs are over or handed back: their slots are free
    worker.peers.stop(timeout=2)
    if why:
        log.warning("%s", why)
    else:
        worker.recorder.stop(timeout=5)
        worker.peers.leave()
    if worker.writer.pending and code == 0:
        log.error("%d task update(s) could not be written before exit; their leases will "
                  "expire and another process will take them", len(worker.writer.pending))
    log.info("worker %s stopped", worker.name)
    return code
