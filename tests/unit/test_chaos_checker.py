"""The chaos checker (tests/chaos/checker.py) on hand-made histories: it passes what the
contract allows and fails every duplicate, loss and stuck task, naming it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from after.rules import occurrence as occ
from after.rules.dates import format_date
from tests.chaos import checker
from tests.chaos.history import HistoryError, parse

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DATE = "2026-12-01T09:00:00.000Z"
KEY = occ.key("t1", T0)
P1, P2 = "chaos@h:101:aaaaaa", "chaos@h:102:bbbbbb"


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def run(name: str, start: float, end: float | None, *, pid: int = 101, process: str = P1,
        task: str = "t1", key: str = KEY) -> list[dict]:
    line = {"run": name, "task": task, "occurrence": key, "date": T0.isoformat(),
            "attempt": 1, "number": 1, "process": process, "pid": pid, "child": None,
            "start": at(start)}
    lines = [{"ev": "start", **line}]
    if end is not None:
        lines.append({"ev": "end", **line, "end": at(end)})
    return lines


def fault(kind: str, pid: int, seconds: float) -> dict:
    return {"ev": "fault", "fault": kind, "pid": pid, "at": at(seconds)}


def record(outcome: str, process: str = P1, *, task: str = "t1", key: str = KEY,
           error: str | None = None) -> dict:
    rec = {"_id": f"{task}#00000001#{process[-6:]}", "task": task, "number": 1,
           "process": process, "occurrence": key, "outcome": outcome,
           "started": at(0), "ended": at(1)}
    if error:
        rec["error"] = {"message": error}
    return rec


def done(task: str = "t1", date: str = DATE, **fields) -> dict:
    return {"_id": task, "_rev": "3-x", "worker": "chaos", "date": date, "status": "done",
            "job": {"name": "history"}, **fields}


def judge(lines, tasks=(), records=()):
    return checker.check(parse(lines), list(tasks), list(records))


def verdicts(report) -> list[tuple[str, str | None]]:
    return sorted((v.verdict, v.occurrence) for v in report.verdicts)


def test_an_occurrence_that_ran_once_passes():
    report = judge(run("r1", 1, 1.2), [done()], [record("done")])
    assert verdicts(report) == [("once", KEY)]
    assert report.ok and report.runs == 1
    assert "OK" in report.text()


def test_two_runs_with_no_fault_are_a_duplicate():
    lines = run("r1", 1, 1.2) + run("r2", 1.1, 1.3, pid=102, process=P2)
    report = judge(lines, [done()], [record("done"), record("done", P2)])
    assert verdicts(report) == [("twice", KEY)]
    assert not report.ok
    text = report.text()
    assert "1 VIOLATION" in text and "TWICE: task t1" in text
    assert "not cut by any fault" in text and "pid 102" in text


def test_a_rerun_after_a_kill_recorded_interrupted_is_allowed():
    lines = run("r1", 1, None) + [fault("kill", 101, 2)] + run("r2", 8, 8.5, pid=102,
                                                               process=P2)
    report = judge(lines, [done()], [record("interrupted"), record("done", P2)])
    assert verdicts(report) == [("rerun", KEY)]
    assert report.ok


def test_a_rerun_after_a_kill_not_recorded_interrupted_is_a_duplicate():
    lines = run("r1", 1, None) + [fault("kill", 101, 2)] + run("r2", 8, 8.5, pid=102,
                                                               process=P2)
    report = judge(lines, [done()], [record("done", P2)])
    assert verdicts(report) == [("twice", KEY)]
    assert "not recorded interrupted" in report.text()


def test_the_interrupted_record_must_name_the_process_cut():
    lines = run("r1", 1, None) + [fault("kill", 101, 2)] + run("r2", 8, 8.5, pid=102,
                                                               process=P2)
    report = judge(lines, [done()], [record("interrupted", P2), record("done", P2)])
    assert verdicts(report) == [("twice", KEY)]


@pytest.mark.parametrize("faults", [
    [fault("kill", 103, 2)],  # another process died
    [fault("kill", 101, 9)],  # after the second run began
    [fault("kill", 101, 0)],  # before the first run began (a run after its process died)
    [fault("freeze", 101, 0), fault("thaw", 101, 0.4)],  # frozen and thawed before it began
])
def test_a_fault_that_did_not_cut_the_first_run_excuses_nothing(faults):
    lines = run("r1", 1, None) + faults + run("r2", 8, 8.5, pid=102, process=P2)
    report = judge(lines, [done()], [record("interrupted"), record("done", P2)])
    assert verdicts(report) == [("twice", KEY)]


def test_a_kill_long_after_the_first_run_ended_excuses_nothing():
    lines = run("r1", 1, 1.2) + [fault("kill", 101, 1.2 + 6)] + run("r2", 9, 9.5, pid=102,
                                                                     process=P2)
    report = judge(lines, [done()], [record("interrupted"), record("done", P2)])
    assert verdicts(report) == [("twice", KEY)]


def test_a_kill_just_after_the_first_run_ended_cut_it_before_its_end_was_written():
    lines = run("r1", 1, 1.2) + [fault("kill", 101, 1.5)] + run("r2", 9, 9.5, pid=102,
                                                                 process=P2)
    report = judge(lines, [done()], [record("interrupted"), record("done", P2)])
    assert verdicts(report) == [("rerun", KEY)]


def test_a_frozen_process_whose_run_went_on_after_the_thaw_may_see_it_rerun():
    lines = (run("r1", 1, 9.5) + [fault("freeze", 101, 1.5)] + run("r2", 8, 8.3, pid=102,
                                                                    process=P2)
             + [fault("thaw", 101, 9)])
    lines.sort(key=lambda line: line.get("end") or line.get("start") or line["at"])
    report = judge(lines, [done()], [record("interrupted"), record("done", P2),
                                     record("done")])
    assert verdicts(report) == [("rerun", KEY)]


def test_a_sigterm_that_cut_a_long_run_excuses_its_rerun():
    lines = run("r1", 1, None) + [fault("term", 101, 2), fault("exit", 101, 5)] + run(
        "r2", 6, 9, pid=102, process=P2)
    report = judge(lines, [done()], [record("interrupted"), record("done", P2)])
    assert verdicts(report) == [("rerun", KEY)]


def test_three_runs_need_each_but_the_last_cut():
    lines = (run("r1", 1, None) + [fault("kill", 101, 2)]
             + run("r2", 8, 8.5, pid=102, process=P2)
             + run("r3", 9, 9.5, pid=103, process="chaos@h:103:cccccc"))
    report = judge(lines, [done()], [record("interrupted"), record("done", P2)])
    assert verdicts(report) == [("twice", KEY)]
    why = report.violations[0].why
    assert why.startswith("ran 3 times: run r2 by") and "run r1" not in why
    neither = judge(run("r1", 1, 1.2) + run("r2", 8, 8.5, pid=102, process=P2)
                    + run("r3", 9, 9.5, pid=103), [done()], [])
    why = neither.violations[0].why
    assert why.startswith("ran 3 times: run r1 by") and "; run r2 by" in why


def test_a_task_done_whose_occurrence_never_ran_is_lost():
    report = judge([], [done()], [])
    assert verdicts(report) == [("never", KEY)]
    assert "the task ended done" in report.text()


def test_an_occurrence_recorded_done_that_never_ran_is_lost():
    other = occ.key("t1", T0 + timedelta(seconds=5))
    report = judge(run("r1", 1, 1.2), [done()], [record("done"), record("done", key=other)])
    assert verdicts(report) == sorted([("once", KEY), ("never", other)])


def test_a_run_that_never_ended_in_a_process_never_stopped_is_reported():
    report = judge(run("r1", 1, None), [done()], [])
    assert verdicts(report) == [("unfinished", KEY)]


def test_a_run_cut_and_never_run_again_is_lost():
    report = judge(run("r1", 1, None) + [fault("kill", 101, 2)], [done()],
                   [record("interrupted")])
    assert verdicts(report) == [("never", KEY)]
    assert "never run again" in report.text()


def test_a_run_cut_then_canceled_or_given_up_is_allowed():
    lines = run("r1", 1, None) + [fault("kill", 101, 2)]
    canceled = judge(lines + [{**CANCEL_C, "task": "t1"}], [done(status="canceled")],
                     [record("interrupted")])
    assert verdicts(canceled) == [("cut", KEY)] and canceled.ok
    given_up = judge(lines, [done(status="error", after={
        "error": "interrupted 3 times in a row by the death of ..."})],
        [record("interrupted", error="interrupted 3 times in a row by the death of ...")])
    assert verdicts(given_up) == [("gave up", KEY)] and given_up.ok


def test_a_one_off_task_cut_then_rescheduled_runs_its_new_date():
    new = format_date(T0 + timedelta(seconds=30))
    moved = occ.key("t1", T0 + timedelta(seconds=30))
    lines = run("r1", 1, None) + [fault("kill", 101, 2)] + [
        {"ev": "op", "op": "reschedule", "task": "t1", "node": 2, "at": at(2.5), "ok": True}]
    cut = judge(lines + run("r2", 31, 31.1, key=moved, pid=102, process=P2),
                [done(date=new)], [record("interrupted"), record("done", P2, key=moved)])
    assert verdicts(cut) == sorted([("cut", KEY), ("once", moved)]) and cut.ok
    lost = judge(lines, [done(date=new)], [record("interrupted")])
    assert verdicts(lost) == sorted([("cut", KEY), ("never", moved)])


@pytest.mark.parametrize("status", ["waiting", "running", "scheduled", "cancel",
                                    "reschedule"])
def test_a_task_left_unfinished_is_stuck(status):
    report = judge([], [done(status=status, after={"owner": P1})], [])
    assert verdicts(report) == [("stuck", None)]
    assert f"left {status!r}" in report.text() and P1 in report.text()


def test_a_stuck_task_names_its_partition_and_who_holds_its_lease():
    from after.worker.partitions import partition_of

    k = partition_of("t1")
    leases = {k: {"_id": f"chaos@part:{k:02d}", "owner": P1},
              (k + 1) % 64: {"owner": P1}, (k + 2) % 64: {"owner": P2}}
    beats = {P1: {"_id": P1, "partitions": 1}, P2: {"_id": P2, "partitions": 1}}
    report = judge([], [done(status="waiting")], [])
    held = checker.check(parse([]), [done(status="waiting")], [], leases=leases, live=beats)
    lost = checker.check(parse([]), [done(status="waiting")], [], leases=leases,
                         live={P2: beats[P2]})
    none = checker.check(parse([]), [done(status="waiting")], [], leases={}, live=beats)
    assert (f"its partition {k}: lease owner {P1} (a live process, whose heartbeat says it "
            "owns 1 partitions; 2 leases name it)") in held.text()
    assert f"its partition {k}: lease owner {P1} (not live)" in lost.text()
    assert f"its partition {k} has no lease document" in none.text()
    assert "partition" not in report.text()


def test_a_task_in_error_for_another_reason_is_reported():
    report = judge(run("r1", 1, 1.1), [done(status="error", after={"error": "boom"})], [])
    assert ("error", None) in verdicts(report) and not report.ok


def series(count: int, limit: int = 3) -> tuple[list[dict], list[dict]]:
    lines, docs = [], [done("s", repeat={"seconds": 1, "limit": limit})]
    for i in range(count):
        key = occ.key("s", T0 + timedelta(seconds=i))
        lines += run(f"s{i}", i, i + 0.1, task="s", key=key)
    return lines, docs


def test_a_series_runs_as_many_occurrences_as_its_limit():
    assert judge(*series(3)).ok
    short = judge(*series(2))
    assert ("never", None) in verdicts(short)
    assert "a series of 3 ended done after 2 occurrences ran" in short.text()
    long = judge(*series(4))
    assert ("extra", None) in verdicts(long)


CANCEL_C = {"ev": "op", "op": "cancel", "task": "c", "node": 1, "at": at(0), "ok": False}


def test_design_documents_and_canceled_tasks_owe_nothing():
    report = judge([CANCEL_C], [{"_id": "_design/after", "status": None},
                                done("c", status="canceled")], [])
    assert report.verdicts == [] and report.ok


def test_a_task_canceled_by_no_one_is_lost():
    report = judge([], [done("c", status="canceled")], [])
    assert verdicts(report) == [("never", None)]
    assert "no one asked for a cancel" in report.text()


def test_a_run_long_after_its_cancel_was_acknowledged_is_noted():
    lines = [{"ev": "op", "op": "cancel", "task": "t1", "node": 1, "at": at(0), "ok": True}]
    report = judge(lines + run("r1", 3, 3.1), [done(status="canceled")], [])
    assert report.ok and report.notes and "3.0 s after its cancel" in report.notes[0]


def test_lines_of_text_are_read_and_bad_ones_named():
    text = [json.dumps(line) for line in run("r1", 1, 1.2)] + [""]
    assert parse(text).runs[0].end is not None
    with pytest.raises(HistoryError, match="line 1 is not JSON"):
        parse(["{nope"])
    with pytest.raises(HistoryError, match="an end with no start"):
        parse([run("r1", 1, 1.2)[1]])
    with pytest.raises(HistoryError, match="unknown ev"):
        parse([{"ev": "what"}])
    with pytest.raises(HistoryError, match="a kill without a pid"):
        parse([{"ev": "fault", "fault": "kill", "at": at(0)}])
    with pytest.raises(HistoryError, match="no offset"):
        parse([{**run("r1", 1, None)[0], "start": "2026-12-01T09:00:00"}])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2), st.floats(0, 30),
                          st.booleans()), max_size=12))
def test_without_faults_every_occurrence_run_twice_is_caught(plan):
    """Generated histories of runs (occurrence, process, start, ended) with no fault: the
    report is OK exactly when no occurrence ran twice and every run ended."""
    lines = []
    for n, (which, proc, start, ended) in enumerate(plan):
        key = occ.key("g", T0 + timedelta(seconds=which))
        lines += run(f"g{n}", start, start + 0.1 if ended else None, pid=200 + proc,
                     process=f"chaos@h:{200 + proc}:x", task="g", key=key)
    report = judge(lines + [{**CANCEL_C, "task": "g"}], [done("g", status="canceled")], [])
    per = {}
    for which, _, _, ended in plan:
        per.setdefault(which, []).append(ended)
    clean = all(len(ends) == 1 and ends[0] for ends in per.values())
    assert report.ok == clean
    assert sum(v.verdict == "twice" for v in report.verdicts) == sum(
        len(ends) > 1 for ends in per.values())


def test_the_audit_of_the_window_must_agree_with_the_checker():
    """Issue 25, item 6: the audit (after.audit, over the same records) is a second
    opinion. It agrees on an occurrence run once; run twice with no excuse, both say so;
    it disagrees (a violation naming the audit) when it says twice or never of an
    occurrence the history shows run once."""
    from after import audit as audits

    def audit_of(records):
        rec = [{**r, "attempt": 1, "occurrence_date": DATE} for r in records]
        one = audits.audit_task(done(), rec, T0, T0 + timedelta(minutes=1),
                                T0 + timedelta(minutes=5))
        return audits.report(T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=5), 60.0,
                             [one])

    report = judge(run("r1", 1, 1.2), [done()], [record("done")])
    assert checker.against_audit(report, audit_of([record("done")])) == []
    assert report.notes[-1] == "audit of the window: on_time 1; agrees"
    twice = run("r1", 1, 1.2) + run("r2", 1.1, 1.3, pid=102, process=P2)
    both = [record("done"), record("done", P2)]
    assert checker.against_audit(judge(twice, [done()], both), audit_of(both)) == []
    # the run records say twice (a record written twice) where the history says once
    [wrong] = checker.against_audit(report, audit_of(both))
    assert (wrong.verdict, wrong.occurrence, wrong.wrong) == ("audit", KEY, True)
    assert wrong.why.startswith("the audit says twice (ran 2 runs of attempt 1), the checker "
                                "once")
    # no record of a run the history shows: the audit says never
    [lost] = checker.against_audit(report, audit_of([]))
    assert lost.why == "the audit says never, the checker found it ran (once)"
