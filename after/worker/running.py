"""Running: what the loop does with the tasks it holds, from the timer to the run's end.

A task held on the timer (:func:`hold`) has its run made at once (:func:`arm`: the task
as the run sees it, its intent written in the runs database), and what its job receives
made two seconds ahead (:func:`ready_ahead`); when it falls due (:func:`fire`) it passes its
gates and goes in line, and is launched as the job threads have room (:func:`fill`); its
end (:func:`finished`) becomes the write of its task (:func:`end`), and once that write is
answered the run is over (:func:`over`). Functions of the
:class:`~after.worker.loop.Worker` ``w``, on its thread: they read and change its state, and
nothing else does.
"""

# Longer than 500 lines on purpose: the life of a run on the loop, from the timer to its
# end, in the order it happens; split, a reader would follow one run across files.

from __future__ import annotations

import logging
from datetime import datetime

from after.jobs import JobError
from after.rules import task as rules
from after.rules.dates import format_date, from_ms, to_ms
from after.worker import check, intents, oplog
from after.worker import decide as d
from after.worker import partitions as parts
from after.worker import runs as r
from after.worker.gates import ASKED
from after.worker.runner import timed_out
from after.worker.state import Held, Run, rank

log = logging.getLogger("after.worker")

# timer keys: (RUN, id) a held task's instant, (ARM, id) its run made ready ARM_AHEAD
# seconds before, (SHOW, token) a run to show running, (GATE, id) a capped task tried again,
# AGAIN: what a read back could not confirm is read again (REREAD seconds later)
RUN, ARM, SHOW, GATE = "run", "arm", "show", "gate"
AGAIN = ("reread", "")
ARM_AHEAD = 2.0
REREAD = 0.25  # seconds between two read backs of what one could not confirm
SMOOTHING = 0.2  # weight of the newest run in the running mean of run durations
QUEUE_FOR = 0.5  # seconds of work the job threads' queue may hold, at the runs' mean length
ENDS_WAIT = 1.0  # seconds the ends of runs may wait while a burst is launched
WRITES_AHEAD = 4  # batches of task writes made ahead of the writer's answers (see ends)


def hold(w, hold: d.Hold, now: datetime) -> None:
    """Hold a task on the timer; its run is made at once, its intent written (a burst's
    intents go out as its tasks come in, not all at its instant); what its job receives is
    made ARM_AHEAD seconds before its instant (a copy of the task, held that long only)."""
    docid = hold.doc["_id"]
    was = w.state.held.get(docid)
    if was is not None and was.doc.get("_rev") == hold.doc.get("_rev") \
            and was.due_ms == hold.due_ms:
        return  # the same version again (a poll, a read back): held already
    # a newer version: its run is made ready anew, its intent under an id of its own
    rearms = was.rearms + 1 if was is not None and was.armed is not None else 0
    if was is not None:
        withdraw(w, was)
    w.state.line.remove(docid)
    if w.state.gated.pop(docid, None) is not None:
        w.gates.forget(docid)
    held = w.state.held[docid] = Held(hold.doc, hold.spec, hold.due_ms,
                                      rank=rank(hold.doc, hold.due_ms))
    held.rearms = rearms
    w.state.verify[docid] = hold.doc.get("_rev")  # read back now: confirmed long before
    w.timer.add((RUN, docid), hold.due_ms, None)  # its instant when it is known ahead
    arm(w, held, now)
    arm_ms = hold.due_ms - int(ARM_AHEAD * 1000)
    if arm_ms <= to_ms(now):
        ready_ahead(w, held)
    else:
        w.timer.add((ARM, docid), arm_ms, None)


