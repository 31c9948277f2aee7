"""after.decide: what a process does about a task, as a table at a fixed ``NOW``.

No server, no clock, no threads: the view says what this process holds and which peers
are alive, as the worker's loop would from its memory and the peers' cache."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from after import decide as d
from after.decide import Confirm, Defer, Drop, Hold, Keep, Kind, Liveness, Restart, View, Write
from after.jobs import JobError

NOW = datetime(2026, 12, 1, 9, 0, 0, 250000, tzinfo=UTC)
ME = d.Identity(name="w", process="w@here:1:aaaaaa", host="here", pid=1)
PEER, GONE, STRANGER = "w@there:2:bbbbbb", "w@lost:3:cccccc", "w@new:4:dddddd"
LIVENESS = {PEER: Liveness.ALIVE, GONE: Liveness.DEAD}


def view(held=None, preferred=True, horizon=300):
    def check_job(name):
        if name == "missing":
            raise JobError("job.name: no job 'missing' in the jobs folder")

    return View(me=ME, horizon_ms=horizon * 1000, held=held or {},
                liveness=lambda owner: LIVENESS.get(owner, Liveness.UNKNOWN),
                preferred=lambda docid: preferred, check_job=check_job)


def task(status="waiting", in_s=60.0, owner=None, started=False, **fields):
    doc = {"_id": "t", "_rev": "3-x", "worker": "w", "status": status,
           "date": (NOW + timedelta(seconds=in_s)).isoformat().replace("+00:00", "Z"),
           "job": {"name": "hello", "arguments": []}, **fields}
    if owner:
        doc["after"] = {"owner": owner, "due": doc["date"]}
        if started:
            doc["after"]["started"] = "2026-12-01T08:59:00Z"
    return doc


def shape(actions):
    """Each action as (its class name, and the kind and status for a write)."""
    return [(type(a).__name__, a.kind, a.doc["status"]) if isinstance(a, Write)
            else type(a).__name__ for a in actions]


def moved(status, in_s, owner=ME.process, started=False):
    """A task claimed for a date 60 s from NOW, whose date the user then moved."""
    doc = task(status, in_s, owner=owner, started=started)
    doc["after"]["date"] = (NOW + timedelta(seconds=60)).isoformat().replace("+00:00", "Z")
    return doc


OTHER_NAME = "v@there:5:eeeeee"
LIVENESS[OTHER_NAME] = Liveness.ALIVE
CLAIM = ("Write", Kind.CLAIM, "scheduled")
CLAIMSTART = ("Write", Kind.CLAIMSTART, "running")

TABLE = [
    # (what, document, held, preferred, expected)
    ("waiting, due soon: claimed", task(), {}, True, ["Drop", CLAIM]),
    ("waiting, due now: claimed and started", task(in_s=-0.1), {}, True, ["Drop", CLAIMSTART]),
    ("waiting, another process first", task(), {}, False, ["Drop", "Defer"]),
    ("waiting, beyond the horizon: left", task(in_s=3600), {}, True, ["Drop"]),
    ("reschedule beyond the horizon: parked", task("reschedule", 3600), {}, True,
     ["Drop", ("Write", Kind.PARK, "waiting")]),
    ("reschedule near: claimed", task("reschedule"), {}, True, ["Drop", CLAIM]),
    ("cancel: applied", task("cancel"), {"t": False}, True,
     ["Drop", ("Write", Kind.CANCEL, "canceled")]),
    ("cancel while a live peer runs it: its business", task("cancel", owner=PEER,
                                                          started=True), {}, True, []),
    ("cancel while we run it: kept for the end", task("cancel", owner=ME.process,
                                                     started=True), {"t": True}, True, ["Keep"]),
    ("cancel run by an unknown process: confirm first", task("cancel", owner=STRANGER,
                                                            started=True), {}, True,
     ["Confirm"]),
    ("done: dropped", task("done"), {"t": False}, True, ["Drop"]),
    ("another worker's: dropped", task(worker="v"), {}, True, ["Drop"]),
    ("deleted: dropped", {"_id": "t", "_deleted": True}, {}, True, ["Drop"]),
    ("design document: ignored", {"_id": "_design/after"}, {}, True, []),
    ("bad date: error", task(date="soon"), {}, True, ["Drop", ("Write", Kind.ERROR, "error")]),
    ("unknown job: error", task(job={"name": "missing"}), {}, True,
     ["Drop", ("Write", Kind.ERROR, "error")]),
    ("scheduled by us, not held: held", task("scheduled", owner=ME.process), {}, True,
     ["Hold"]),
    ("scheduled by us, running: nothing", task("scheduled", owner=ME.process), {"t": True},
     True, []),
    ("scheduled by a live peer: dropped", task("scheduled", owner=PEER), {}, True, ["Drop"]),
    ("scheduled by a dead peer: claimed", task("scheduled", owner=GONE), {}, True,
     ["Drop", CLAIM]),
    ("scheduled by an unknown process: confirm", task("scheduled", owner=STRANGER), {}, True,
     ["Drop", "Confirm"]),
    ("running by us: kept", task("running", owner=ME.process, started=True), {"t": True},
     True, ["Keep"]),
    ("running by us with no run: restarted", task("running", owner=ME.process, started=True),
     {}, True, ["Restart"]),
    ("running by a live peer: dropped", task("running", owner=PEER, started=True), {}, True,
     ["Drop"]),
    ("running by a dead peer: interrupted, run again here", task("running", -5, owner=GONE,
                                                               started=True), {}, True,
     ["Drop", ("Write", Kind.FINISH, "scheduled")]),
    # edits to a held or running task (docs/reference.rst, "Editing a task...")
    ("moved here from another name, scheduled: claimed", task("scheduled", owner=OTHER_NAME),
     {}, True, ["Drop", CLAIM]),
    ("moved here from another name, running: the old process ends it",
     task("running", owner=OTHER_NAME, started=True), {}, True, ["Drop"]),
    ("waiting written while we run it: kept for the end",
     task("waiting", owner=ME.process, started=True), {"t": True}, True, ["Keep"]),
    ("waiting written while a live peer runs it: its business",
     task("waiting", owner=PEER, started=True), {}, True, []),
    ("a new date on a task we hold: claimed again for it", moved("scheduled", 30), {"t": False},
     True, ["Drop", CLAIM]),
    ("a new date, now due, on a task we hold: started", moved("scheduled", -1), {"t": False},
     True, ["Drop", CLAIMSTART]),
    ("a new date beyond the horizon: parked", moved("scheduled", 3600), {"t": False}, True,
     ["Drop", ("Write", Kind.PARK, "waiting")]),
    ("a new date while we run it: kept for the end", moved("running", 30, started=True),
     {"t": True}, True, ["Keep"]),
    ("a new date on a task a live peer holds: its business", moved("scheduled", 30, PEER), {},
     True, ["Drop"]),
]


@pytest.mark.parametrize("what, doc, held, preferred, expected", TABLE,
                         ids=[row[0] for row in TABLE])
def test_decide(what, doc, held, preferred, expected):
    assert shape(d.decide(doc, view(held, preferred), NOW)) == expected


def test_a_claim_names_this_process_and_the_occurrence():
    [_, write] = d.decide(task(), view(), NOW)
    assert write.doc["after"]["owner"] == ME.process
    assert write.doc["after"]["due"] == "2026-12-01T09:01:00.250Z"


def test_a_takeover_records_the_interrupted_run_under_the_dead_process():
    [_, write] = d.decide(task("running", -5, owner=GONE, started=True), view(), NOW)
    assert write.takeover and write.outcome.outcome == "interrupted"
    assert write.run["process"] == GONE and write.run["outcome"] == "interrupted"
    assert write.doc["after"]["owner"] == ME.process


def test_a_takeover_that_conflicts_leaves_a_run_another_process_took_over_first():
    """Two processes find the owner dead at once; the second's takeover conflicts, and the
    task it re-reads may already be running again under the first: it is decided again (not
    taken over a second time, which ran the job twice). A conflict with an edit of the same
    run (a user's field) still ends that run."""
    from after import task as rules

    doc = task("running", -5, owner=GONE, started=True)
    doc["after"]["run"] = 1
    [_, write] = d.decide(doc, view(), NOW)
    first = rules.start(dict(write.doc, _rev="4-p", after={**write.doc["after"],
                                                            "owner": PEER}), PEER, NOW, 2)
    assert first["status"] == "running" and rules.info(first)["owner"] == PEER
    assert d.refinish(write, first, ME, NOW) is None
    edited = dict(doc, _rev="4-e", note="a user's edit")
    [again] = d.refinish(write, edited, ME, NOW)
    assert again.takeover and again.doc["_rev"] == "4-e" and again.doc["note"] == "a user's edit"
    assert again.doc["after"]["owner"] == ME.process


def test_a_takeover_reruns_the_occurrence_in_a_child_process_whatever_its_isolation():
    """Issue 13.4: the job may be what ended the dead process; its re-run here is isolated,
    so it takes down no second process."""
    from after import task as rules

    doc = task("running", -5, owner=GONE, started=True, isolation="thread")
    [_, write] = d.decide(doc, view(), NOW)
    assert write.doc["status"] == "scheduled" and write.doc["after"]["due"] == \
        "2026-12-01T09:00:00.250Z"
    assert write.doc["after"]["isolated"] == "2026-12-01T09:00:00.250Z"
    assert rules.isolated(write.doc, write.spec) and not rules.isolated(doc, write.spec)


def test_a_run_record_says_when_the_run_was_in_a_child_process():
    from after import task as rules

    doc = task("running", -5, owner=ME.process, started=True, isolation="process")
    spec = rules.parse(doc)
    ended = rules.Outcome(rules.OK, NOW, NOW, result=1)
    assert d.run_record(doc, spec, ended, ME)["isolation"] == "process"
    marked = task("running", -5, owner=ME.process, started=True)
    marked["after"]["isolated"] = "2026-12-01T08:00:00Z"
    assert d.run_record(marked, spec, ended, ME)["isolation"] == "process"
    plain = task("running", -5, owner=ME.process, started=True)
    assert "isolation" not in d.run_record(plain, rules.parse(plain), ended, ME)
    missed = rules.Outcome(rules.MISSED, NOW, NOW, error="missed")
    assert "isolation" not in d.run_record(doc, spec, missed, ME)  # it never ran


def test_confirm_names_the_owner_and_carries_the_document():
    doc = task("scheduled", owner=STRANGER)
    [_, confirm] = d.decide(doc, view(), NOW)
    assert confirm == Confirm(STRANGER, doc)


def test_deferred_and_held_occurrences_carry_their_due_instant():
    [_, defer] = d.decide(task(), view(preferred=False), NOW)
    assert isinstance(defer, Defer) and defer.due == NOW + timedelta(seconds=60)
    [hold] = d.decide(task("scheduled", owner=ME.process), view(), NOW)
    assert isinstance(hold, Hold) and hold.due == NOW + timedelta(seconds=60)


def test_an_error_message_is_one_line_naming_the_field():
    [drop, write] = d.decide(task(date="soon"), view(), NOW)
    assert drop == Drop("t")
    assert write.doc["after"]["error"].startswith("date:")


def test_resolutions_delete_the_losing_revisions_and_keep_the_winner():
    doc = {"_id": "t", "_rev": "2-b", "_conflicts": ["2-a", "1-c"]}
    writes = d.resolutions(doc)
    assert [(w.kind, w.doc) for w in writes] == [
        (Kind.RESOLVE, {"_id": "t", "_rev": "2-a", "_deleted": True}),
        (Kind.RESOLVE, {"_id": "t", "_rev": "1-c", "_deleted": True})]
    assert "_conflicts" not in doc and d.resolutions(doc) == []


def test_fire_starts_or_records_a_miss():
    doc = task("scheduled", owner=ME.process, max_delay=1)
    spec = d.rules.parse(doc)
    due_ms = int((NOW - timedelta(seconds=0.5)).timestamp() * 1000)
    start = d.fire(doc, spec, due_ms, ME, NOW)
    assert start.kind is Kind.START and start.token and start.doc["status"] == "running"
    missed = d.fire(doc, spec, due_ms - 5000, ME, NOW)
    assert missed.kind is Kind.FINISH and missed.outcome.outcome == "missed"
    assert missed.run["outcome"] == "missed"


def test_refinish_applies_the_outcome_to_the_current_version():
    doc = task("running", owner=ME.process, started=True)
    spec = d.rules.parse(doc)
    outcome = d.rules.Outcome(d.rules.OK, NOW, NOW, result=1)
    write = d.end(doc, spec, outcome, ME, NOW)
    fresh = dict(doc, _rev="4-y", note="changed")
    [again] = d.refinish(write, fresh, ME, NOW)
    assert again.doc["_rev"] == "4-y" and again.doc["note"] == "changed"
    assert again.doc["status"] == "done"
    taken = dict(fresh, after={"owner": PEER})
    assert d.refinish(write, taken, ME, NOW) == []  # taken over: only the run is recorded


def test_keep_and_restart_carry_the_document():
    doc = task("running", owner=ME.process, started=True)
    assert d.decide(doc, view({"t": True}), NOW) == [Keep(doc)]
    [restart] = d.decide(doc, view({"t": False}), NOW)
    assert isinstance(restart, Restart) and restart.doc is doc


def test_a_new_date_on_a_held_task_is_the_occurrence_claimed():
    [_, write] = d.decide(moved("scheduled", 30), view({"t": False}), NOW)
    assert write.doc["after"]["due"] == "2026-12-01T09:00:30.250Z"
    assert write.doc["after"]["date"] == write.doc["date"]


# -- the lead window ----------------------------------------------------------------------------

def test_a_task_due_within_the_lead_window_is_claimed_and_started_ahead_in_one_write():
    doc = task(in_s=1.5)
    lead = View(**{**view().__dict__, "lead_ms": 2000})
    [drop, write] = d.decide(doc, lead, NOW)
    assert write.kind is Kind.CLAIMSTART and write.fence and write.token
    assert write.doc["status"] == "running" and write.doc["after"]["owner"] == ME.process
    assert write.doc["after"]["started"] == "2026-12-01T09:00:01.750Z" and write.due > NOW


def test_beyond_the_lead_window_a_task_is_only_claimed():
    lead = View(**{**view().__dict__, "lead_ms": 2000})
    assert shape(d.decide(task(in_s=2.5), lead, NOW)) == ["Drop", CLAIM]
    assert shape(d.decide(task(in_s=1.5), view(), NOW)) == ["Drop", CLAIM]  # no window


def test_a_due_task_is_started_now_not_fenced():
    lead = View(**{**view().__dict__, "lead_ms": 2000})
    [_, write] = d.decide(task(in_s=-1), lead, NOW)
    assert write.kind is Kind.CLAIMSTART and not write.fence
    assert write.doc["after"]["started"] == "2026-12-01T09:00:00.250Z"


def test_a_fence_starts_the_held_occurrence_at_its_due_instant():
    held = task("scheduled", in_s=1.0, owner=ME.process)
    due_ms = int((NOW + timedelta(seconds=1)).timestamp() * 1000)
    write = d.fence(held, d.rules.parse(held), due_ms, ME)
    assert write.kind is Kind.START and write.fence and write.token
    assert write.doc["status"] == "running" and write.doc["after"]["attempt"] == 1
    assert write.doc["after"]["started"] == "2026-12-01T09:00:01.250Z"
    assert write.doc["after"]["run"] == 1


def test_unfence_undoes_a_start_in_memory():
    held = task("scheduled", in_s=1.0, owner=ME.process)
    fenced = d.fence(held, d.rules.parse(held), 0, ME).doc
    back = d.rules.unfence(fenced)
    assert back["status"] == "scheduled" and back["after"] == held["after"]
    canceled = d.rules.unfence({**fenced, "status": "cancel"})
    assert canceled["status"] == "cancel" and "started" not in canceled["after"]
    assert shape(d.decide(canceled, view({"t": False}), NOW)) == [
        "Drop", ("Write", Kind.CANCEL, "canceled")]


def full(view_: View) -> View:
    """Every job thread taken, and no room in their queue."""
    return dataclasses.replace(view_, can_start=lambda ahead=False: False)


@pytest.mark.parametrize("what, doc, expected", [
    ("due now, the pool full: left waiting, in line", task(in_s=-0.1), ["Drop", "Wait"]),
    ("due soon, the pool full: claimed, held for its instant", task(in_s=1), ["Drop", CLAIM]),
    ("a dead holder's, due, the pool full: in line", task("scheduled", -5, owner=GONE),
     ["Drop", "Wait"]),
    ("ours, moved to now, the pool full: claimed again, held", moved("scheduled", -1),
     ["Drop", CLAIM]),
])
def test_a_full_pool_claims_nothing_already_due(what, doc, expected):
    assert shape(d.decide(doc, full(view()), NOW)) == expected, what


@pytest.mark.parametrize("junk", [[None], {"a": 1}, 7, True, ""])
def test_an_owner_that_is_not_a_process_name_holds_nothing(junk):
    """Found by hypothesis: ``"after": {"owner": [null], "started": true}`` on a waiting
    task made the liveness cache hash a list, and the good task ended ``error``."""
    doc = task(in_s=-0.1)
    doc["after"] = {"owner": junk, "started": True}
    assert shape(d.decide(doc, view(), NOW)) == ["Drop", CLAIMSTART]
    doc["status"] = "scheduled"
    assert shape(d.decide(doc, view(), NOW)) == ["Drop", CLAIMSTART]  # taken over
