"""after.worker.intents: what a takeover does about a dead process's open intents. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from after import audit
from after.rules import task as rules
from after.rules.dates import format_date
from after.worker import intents
from after.worker import runs as r
from after.worker.runs import Kind

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ME = r.Identity("w", "w@here:1:aaaaaa", "here", 1)
DEAD = "w@gone:2:bbbbbb"


def task(in_s=-5.0, **fields):
    return {"_id": "t", "_rev": "2-x", "worker": "w", "status": "waiting",
            "date": format_date(NOW + timedelta(seconds=in_s)),
            "job": {"name": "hello", "arguments": []}, **fields}


def open_intent(doc, due_in=-5.0):
    spec = rules.parse(doc)
    due = NOW + timedelta(seconds=due_in)
    started = r.begin(doc, spec, due, DEAD, due)
    gone = r.Identity("w", DEAD, "gone", 2)
    return {**intents.intent(started, spec, gone, "bbbbbb.7", due), "_rev": "1-i"}


def test_an_intent_is_written_under_the_id_of_the_runs_record():
    doc = task()
    spec = rules.parse(doc)
    started = r.begin(doc, spec, NOW, ME.process, NOW)
    intent = intents.intent(started, spec, ME, "aaaaaa.1", NOW)
    record = r.end(started, spec, rules.Outcome(rules.OK, NOW, NOW), ME, NOW, "aaaaaa.1").run
    assert intent["_id"] == record["_id"] and intent["outcome"] == "intended"
    assert intent["number"] == record["number"] == 1


def test_a_due_run_of_a_dead_process_was_interrupted_and_runs_again_isolated():
    doc = task()
    [write] = intents.orphan(open_intent(doc), doc, ME, NOW)
    assert write.kind is Kind.FINISH and write.takeover
    assert write.doc["status"] == "scheduled" and write.doc["after"]["isolated"]
    assert write.run["outcome"] == "interrupted" and write.run["process"] == DEAD
    assert write.run["_id"] == open_intent(doc)["_id"] and write.run["_rev"] == "1-i"


def test_a_run_not_due_yet_or_of_a_task_that_moved_on_did_not_begin():
    doc = task(in_s=30)
    [withdraw] = intents.orphan(open_intent(doc, due_in=30), doc, ME, NOW)
    assert withdraw.kind is Kind.UNINTENT and withdraw.doc["_deleted"]
    for moved in ({**task(), "status": "canceled"}, {**task(), "worker": "v"}, None,
                  {**task(), "status": "paused"}):
        [write] = intents.orphan(open_intent(task()), moved, ME, NOW)
        assert write.kind is Kind.UNINTENT


def test_a_run_counted_before_its_process_died_becomes_its_record():
    doc = task()
    found = open_intent(doc)
    counted = {**doc, "status": "done", "after": {"runs": 1, "last_run": {
        "number": 1, "attempt": 1, "outcome": "done", "started": format_date(NOW),
        "ended": format_date(NOW), "duration_ms": 3.0, "result": 7}}}
    [write] = intents.orphan(found, counted, ME, NOW)
    assert write.kind is Kind.INTENT and write.doc["_id"] == found["_id"]
    assert write.doc["outcome"] == "done" and write.doc["result"] == 7
    assert write.doc["recovered"] is True and "token" not in write.doc
    failed = {**counted, "after": {"runs": 1, "last_run": {
        **counted["after"]["last_run"], "outcome": "error", "error": "ValueError: boom"}}}
    [write] = intents.orphan(found, failed, ME, NOW)
    assert write.doc["error"] == {"message": "ValueError: boom"}  # a run record's shape


def test_a_run_of_that_number_begun_past_the_dead_process_lease_is_not_made_its_record():
    """The process died holding the task (its intent written); another took the task over
    past the dead one's lease and ran it as run 1. The intent is no run of the dead process:
    withdrawn, not made a second record of run 1 (chaos seed 6 on the cluster: the audit
    said twice of an occurrence the job's history showed run once)."""
    doc = task()
    found = open_intent(doc)
    expires = NOW - timedelta(seconds=4)
    counted = {**doc, "status": "done", "after": {"runs": 1, "last_run": {
        "number": 1, "attempt": 1, "outcome": "done", "started": format_date(NOW),
        "ended": format_date(NOW), "duration_ms": 3.0, "result": 7}}}
    [write] = intents.orphan(found, counted, ME, NOW, expires)
    assert write.kind is Kind.UNINTENT and write.doc["_id"] == found["_id"]
    [write] = intents.orphan(found, counted, ME, NOW, NOW - timedelta(seconds=0.5))
    assert write.kind is Kind.INTENT and write.doc["recovered"] is True  # within its lease


def test_a_run_of_that_number_by_another_token_is_not_made_the_intent_s_record():
    """Chaos seed 27 on the cluster (2026-12-07): a process gave a partition up while it
    lived (another joined), its intent of a task held there not withdrawn yet, and froze;
    the taker ran the task as run 1 within the frozen one's lease. Found dead later, its
    open intent of run 1 was made a second record of that run ("recovered"), and the audit
    said twice of an occurrence the job ran once. The run counted says whose it was (its
    token): another token's run is no run of this intent."""
    doc = task()
    found = open_intent(doc)
    within = NOW - timedelta(seconds=0.5)  # the dead one's lease had not ended then
    last = {"number": 1, "attempt": 1, "outcome": "done", "started": format_date(NOW),
            "ended": format_date(NOW), "duration_ms": 3.0, "result": 7}
    theirs = {**doc, "status": "done", "after": {"runs": 1, "last_run": {
        **last, "token": "cccccc.3"}}}
    [write] = intents.orphan(found, theirs, ME, NOW, within)
    assert write.kind is Kind.UNINTENT and write.doc["_id"] == found["_id"]
    its_own = {**doc, "status": "done", "after": {"runs": 1, "last_run": {
        **last, "token": found["token"]}}}
    [write] = intents.orphan(found, its_own, ME, NOW, within)
    assert write.kind is Kind.INTENT and write.doc["recovered"] is True
    assert "token" not in write.doc


def test_the_run_counted_keeps_its_token():
    doc = task()
    spec = rules.parse(doc)
    started = r.begin(doc, spec, NOW, ME.process, NOW, "aaaaaa.1")
    ended = r.end(started, spec, rules.Outcome(rules.OK, NOW, NOW), ME, NOW, "aaaaaa.1")
    assert ended.doc["after"]["last_run"]["token"] == "aaaaaa.1"
    assert "token" not in ended.doc["after"]  # (the run's own, gone with it)


def test_a_run_made_ready_after_its_instant_is_recorded_as_begun_no_earlier_than_that():
    """Chaos seed 565746910: a run cut by a stop past its grace (recorded interrupted, the
    task handed back as the same attempt) was run again by another process, which died; its
    successor recorded that run from its intent as begun at the instant, before the first
    ended, and the audit counted the attempt's two runs as two runs at once. The intent
    says when the run was made ready: the record begins no earlier."""
    doc = task(in_s=-20.0)
    spec, due, made = rules.parse(doc), NOW - timedelta(seconds=20), NOW - timedelta(seconds=8)
    gone = r.Identity("w", DEAD, "gone", 2)
    started = r.begin(doc, spec, due, DEAD, due)
    intent = {**intents.intent(started, spec, gone, "bbbbbb.7/0", due, made), "_rev": "1-i"}
    assert intent["started"] == format_date(made)
    [write] = intents.orphan(intent, doc, ME, NOW)
    assert write.run["started"] == format_date(made) and write.run["outcome"] == "interrupted"
    cut = {"_id": "t#00000001#cccccc", "task": "t", "number": 1, "attempt": 1,
           "outcome": "interrupted", "started": format_date(due + timedelta(seconds=1)),
           "ended": format_date(made - timedelta(seconds=1))}
    assert audit.rerun_after(cut, [cut, write.run])  # one run of the attempt, then another
    ahead = intents.intent(started, spec, gone, "bbbbbb.8/0", due, due - timedelta(seconds=60))
    assert ahead["started"] == format_date(due)  # made ready ahead: its instant


def test_a_run_of_a_task_another_process_runs_now_is_recorded_and_the_task_left_alone():
    """Chaos seed 565746910 (a replay): the intent of a dead process's run was decided while
    the task ran under a live process (the decider itself): taken over, it ran twice."""
    doc = task()
    running = {**r.begin(doc, rules.parse(doc), NOW, ME.process, NOW, "aaaaaa.3/0"),
               "status": "running"}
    running["after"]["owner"] = ME.process
    [write] = intents.orphan(open_intent(doc), running, ME, NOW)
    assert write.kind is Kind.INTENT and write.doc["outcome"] == "interrupted"
    assert write.doc["_id"] == open_intent(doc)["_id"] and write.doc["_rev"] == "1-i"