def arm(w, held: Held, now: datetime, gated: bool = False) -> None:
    """Make a held task's run (the task as its run sees it) and write its intent
    (after.worker.intents): the run may begin once the intent is written. A gated one is
    made once its gates let it through (``gated``); an overlap-allow run's start is written
    when it falls due."""
    if held.armed is not None or held.spec.overlap == rules.ALLOW and held.spec.repeat \
            or r.gated(held.spec) and not gated:
        return
    docid = held.doc["_id"]
    due = from_ms(held.due_ms)
    token = new_token(w, held.rearms)
    started = r.begin(held.doc, held.spec, due, w.id, due, token)
    run = held.armed = Run(docid, token, started, held.spec, held.due_ms)
    run.intent = intents.intent(started, held.spec, w.me, run.token, due, now)
    w.state.intent_out.append(intents.write(run.intent, run.token))
    if held.due_ms - int(ARM_AHEAD * 1000) > to_ms(now):
        # the task as its run sees it is made again ARM_AHEAD before its instant: a burst
        # held a minute ahead would keep thousands of copies (1 KB each, measured)
        run.doc = None


def begun(w, held: Held) -> Run:
    """The run made ready of ``held``, with the task as it sees it (made again if it was
    let go: the same as :func:`arm` made, from the same version)."""
    run = held.armed
    if run.doc is None:
        due = from_ms(held.due_ms)
        run.doc = r.begin(held.doc, held.spec, due, w.id, due, run.token)
    return run


def ready_ahead(w, held: Held) -> None:
    """ARM_AHEAD seconds before its instant: what the job receives is made (so that the
    instant costs a hand-over to a thread), and the task read back (a move or a deletion
    leaves no trace in this name's feed)."""
    if held.armed is not None and held.armed.context is None:
        w.runner.prepare(begun(w, held))
    w.state.verify[held.doc["_id"]] = held.doc.get("_rev")


def withdraw(w, held: Held) -> None:
    """A run made ready will not begin: its intent goes (once written)."""
    run, held.armed = held.armed, None
    if run is not None and run.intent is not None and run.intent.get("_rev") \
            and run.docid not in w.state.runs:
        w.state.intent_out.append(intents.withdraw(run.intent, run.token))


def new_token(w, rearms: int | None = None) -> str:
    """A run's token, unique in this process; a run made ready ahead says how many times
    its task was made ready before for that run (``/K``): its intent's id is derived from
    that count, not from the token, so that a successor can compute it
    (:func:`after.worker.intents.expected`)."""
    token = f"{w.id.rsplit(':', 1)[-1]}.{next(w.state.tokens)}"
    return token if rearms is None else f"{token}/{rearms}"


def drop(w, docid: str) -> None:
    state = w.state
    held = state.held.pop(docid, None)
    if held is not None:
        w.timer.remove((RUN, docid))
        w.timer.remove((ARM, docid))
        withdraw(w, held)
        if held.spec.rate is not None:
            w.gates.forget_rate(docid)  # a token it took stays spent
    state.line.remove(docid)
    if state.gated.pop(docid, None) is not None:
        w.gates.forget(docid)


def rank_of(w, docid: str) -> tuple[int, int]:
    held = w.state.held.get(docid)
    return (0, 0) if held is None else held.rank


def fire(w, key: tuple[str, str], now: datetime) -> None:
    if key == AGAIN:
        w.state.verify.update(w.state.reread)
        w.state.reread = {}
        return
    kind, ident = key
    if kind == SHOW:  # (a detached run begins once its start is written: shown then)
        run = run_of(w, ident)
        if run is not None and not run.visible and not run.detached and run.ended is None \
                and run.docid not in w.state.inflight:
            w.state.outbox.setdefault(run.docid, []).append(
                r.Write(r.Kind.VISIBLE, run.doc, spec=run.spec, token=run.token))
        return
    held = w.state.held.get(ident)
    if held is None or ident in w.state.runs:
        return
    if kind == ARM:
        ready_ahead(w, held)
        return
    if w.away() or parts.partition_of(ident) not in w.state.owned:
        drop(w, ident)
        return
    due = from_ms(held.due_ms)
    if rules.missed(held.spec, due, now):
        drop(w, ident)
        log.warning("task %s missed its run due %s", ident, format_date(due))
        do(w, [r.missed(held.doc, held.spec, due, w.me, now)], now)
        return
    if r.gated(held.spec):
        verdict = w.gates.ask(held, now)
        if verdict == ASKED:  # the gates' thread answers on the inbox (gate_answer)
            w.state.gated[ident] = held.due_ms
            return
        if verdict == "wait":  # tried again as a slot frees, or every SLOT_RETRY
            w.state.gated[ident] = held.due_ms
            w.timer.add((GATE, ident), to_ms(now) + w.gates.retry_ms, None)
            return
        w.state.gated.pop(ident, None)
        if verdict is not None:  # skipped, or an error
            drop(w, ident)
            do(w, verdict, now)
            return
    arm(w, held, now, gated=True)
    held.fired = True
    line_up(w, held)


