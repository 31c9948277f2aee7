"""Writing: the loop's task writes handed to the writer, one in flight per task, and what
their answers lead to (:func:`after.worker.decide.settle`). Functions of the
:class:`~after.worker.loop.Worker` ``w``, on its thread.
"""

from __future__ import annotations

from datetime import datetime

from after.rules import task as rules
from after.worker import carrying, leases, running
from after.worker import decide as d
from after.worker import runs as r


def flush(w) -> None:
    """Hand the writes decided to the writer: one in flight per task at most."""
    state, batch = w.state, []
    for docid in list(state.outbox):
        if docid in state.inflight:
            continue
        writes = state.outbox[docid]
        write = writes.pop(0)
        if not writes:
            del state.outbox[docid]
        state.inflight[docid] = write
        batch.append(write)
    w.writer.send(batch)
    if state.intent_out:
        w.intents.send(state.intent_out)
        state.intent_out = []


def written(w, answers: list, now: datetime) -> None:
    state = w.state
    view = carrying.view(w)
    for write, answer in answers:
        if write.kind in (r.Kind.INTENT, r.Kind.UNINTENT):
            leases.intent_written(w, write, answer, now)
            continue
        docid = write.docid
        if state.inflight.get(docid) is write:
            del state.inflight[docid]
        if answer.ok and write.kind is not r.Kind.RESOLVE:
            state.seen.saw(docid, rules.rev_number(write.doc.get("_rev")))
        if answer.failed is not None:
            state.counts["faults"] += 1
            w.emit("fault")
            state.seen.pop(docid, None)
            w.poller.now.set()
        try:
            running.do(w, d.settle(write, answer, view, now), now)
        except Exception as exc:
            w._fault("written", write.doc, exc, now)
        view = carrying.view(w)
        # the ends that waited for this write (any run of the task: two overlap-allow runs
        # may end while one write of it is out), one at a time
        if docid not in state.inflight and docid not in state.outbox:
            for run in [state.runs.get(docid), *state.detached.values()]:
                if run is not None and run.docid == docid and run.ended is not None:
                    running.end(w, run, run.ended, now)
                    if docid in state.inflight or docid in state.outbox:
                        break
        parked = state.parked.pop(docid, None)
        if parked is not None:
            carrying.changed(w, parked, False, now)
    leases.give_when_shown(w, now)
