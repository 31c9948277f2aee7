"""after.worker.decide: what a process does about a task, and about a write's answer, as
tables at a fixed ``NOW``.

No server, no clock, no threads: the view says which partitions this process owns, which
runs it has going and which processes are alive, as the loop would from its state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from after.rules import task as rules
from after.rules.dates import format_date
from after.worker import decide as d
from after.worker import runs as r
from after.worker.decide import Ask, Drop, Hold, Over, View
from after.worker.partitions import PARTITIONS, partition_of
from after.worker.runs import Kind, Write
from after.worker.writer import Answer

NOW = datetime(2026, 12, 1, 9, 0, 0, 250000, tzinfo=UTC)
ME = r.Identity(name="w", process="w@here:1:aaaaaa", host="here", pid=1)
PEER, GONE, STRANGER = "w@there:2:bbbbbb", "w@lost:3:cccccc", "w@new:4:dddddd"
OTHER_NAME = "v@there:5:eeeeee"
ALL = frozenset(range(PARTITIONS))


def view(running=(), owned=ALL, horizon=300, errors=None):
    return View(me=ME, horizon_ms=horizon * 1000, owned=frozenset(owned),
                running=frozenset(running), live=frozenset({PEER, OTHER_NAME}),
                dead=frozenset({GONE}),
                job_errors=errors or {"missing": "job.name: no job 'missing' in the jobs "
                                                 "folder"})


def iso(seconds: float) -> str:
    return format_date(NOW + timedelta(seconds=seconds))


def task(status="waiting", in_s=60.0, owner=None, started=False, **fields):
    doc = {"_id": "t", "_rev": "3-x", "worker": "w", "status": status, "date": iso(in_s),
           "job": {"name": "hello", "arguments": []}, **fields}
    if owner:
        doc["after"] = {"owner": owner, "due": doc["date"]}
        if started:
            doc["after"]["started"] = "2026-12-01T08:59:00Z"
    return doc


def moved(status, in_s, owner=ME.process, started=False):
    """A task held for a date 60 s from NOW, whose date the user then moved."""
    doc = task(status, in_s, owner=owner, started=started)
    doc["after"]["date"] = iso(60)
    return doc


def shape(actions):
    """Each action as (its class name, and the kind and status for a write)."""
    return [(type(a).__name__, a.kind, a.doc.get("status")) if isinstance(a, Write)
            else type(a).__name__ for a in actions]


ERROR = ("Write", Kind.ERROR, "error")
TAKEOVER = ("Write", Kind.FINISH, "scheduled")

TABLE = [
    # (what, document, running here, expected)
    ("waiting, due soon: held", task(), (), ["Hold"]),
    ("waiting, due now: held (fires at once)", task(in_s=-0.1), (), ["Hold"]),
    ("waiting, beyond the horizon: left", task(in_s=3600), (), ["Drop"]),
    ("reschedule beyond the horizon: parked", task("reschedule", 3600), (),
     ["Drop", ("Write", Kind.PARK, "waiting")]),
    ("reschedule near: held", task("reschedule"), (), ["Hold"]),
    ("a retry pending (scheduled): held for it", task("scheduled", owner=ME.process), (),
     ["Hold"]),
    ("a retry pending, held by the partition's last owner: held", task("scheduled",
                                                                        owner=PEER), (),
     ["Hold"]),
    ("cancel: applied", task("cancel"), (), ["Drop", ("Write", Kind.CANCEL, "canceled")]),
    ("cancel while a live peer runs it: its business", task("cancel", owner=PEER,
                                                          started=True), (), ["Drop"]),
    ("cancel while we run it: kept for the end", task("cancel", owner=ME.process,
                                                     started=True), ("t",), ["Keep"]),
    ("cancel of a run in an unknown process: ask", task("cancel", owner=STRANGER,
                                                       started=True), (), ["Drop", "Ask"]),
    ("cancel of a dead process's run: applied", task("cancel", owner=GONE, started=True), (),
     ["Drop", ("Write", Kind.CANCEL, "canceled")]),
    ("paused by after (stamped): dropped, nothing written",
     task("paused", after={"paused": iso(-5)}), (), ["Drop"]),
    ("paused with plain HTTP: dropped, stamped", task("paused"), (),
     ["Drop", ("Write", Kind.STAMP, "paused")]),
    ("done: dropped", task("done"), (), ["Drop"]),
    ("another worker's: dropped", task(worker="v"), (), ["Drop"]),
    ("deleted: dropped", {"_id": "t", "_deleted": True}, (), ["Drop"]),
    ("design document: ignored", {"_id": "_design/after"}, (), []),
    ("bad date: error", task(date="soon"), (), ["Drop", "Note", ERROR]),
    ("unknown job: error", task(job={"name": "missing"}), (), ["Drop", "Note", ERROR]),
    ("running by us: kept", task("running", owner=ME.process, started=True), ("t",),
     ["Keep"]),
    ("running by us with no run here: cut short, run again", task(
        "running", owner=ME.process, started=True), (), ["Drop", "Note", TAKEOVER]),
    ("running by a live peer: its business", task("running", owner=PEER, started=True), (),
     ["Drop"]),
    ("running by a dead peer: interrupted, run again here", task("running", -5, owner=GONE,
                                                               started=True), (),
     ["Drop", "Note", TAKEOVER]),
    ("running by an unknown process: ask", task("running", owner=STRANGER, started=True),
     (), ["Drop", "Ask"]),
    ("moved here from another name, running: the old process ends it",
     task("running", owner=OTHER_NAME, started=True), (), ["Drop"]),
    ("waiting written while we run it: kept for the end",
     task("waiting", owner=ME.process, started=True), ("t",), ["Keep"]),
    ("waiting written while a live peer runs it: its business",
     task("waiting", owner=PEER, started=True), (), ["Drop"]),
    ("a new date on a retry pending: held for it", moved("scheduled", 30), (), ["Hold"]),
    ("a new date beyond the horizon: parked", moved("scheduled", 3600), (),
     ["Drop", ("Write", Kind.PARK, "waiting")]),
    ("a new date while we run it: kept for the end", moved("running", 30, started=True),
     ("t",), ["Keep"]),
]


@pytest.mark.parametrize("what, doc, running, expected", TABLE,
                         ids=[row[0] for row in TABLE])
def test_decide(what, doc, running, expected):
    assert shape(d.decide(doc, view(running), NOW)) == expected


def test_a_task_of_a_partition_this_process_does_not_own_is_not_its_business():
    others = ALL - {partition_of("t")}
    for doc in (task(), task("cancel"), task(date="soon"), task("running", owner=GONE,
                                                                 started=True)):
        assert shape(d.decide(doc, view(owned=others), NOW)) == ["Drop"]
    # a run of it going here is still this process's (its partition given up meanwhile)
    running = task("cancel", owner=ME.process, started=True)
    assert shape(d.decide(running, view(("t",), owned=others), NOW)) == ["Keep"]


def test_holds_carry_the_due_instant_a_retry_or_a_new_date_gives():
    [hold] = d.decide(task(), view(), NOW)
    assert isinstance(hold, Hold) and hold.due_ms == int((NOW.timestamp() + 60) * 1000)
    retry = task("scheduled", owner=ME.process)
    retry["after"]["due"] = iso(90)
    assert d.decide(retry, view(), NOW)[0].due_ms == int((NOW.timestamp() + 90) * 1000)
    assert d.decide(moved("scheduled", 30), view(), NOW)[0].due_ms == \
        int((NOW.timestamp() + 30) * 1000)


def test_ask_names_the_owner_and_carries_the_document():
    doc = task("running", owner=STRANGER, started=True)
    [_, ask] = d.decide(doc, view(), NOW)
    assert ask == Ask(STRANGER, doc)


def test_an_error_message_is_one_line_naming_the_field():
    [drop, note, write] = d.decide(task(date="soon"), view(), NOW)
    assert drop == Drop("t") and note.level == "warning"
    assert write.doc["after"]["error"].startswith("date:")


def test_conflicting_revisions_are_resolved_by_the_partitions_owner_only():
    doc = task()
    doc["_conflicts"] = ["3-a", "2-c"]
    actions = d.decide(dict(doc), view(), NOW)
    assert shape(actions) == [("Write", Kind.RESOLVE, None), ("Write", Kind.RESOLVE, None),
                              "Hold"]
    assert [w.doc for w in actions[:2]] == [{"_id": "t", "_rev": "3-a", "_deleted": True},
                                            {"_id": "t", "_rev": "2-c", "_deleted": True}]
    assert shape(d.decide(dict(doc), view(owned=()), NOW)) == ["Drop"]


@pytest.mark.parametrize("junk", [[None], {"a": 1}, 7, True, ""])
def test_an_owner_that_is_not_a_process_name_holds_nothing(junk):
    """Found by hypothesis: ``"after": {"owner": [null], "started": true}`` on a waiting
    task made the liveness cache hash a list, and the good task ended ``error``."""
    doc = task(in_s=-0.1)
    doc["after"] = {"owner": junk, "started": True}
    assert shape(d.decide(doc, view(), NOW)) == ["Hold"]
    doc["status"] = "running"
    assert shape(d.decide(doc, view(), NOW)) == ["Drop", "Note", TAKEOVER]  # cut short


# -- the writes of a run ------------------------------------------------------------------------

def test_a_run_begins_in_memory_held_and_started_by_this_process():
    doc = task(in_s=0)
    spec = rules.parse(doc)
    started = r.begin(doc, spec, spec.date, ME.process, NOW)
    assert started["status"] == "running" and started["_rev"] == doc["_rev"]
    info = started["after"]
    assert info["owner"] == ME.process and info["attempt"] == 1 and info["run"] == 1
    assert info["started"] == iso(0) and info["due"] == iso(0)


def test_a_takeover_records_the_interrupted_run_under_the_dead_process():
    [_, _, write] = d.decide(task("running", -5, owner=GONE, started=True), view(), NOW)
    assert write.takeover and write.outcome.outcome == "interrupted"
    assert write.run["process"] == GONE and write.run["outcome"] == "interrupted"
    assert write.doc["after"]["owner"] == ME.process and write.doc["after"]["due"] == iso(0)


def test_a_takeover_that_conflicts_leaves_a_run_another_process_took_over_first():
    """Two processes find the owner dead at once (a partition moved twice, say); the second's
    takeover conflicts, and the task it re-reads may already be running again under the
    first: it is decided again, not taken over a second time. A conflict with an edit of
    the same run (a user's field) still ends that run."""
    doc = task("running", -5, owner=GONE, started=True)
    doc["after"]["run"] = 1
    [_, _, write] = d.decide(doc, view(), NOW)
    first = rules.start(dict(write.doc, _rev="4-p", after={**write.doc["after"],
                                                            "owner": PEER}), PEER, NOW, 2)
    assert r.refinish(write, first, ME, NOW) is None
    edited = dict(doc, _rev="4-e", note="a user's edit")
    [again] = r.refinish(write, edited, ME, NOW)
    assert again.takeover and again.doc["_rev"] == "4-e" and again.doc["note"] == "a user's edit"
    assert again.doc["after"]["owner"] == ME.process


def test_a_takeover_whose_run_ended_done_first_runs_nothing_again():
    """Issue 24, item 8: the process found dead was only frozen; it thawed and wrote its
    run's end (``done``) before the takeover's write. The takeover conflicts; the task it
    re-reads has counted the run: no re-run starts, nothing is held."""
    doc = task("running", -5, owner=GONE, started=True)
    doc["after"]["run"] = 1
    [_, _, write] = d.decide(doc, view(), NOW)
    assert write.takeover
    spec = rules.parse(doc)
    ended = r.end(doc, spec, rules.Outcome(rules.OK, NOW, NOW, result=1),
                  r.Identity(name="w", process=GONE, host="lost", pid=3), NOW, "tok")
    done = dict(ended.doc, _rev="4-d")
    assert done["status"] == "done" and done["after"]["runs"] == 1
    assert r.refinish(write, done, ME, NOW) is None  # not the run taken over: decided again
    assert shape(d.decide(done, view(), NOW)) == ["Drop"]


def test_a_takeover_reruns_the_occurrence_in_a_child_process_whatever_its_isolation():
    doc = task("running", -5, owner=GONE, started=True, isolation="thread")
    [_, _, write] = d.decide(doc, view(), NOW)
    assert write.doc["status"] == "scheduled" and write.doc["after"]["due"] == iso(0)
    assert write.doc["after"]["isolated"] == iso(0)
    assert rules.isolated(write.doc, write.spec) and not rules.isolated(doc, write.spec)


def test_a_run_record_says_when_the_run_was_in_a_child_process():
    doc = task("running", -5, owner=ME.process, started=True, isolation="process")
    spec = rules.parse(doc)
    ended = rules.Outcome(rules.OK, NOW, NOW, result=1)
    assert r.run_record(doc, spec, ended, ME)["isolation"] == "process"
    marked = task("running", -5, owner=ME.process, started=True)
    marked["after"]["isolated"] = "2026-12-01T08:00:00Z"
    assert r.run_record(marked, spec, ended, ME)["isolation"] == "process"
    plain = task("running", -5, owner=ME.process, started=True)
    assert "isolation" not in r.run_record(plain, rules.parse(plain), ended, ME)
    missed = rules.Outcome(rules.MISSED, NOW, NOW, error="missed")
    assert "isolation" not in r.run_record(doc, spec, missed, ME)  # it never ran


def test_a_run_record_id_is_derived_not_random():
    doc = task("running", owner=ME.process, started=True)
    spec = rules.parse(doc)
    ended = rules.Outcome(rules.OK, NOW, NOW, result=1)
    one, two = r.run_record(doc, spec, ended, ME), r.run_record(doc, spec, ended, ME)
    assert one["_id"] == two["_id"] == one["task"] + "#00000001#" + one["_id"][-6:]
    other = r.run_record(doc, spec, ended, ME, owner=GONE)
    assert other["_id"] != one["_id"]  # the run of another process, numbered the same


def test_a_missed_occurrence_is_recorded_not_run():
    doc = task(in_s=-30, max_delay=5)
    spec = rules.parse(doc)
    write = r.missed(doc, spec, spec.date, ME, NOW)
    assert write.kind is Kind.FINISH and write.outcome.outcome == "missed"
    assert write.doc["status"] == "error" and write.run["outcome"] == "missed"


def test_refinish_applies_the_outcome_to_the_current_version():
    doc = rules.start(task(), ME.process, NOW, 1)
    spec = rules.parse(doc)
    write = r.end(doc, spec, rules.Outcome(rules.OK, NOW, NOW, result=1), ME, NOW, "tok")
    fresh = dict(task(), _rev="4-y", note="changed")  # a field edited while it ran
    [again] = r.refinish(write, fresh, ME, NOW)
    assert again.doc["_rev"] == "4-y" and again.doc["note"] == "changed"
    assert again.doc["status"] == "done" and again.token == "tok"
    rerun = dict(task("waiting", owner=ME.process, started=True), _rev="4-w")  # over a run
    [after] = r.refinish(write, rerun, ME, NOW)  # shown running: "waiting" is the user's word
    assert after.doc["status"] == "waiting" and after.doc["after"]["runs"] == 1
    taken = rules.start(dict(fresh, _rev="5-z"), PEER, NOW, 1)
    assert r.refinish(write, taken, ME, NOW) == []  # taken over: only the run is recorded
    counted = dict(fresh, after={"runs": 1})  # run 1 already counted elsewhere
    assert r.refinish(write, counted, ME, NOW) == []


def test_carry_keeps_a_newer_version_with_the_runs_own_fields():
    started = r.begin(task(in_s=0), rules.parse(task(in_s=0)), NOW, ME.process, NOW)
    user = dict(task("cancel", in_s=0), _rev="4-u")
    carried = r.carry(user, started, ME.process)
    assert carried["status"] == "cancel" and carried["_rev"] == "4-u"
    assert carried["after"]["owner"] == ME.process and carried["after"]["attempt"] == 1
    took = rules.start(dict(user, status="waiting"), PEER, NOW, 1)
    assert r.carry(took, started, ME.process) is started  # another process took it over


# -- settle: what a write's answer means --------------------------------------------------------

def finish_write(doc=None, token="tok"):
    doc = doc or rules.start(task(in_s=0), ME.process, NOW, 1)
    spec = rules.parse(doc)
    return r.end(doc, spec, rules.Outcome(rules.OK, NOW, NOW, result=1), ME, NOW, token)


SETTLE = [
    # (what, write, answer, running here, expected)
    ("a run's end landed: over, its records out", finish_write(), Answer(ok=True), ("t",),
     ["Over", "Drop"]),
    ("a repeating run's end landed: over, the next held",
     finish_write(rules.start(task(in_s=0, repeat={"seconds": 30}), ME.process, NOW, 1)),
     Answer(ok=True), ("t",), ["Over", "Hold"]),
    ("a run's end refused: recorded, the task in error", finish_write(),
     Answer(refused="forbidden: no"), ("t",), ["Note", "Over", "Drop", ERROR]),
    ("a run's end given up: recorded, decided again later", finish_write(),
     Answer(failed="down"), ("t",), ["Over", "Drop"]),
    ("a run's end conflicted with a user's edit: written again over it", finish_write(),
     Answer(conflict=True, fresh=dict(task("cancel", in_s=0), _rev="4-u")), ("t",),
     [("Write", Kind.FINISH, "canceled")]),
    ("a run's end conflicted with a takeover: only its record",
     finish_write(), Answer(conflict=True, fresh=rules.start(dict(task(in_s=0), _rev="4-p"),
                                                               PEER, NOW, 1)), ("t",),
     ["Over", "Drop"]),
    ("a run's end, the task deleted meanwhile: only its record", finish_write(),
     Answer(conflict=True, fresh=None), ("t",), ["Over", "Drop"]),
    ("shown running: the run's task is that version",
     Write(Kind.VISIBLE, rules.start(task(in_s=0), ME.process, NOW, 1), token="tok"),
     Answer(ok=True), ("t",), ["Shown"]),
    ("shown running, conflicted: the newer version kept for the end",
     Write(Kind.VISIBLE, rules.start(task(in_s=0), ME.process, NOW, 1), token="tok"),
     Answer(conflict=True, fresh=dict(task("cancel"), _rev="4-u")), ("t",), ["Keep"]),
    ("a cancel landed: decided again (dropped)", Write(Kind.CANCEL, rules.cancel(task(), NOW)),
     Answer(ok=True), (), ["Drop"]),
    ("a cancel conflicted: decided on the new version", Write(Kind.CANCEL, task("cancel")),
     Answer(conflict=True, fresh=dict(task(), _rev="4-u")), (), ["Hold"]),
    ("an error refused too: left alone", Write(Kind.ERROR, task("error")),
     Answer(refused="no"), (), ["Note", "Drop"]),
    ("a resolution: nothing follows", Write(Kind.RESOLVE, {"_id": "t", "_rev": "2-a",
                                                            "_deleted": True}),
     Answer(ok=True), (), []),
]


@pytest.mark.parametrize("what, write, answer, running, expected", SETTLE,
                         ids=[row[0] for row in SETTLE])
def test_settle(what, write, answer, running, expected):
    assert shape(d.settle(write, answer, view(running), NOW)) == expected


def test_an_end_that_landed_gives_its_records_and_outcome():
    write = finish_write()
    [over, drop] = d.settle(write, Answer(ok=True), view(("t",)), NOW)
    assert over == Over("t", "tok", [write.run], write.outcome, "hello", False)
    assert drop == Drop("t")  # done: nothing left to hold


def test_a_detached_start_that_landed_begins_its_run_and_holds_the_next_occurrence():
    series = task(in_s=0, repeat={"seconds": 10}, overlap="allow")
    spec = rules.parse(series)
    write = r.detach(r.begin(series, spec, spec.date, ME.process, NOW), spec, "tok", spec.date,
                     NOW)
    assert shape(d.settle(write, Answer(ok=True), view(), NOW)) == ["Begin", "Hold"]
    assert shape(d.settle(write, Answer(conflict=True, fresh=dict(series, _rev="9-u")),
                          view(), NOW)) == ["Over", "Hold"]  # not begun: decided anew


def test_a_debounced_task_is_held_a_quiet_window_from_its_version_first_seen():
    """Issue 25, item 5: due at its date or ``debounce`` seconds after this process first
    saw its current version, whichever is later; a version not seen before counts from
    now. Only a waiting task (a retry keeps its own due)."""
    doc = task(in_s=-1, debounce=30)
    [hold] = d.decide(doc, view(), NOW)
    assert hold.due_ms == int((NOW + timedelta(seconds=30)).timestamp() * 1000)
    seen_before = View(me=ME, horizon_ms=300_000, owned=ALL,
                       versions={"t": (doc["_rev"], hold.due_ms - 40_000)})
    [hold] = d.decide(doc, seen_before, NOW)  # first seen 10 s ago: 20 s to go
    assert hold.due_ms == int((NOW + timedelta(seconds=20)).timestamp() * 1000)
    [hold] = d.decide(task(in_s=100, debounce=30), view(), NOW)  # its date is later
    assert hold.due_ms == int((NOW + timedelta(seconds=100)).timestamp() * 1000)
    retry = task("scheduled", in_s=-60, owner=ME.process, debounce=30)
    retry["after"]["due"] = iso(5)
    [hold] = d.decide(retry, view(), NOW)
    assert hold.due_ms == int((NOW + timedelta(seconds=5)).timestamp() * 1000)


def test_a_process_whose_name_is_paused_writes_no_catch_up():
    """Issue 25, items 3 and 6: a name paused is a worker down. An overdue repeating task is
    not caught up while it lasts (no missed records whose reason would be the policy's,
    nothing moved): it is held, which the paused loop drops, and caught up once, by its
    policy, when the name resumes."""
    doc = task(in_s=-3600 * 5.5, repeat={"hours": 1})
    paused = View(me=ME, horizon_ms=300_000, owned=ALL, paused=True)
    assert shape(d.decide(doc, paused, NOW)) == ["Hold"]
    [*_, caught] = d.decide(doc, view(), NOW)  # resumed: the policy's catch-up
    assert caught.kind is Kind.CATCHUP and len(caught.skipped) == 5