def ready(w, held: Held) -> bool:
    """May a held task that fell due go in line: its version read back and found current
    (:func:`confirmed`), its intent written (or none needed), its partition not being
    checked for a dead process's runs (after.worker.intents)?"""
    if parts.partition_of(held.doc["_id"]) in w.state.checking or not held.confirmed:
        return False
    return held.armed is None or held.armed.landed


def line_up(w, held: Held) -> None:
    """A held task goes in line once it fell due and is :func:`ready` (whichever of its
    instant, its read back, its intent's answer or its partition's check comes last)."""
    docid = held.doc["_id"]
    if held.fired and ready(w, held) and docid not in w.state.line:
        w.state.line.add(docid, rank_of(w, docid))


def confirmed(w, current: dict[str, str], again: list[str]) -> None:
    """The read back of held tasks answered: those whose held version it found current may
    run (a changed one comes back as a recheck); those it could not read are read again."""
    for docid, rev in current.items():
        held = w.state.held.get(docid)
        if held is None or held.doc.get("_rev") != rev or held.confirmed:
            continue
        held.confirmed = True
        line_up(w, held)
    for docid in again:
        held = w.state.held.get(docid)
        if held is not None and not held.confirmed:
            w.state.reread[docid] = held.doc.get("_rev")


def free_room(w) -> int:
    """Runs that may be launched now: threads free, and a queue in front of them as deep
    as the pool works through in :data:`QUEUE_FOR` seconds at the runs' mean length."""
    pool = w.settings.pool
    depth = 0
    if w.mean_run is not None:
        depth = min(w.settings.batch, int(pool * QUEUE_FOR / max(w.mean_run, 1e-4)))
    return pool + depth - len(w.runner.active)


def fill(w, now: datetime) -> None:
    """Launch the due tasks waiting in line, while there is room."""
    state = w.state
    room = free_room(w)
    while room > 0 and len(state.line) and not w.away() and not state.paused:
        docid = state.line.pop()
        held = state.held.pop(docid, None)
        if held is None:
            continue
        w.timer.remove((RUN, docid))
        w.timer.remove((ARM, docid))
        launch(w, held, now)
        room -= 1


def launch(w, held: Held, now: datetime) -> None:
    docid = held.doc["_id"]
    if held.armed is not None:  # made ready ahead, as begun at its instant
        run = w.state.runs[docid] = begun(w, held)
        # it begins now (later when it waited, in line or for its read back): the task shown
        # running says so, and a takeover's record of it (a run cut by a stop past its grace,
        # begun again by the next owner as the same attempt, is one run only if it began
        # after the first ended: after.audit.rerun_after)
        run.doc[rules.NS]["started"] = format_date(now)
    else:
        run = made(w, held, now)
        if run is None:
            return
    go(w, run, now)
    w.gates.begun(docid, held.spec, now)
    w.state.versions.pop(docid, None)  # (a debounced task's wait is over)
    # shown running if it goes on: launches come in time order, so a queue suffices (show)
    w.state.to_show.append((w.peers.mono() + w.settings.visible, run.token))


def made(w, held: Held, now: datetime) -> Run | None:
    """The run of a held task, made now (None: a detached run, begun once its start is
    written)."""
    docid, spec = held.doc["_id"], held.spec
    token = new_token(w)
    started = r.begin(held.doc, spec, from_ms(held.due_ms), w.id, now)
    write = r.detach(started, spec, token, from_ms(held.due_ms), now) \
        if spec.overlap == rules.ALLOW and spec.repeat is not None else None
    if write is not None:  # begun once its start (the next occurrence) is written
        w.state.detached[token] = Run(docid, token, write.doc, spec, held.due_ms,
                                         detached=True)
        w.state.outbox.setdefault(docid, []).append(write)
        return None
    run = w.state.runs[docid] = Run(docid, token, started, spec, held.due_ms)
    return run


def begin_detached(w, run: Run, doc: dict, now: datetime) -> None:
    from after.rules.overlap import as_run

    run.doc = as_run(doc, run.token)
    w.runner.prepare(run)  # what the job sees: its own run
    run.doc = doc
    go(w, run, now)


def go(w, run: Run, now: datetime) -> None:
    w.state.tokens_of[run.token] = run.docid
    if run.spec.timeout:
        w.state.timed.add(run.token)
    lateness = w.runner.launch(run, job(w, run.spec.job), now)
    w.emit("start", job=run.spec.job, lateness=lateness)


def all_runs(w) -> list[Run]:
    return [*w.state.runs.values(), *w.state.detached.values()]


def timed(w) -> list[Run]:
    """The runs with a ``timeout`` (most have none: a turn need not look at the rest)."""
    return [run for token in w.state.timed if (run := run_of(w, token)) is not None]


def run_of(w, token: str) -> Run | None:
    docid = w.state.tokens_of.get(token)
    run = w.state.runs.get(docid) if docid is not None else None
    if run is not None and run.token == token:
        return run
    return w.state.detached.get(token)


def finished(w, docid: str, token: str, outcome: rules.Outcome, trace, response,
              now: datetime) -> None:
    w.runner.ended(token)
    seconds = max(0.0, (outcome.ended - outcome.started).total_seconds())
    w.mean_run = seconds if w.mean_run is None else \
        (1 - SMOOTHING) * w.mean_run + SMOOTHING * seconds
    run = w.state.detached.get(token) or w.state.runs.get(docid)
    if run is None or run.token != token or run.timed_out:
        log.warning("task %s: a run that had timed out or was taken over ended (%s)",
                    docid, outcome.outcome)
        return
    if run.cancel_ms is not None:  # it returned after a cancel (or a takeover)
        outcome = stopped(run, outcome)
    # In a burst, the ends wait until what is due is launched (their writes are not what
    # is late), and for room in the writer: see ends()
    run.ended = (outcome, trace, response)
    w.state.ends.append((run, w.peers.mono()))


def show(w, now: datetime) -> None:
    """Show ``running`` the runs that have gone on for ``--visible`` seconds."""
    queue, at = w.state.to_show, w.peers.mono()
    while queue and queue[0][0] <= at:
        _, token = queue.popleft()
        fire(w, (SHOW, token), now)


def ends(w, now: datetime, force: bool = False) -> None:
    """Write the ends of the runs that ended: once nothing due waits to be launched or to
    be begun by a job thread (a burst is begun first), nor for the intents and reads back
    its runs begin on (a backlog's next runs: on a cluster, the ends' writes slowed them,
    3 processes' drains 25% slower), or when the oldest has waited ENDS_WAIT seconds; as
    many as the writer has room for (all of them when ``force``: the process stops)."""
    state = w.state
    if not state.ends:
        return
    if not force and (len(state.line) or not w.fired.empty() or w.runner.queued()
                      or w.intents.inflight or state.unconfirmed) \
            and w.peers.mono() - state.ends[0][1] < ENDS_WAIT:
        return
    # No more ahead of the writer than it can send in the next turns: an end waiting here is
    # its run and outcome, a write made of it is two documents (the task, the run's record),
    # 3 KB; thousands that end at once in a burst would hold them all while the server
    # catches up (the peak of a process's memory in a burst of 50,000)
    room = len(state.ends) if force else \
        WRITES_AHEAD * w.writer.batch - w.writer.inflight - len(state.outbox)
    if room <= 0:
        return
    waiting, state.ends = state.ends[:room], state.ends[room:]
    for run, _since in waiting:
        if run.ended is not None and run_of(w, run.token) is run:  # (not written meanwhile)
            end(w, run, run.ended, now)


def end(w, run: Run, ended: tuple, now: datetime) -> None:
    """Write a run's end, once no other write of its task is in flight."""
    if run.docid in w.state.inflight or run.docid in w.state.outbox:
        run.ended = ended  # written once that write's answer is in (_written)
        return
    outcome, trace, response = ended
    run.ended = None
    if run.detached:
        write = r.end_detached(run.doc, run.spec, run.token, outcome, w.me, now,
                               lambda owner: owner in w.state.dead, trace=trace,
                               response=response)
    else:
        write = r.end(run.doc, run.spec, outcome, w.me, now, run.token, trace=trace,
                      response=response)
        if run.intent is not None and write.run is not None:
            write.run["_id"] = run.intent["_id"]  # written over its intent
            if run.intent.get("_rev"):
                write.run["_rev"] = run.intent["_rev"]
    log_end(w, run, outcome, write.doc, now, trace)
    w.state.outbox.setdefault(run.docid, []).append(write)


def log_end(w, run: Run, outcome: rules.Outcome, after: dict, now: datetime,
            trace: str | None = None) -> None:
    """One line of a run's end; a failure's traceback goes with it as ``traceback`` (a JSON
    log line's ``exception``; the text format keeps one line, the run record has it)."""
    if outcome.ok:
        log.info("done %s (job %s, attempt %d) in %.1f ms, started %.1f ms late",
                 run.docid, run.spec.job, max(1, rules.counter(run.doc.get(rules.NS),
                                                               "attempt")),
                 outcome.duration_ms, run.lateness * 1000)
    elif outcome.outcome == rules.STOPPED:
        log.info("canceled %s (job %s) while it ran, after %.1f ms", run.docid, run.spec.job,
                 outcome.duration_ms)
    else:  # what comes next: a retry at..., or none left (after.worker.oplog)
        log.warning("%s", oplog.run_ended(run.doc, after, run.spec, outcome, now),
                    extra={"traceback": trace} if trace else None)


def forget(w, run: Run) -> None:
    """A run is over here: nothing of it stays in memory; its slot (a cap) is free."""
    state = w.state
    if state.runs.get(run.docid) is run:
        del state.runs[run.docid]
    state.detached.pop(run.token, None)
    state.tokens_of.pop(run.token, None)
    state.timed.discard(run.token)
    if run.spec.concurrency is not None:  # (the occurrences it lets try are posted back)
        w.gates.release(run.docid)


def gate_answer(w, docid: str, verdict, now: datetime) -> None:
    """The gates' thread answered for a held occurrence: it fires again to take the answer.
    One no longer held that took a slot frees it."""
    if not w.gates.answered(docid, verdict):
        if verdict is None:
            w.gates.release(docid)
        return
    if docid in w.state.gated:
        w.timer.add((GATE, docid), 0, None)


def gate_retry(w, docids: list[str]) -> None:
    """A slot is free: the occurrences that wait for one try again, earliest first."""
    for docid in docids:
        if docid in w.state.gated:
            w.timer.add((GATE, docid), 0, None)


def over(w, over: d.Over) -> None:
    state = w.state
    run = run_of(w, over.token) if over.token is not None else None
    if run is not None:
        forget(w, run)
    for record in over.records:
        w.recorder.record(record)
    if over.outcome is not None:
        outcome = over.outcome.outcome
        state.counts["runs"] += outcome != rules.MISSED
        key = {rules.OK: "done", rules.MISSED: "missed",
               rules.STOPPED: "canceled"}.get(outcome, "failed")
        state.counts[key] += 1
        w.emit("finish", job=over.job, outcome=outcome,
                  duration=over.outcome.duration_ms / 1000)


def unbegun(w, docid: str, token: str) -> None:
    """A job thread came to a queued run once this process's lease may have lapsed: it
    did not begin it. The task is left to whichever process owns its partition now."""
    w.runner.ended(token)
    run = w.state.runs.get(docid)
    if run is None or run.token != token:
        return
    log.warning("task %s: its run was to begin after this process's lease may have run "
                "out (frozen or starved?): not begun", docid)
    let_go(w, run)


def let_go(w, run: Run) -> None:
    """A run not begun (or cut short by a stop) will not go on here."""
    state = w.state
    forget(w, run)
    state.counts["handed_back"] += 1
    w.emit("handed_back")
    if run.visible:  # shown running: back to waiting for the next owner
        state.outbox.setdefault(run.docid, []).append(r.hand_back(run.doc))


def stop(w, run: Run, now: datetime) -> None:
    """A ``cancel`` written while ``run`` goes: its job is told (``task.canceled``; an
    isolated run's process gets SIGTERM) and the run ends ``canceled`` when the job returns,
    or after :data:`after.rules.task.CANCEL_GRACE` seconds at most (see deadlines)."""
    if run.cancel_ms is not None or run.ended is not None or run.timed_out:
        return
    run.cancel_ms = to_ms(now) + int(rules.CANCEL_GRACE * 1000)
    w.runner.cancel(run.token)
    log.info("task %s: canceled while its job runs: the job is told (task.canceled) and its "
             "run ends within %g s", run.docid, rules.CANCEL_GRACE)


def fence(w, run: Run, newer: dict, now: datetime) -> None:
    """Another process took ``run`` over (this one was found dead: frozen or cut off past
    its lease) and runs it again: this run stops as a canceled one does (the job told, an
    isolated run's process group SIGTERMed, then killed after the grace), so that the two
    overlap for as short a time as the job allows. It is recorded ``interrupted``, as the
    other process records it, so that the record says so even when the other process died
    before writing its own (over its intent then; else beside the other's, ``late``, which
    says when it ended); the task itself is the other process's now (its end is not
    written)."""
    if run.ended is not None or run.timed_out:
        return
    run.fenced = True
    if run.cancel_ms is not None:  # already told to stop (a cancel)
        return
    run.cancel_ms = to_ms(now) + int(rules.CANCEL_GRACE * 1000)
    w.runner.cancel(run.token)
    log.warning("task %s: its run here was taken over by %s (this process's lease lapsed): "
                "the job is told to stop (task.canceled; an isolated one is killed within "
                "%g s)", run.docid, rules.info(newer).get("owner") or "another process",
                rules.CANCEL_GRACE)


def stopped(run: Run, outcome: rules.Outcome) -> rules.Outcome:
    """How a run told to stop ended, as recorded, with how long it ran: ``canceled``, or
    ``interrupted`` when it was taken over (:func:`fence`)."""
    seconds = max(0.0, (outcome.ended - outcome.started).total_seconds())
    if run.fenced:
        return rules.Outcome(rules.INTERRUPTED, outcome.started, outcome.ended,
                             error=f"interrupted: taken over by another process while it ran "
                                   f"(this process's lease had lapsed), after {seconds:.1f} s")
    return rules.Outcome(rules.STOPPED, outcome.started, outcome.ended,
                         error=f"canceled while running, after {seconds:.1f} s")


def deadlines(w, now: datetime) -> None:
    for run in [run for run in w.state.runs.values() if run.cancel_ms is not None
                and run.cancel_ms <= to_ms(now) and run.ended is None and not run.timed_out
                and run.token in w.runner.active]:  # (not one whose end waits to be written)
        w.runner.kill(run.token, "canceled")  # an isolated run's child: its thread frees
        run.timed_out = True  # (what its thread reports later is not recorded)
        end(w, run, (stopped(run, rules.Outcome(rules.STOPPED, run.started or now, now)),
                     None, None), now)
    for run in timed_out(timed(w), to_ms(now), w.runner.begun):
        w.runner.kill(run.token, "timeout")  # an isolated run's child: its thread frees
        run.timed_out = True
        outcome = rules.Outcome(rules.TIMEOUT, run.started or now, now,
                                error=rules.timeout_error(
                                    run.spec.timeout, run.token in w.runner.children))
        end(w, run, (outcome, None, None), now)


def self_check(w) -> None:
    """Held tasks with no timer entry, runs with no job thread (see after.worker.check):
    forgotten, and decided again from the database."""
    state = w.state
    runs = {run.token: run.docid for run in all_runs(w) if run.ended is None}
    held, lost, state.suspects = check.stuck(
        state.held, runs, lambda docid: (RUN, docid) in w.timer,
        set(state.line.waiting) | set(state.gated)
        | {docid for docid, held in state.held.items() if held.fired},  # (for its intent)
        w.runner.active,
        set(state.inflight) | set(state.outbox), state.suspects)
    for docid in held:
        log.warning("self-check: task %s is held by this process with no timer entry: "
                    "deciding again", docid)
        drop(w, docid)
        state.seen.pop(docid, None)
    for token in lost:
        run = run_of(w, token)
        if run is not None:
            log.warning("self-check: task %s is running under this process with no job "
                        "thread: deciding again", run.docid)
            let_go(w, run)
            state.seen.pop(run.docid, None)
    if held or lost:
        state.counts["corrected"] += len(held) + len(lost)
        w.emit("corrected", count=len(held) + len(lost))
        w.poller.now.set()

def job(w, name: str):
    """The job's function (or the JobError resolving it raised), once per process."""
    if name not in w.jobs:
        try:
            w.jobs[name] = w.registry.resolve(name)
        except JobError as exc:
            w.jobs[name] = exc
    return w.jobs[name]

def do(w, actions: list, now: datetime) -> None:
    """Carry out what a decision returned."""
    state = w.state
    for action in actions:
        if isinstance(action, r.Write):
            state.outbox.setdefault(action.docid, []).append(action)
        elif isinstance(action, d.Hold):
            if state.paused:  # the name is paused: nothing held (the resume polls)
                drop(w, action.doc["_id"])
            else:
                hold(w, action, now)
        elif isinstance(action, d.Drop):
            drop(w, action.docid)
        elif isinstance(action, d.Keep):  # (a poll's copy of the run's own version: no)
            run = state.runs.get(action.doc["_id"])
            if run is not None and rules.rev_number(action.doc.get("_rev")) > \
                    rules.rev_number(run.doc.get("_rev")):
                if r.taken_over(action.doc, run.doc, w.id):
                    fence(w, run, action.doc, now)
                run.doc = r.carry(action.doc, run.doc, w.id)
                if run.doc.get("status") == rules.CANCEL:
                    stop(w, run, now)
        elif isinstance(action, d.Ask):
            if action.owner not in state.asked:
                w.peers.ask(("confirm", action.owner))
            state.asked.setdefault(action.owner, []).append(action.doc)
        elif isinstance(action, d.Shown):
            run = run_of(w, action.token)
            if run is not None:
                run.doc, run.visible = action.doc, True
        elif isinstance(action, d.Begin):
            run = state.detached.get(action.token)
            if run is not None:
                begin_detached(w, run, action.doc, now)
        elif isinstance(action, d.Over):
            over(w, action)
        elif isinstance(action, d.Note):
            getattr(log, action.level)("%s", action.message)

