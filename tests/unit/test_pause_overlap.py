"""Pause and resume, overlap and priority: the pure rules (after.rules.task, after.worker.decide,
after.worker.runs, the line of after.worker.state), at a fixed ``NOW``; no server, no
clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from after.rules import task as rules
from after.rules.dates import format_date, parse_date, to_ms
from after.rules.task import Outcome, parse
from after.worker import decide as d
from after.worker import runs as r
from after.worker.decide import View
from after.worker.partitions import PARTITIONS
from after.worker.runs import Kind, Write
from after.worker.state import Line, rank

NOW = datetime(2026, 12, 1, 9, 0, 0, 250000, tzinfo=UTC)
ME = r.Identity(name="w", process="w@here:1:aaaaaa", host="here", pid=1)
PEER = "w@there:2:bbbbbb"


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def iso(when: datetime) -> str:
    return format_date(when)


def doc(status="waiting", date=0.0, **fields) -> dict:
    return {"_id": "t", "_rev": "3-x", "worker": "w", "status": status, "date": iso(at(date)),
            "job": {"name": "hello", "arguments": []}, **fields}


def view(running=(), alive=(PEER,)) -> View:
    return View(me=ME, horizon_ms=300_000, owned=frozenset(range(PARTITIONS)),
                running=frozenset(running), live=frozenset(alive),
                dead=frozenset({"w@gone:9:zzzzzz"}))


def shape(actions):
    return [(type(a).__name__, a.kind, a.doc["status"]) if isinstance(a, Write)
            else type(a).__name__ for a in actions]


def started(document: dict, now: datetime, owner: str = ME.process) -> dict:
    spec = parse(document)
    return rules.start(rules.claim(document, owner, spec.date, now), owner, now, 1)


# -- pause and resume of a task ---------------------------------------------------------------


@pytest.mark.parametrize("status", ["waiting", "scheduled", "reschedule"])
def test_pause_stamps_the_task_and_drops_any_hold(status):
    held = doc(status, after={"owner": ME.process, "due": iso(NOW), "claimed": iso(NOW)})
    paused = rules.request_pause(held, NOW)
    assert paused["status"] == "paused"
    assert paused["after"] == {"paused": iso(NOW)}


def test_pause_of_a_running_task_keeps_its_run():
    live = started(doc(), NOW)
    paused = rules.request_pause(live, at(1))
    assert paused["status"] == "paused"
    assert paused["after"]["owner"] == ME.process and paused["after"]["started"]
    assert rules.held(paused)  # a cancel now is a request its process applies


@pytest.mark.parametrize("status", ["done", "error", "canceled", "cancel"])
def test_nothing_to_pause_when_finished_or_canceled(status):
    with pytest.raises(rules.StateError, match=f"task t is {status}: there is nothing to "
                                               "pause"):
        rules.request_pause(doc(status), NOW)


def test_pausing_twice_writes_nothing():
    assert rules.request_pause(rules.request_pause(doc(), NOW), at(5)) is None


def test_a_paused_task_is_dropped_and_nothing_written():
    paused = rules.request_pause(doc(date=-5), NOW)
    assert shape(d.decide(paused, view(), NOW)) == ["Drop"]


def test_a_paused_task_running_here_is_kept_until_its_run_ends():
    paused = rules.request_pause(started(doc(), NOW), at(1))
    assert shape(d.decide(paused, view(running={"t"}), at(1))) == ["Keep"]


def test_a_run_paused_meanwhile_is_recorded_and_the_task_stays_paused():
    series = doc(repeat={"minutes": 1})
    paused = rules.request_pause(started(series, NOW), at(1))
    after = rules.finish(paused, parse(series), Outcome(rules.OK, NOW, at(2)), at(2))
    assert after["status"] == "paused"
    assert after["after"]["runs"] == 1 and after["after"]["last_run"]["outcome"] == "done"
    assert "owner" not in after["after"] and after["after"]["paused"] == iso(at(1))
    assert shape(d.decide(after, view(), at(2))) == ["Drop"]


def test_a_failed_run_paused_meanwhile_waits_for_no_retry():
    series = doc(retry={"limit": 3, "delay": 1})
    paused = rules.request_pause(started(series, NOW), at(1))
    after = rules.finish(paused, parse(series), Outcome(rules.FAILED, NOW, at(2), error="x"),
                         at(2))
    assert after["status"] == "paused" and "retry_at" not in after["after"]


def test_resume_runs_from_the_next_occurrence_after_now_with_no_catch_up():
    # every minute from NOW; paused, then resumed 10 minutes and 30 s later
    series = rules.request_pause(doc(repeat={"minutes": 1}), NOW)
    resumed = rules.request_resume(series, at(630))
    assert resumed["status"] == "waiting" and resumed["date"] == iso(at(660))
    assert "paused" not in resumed["after"] and resumed["after"]["next_run"] == iso(at(660))
    assert resumed["after"]["anchor"] == iso(NOW)


def test_a_resume_keeps_the_pause_for_the_audit_the_last_ones_only():
    series = doc(repeat={"minutes": 1})
    for k in range(rules.MAX_PAUSES + 2):
        series = rules.request_resume(rules.request_pause(series, at(100 * k)), at(100 * k + 30))
    pauses = series["after"]["pauses"]
    assert len(pauses) == rules.MAX_PAUSES
    assert pauses[-1] == {"from": iso(at(100 * (rules.MAX_PAUSES + 1))),
                          "to": iso(at(100 * (rules.MAX_PAUSES + 1) + 30))}
    assert pauses[0]["from"] == iso(at(200))  # the two first are gone
    # the worker's resume of a plain "waiting", and a resume while the run goes, keep it too
    plain = {**rules.request_pause(doc(repeat={"minutes": 1}), NOW), "status": "waiting"}
    assert rules.resume(plain, parse(plain), at(5))["after"]["pauses"] == [
        {"from": iso(NOW), "to": iso(at(5))}]
    going = rules.request_resume(rules.request_pause(started(doc(repeat={"minutes": 1}), NOW),
                                                     at(1)), at(2))
    assert going["after"]["pauses"] == [{"from": iso(at(1)), "to": iso(at(2))}]
    # a stamp a user wrote that is no date is dropped, and what was there left as it was
    odd = {**doc(status="paused"), "after": {"paused": "yesterday", "pauses": "odd"}}
    resumed = rules.request_resume(odd, NOW)["after"]
    assert "paused" not in resumed and resumed["pauses"] == "odd"


def test_resume_counts_no_occurrence_toward_the_limit():
    series = doc(repeat={"minutes": 1, "limit": 3},
                 after={"occurrences": 1, "anchor": iso(at(-60))})
    resumed = rules.request_resume(rules.request_pause(series, NOW), at(600))
    assert resumed["date"] == iso(at(660))
    assert resumed["after"]["occurrences"] == 1


def test_resume_of_a_series_with_nothing_left_ends_it_done():
    series = doc(repeat={"minutes": 1, "until": iso(at(120))})
    resumed = rules.request_resume(rules.request_pause(series, NOW), at(600))
    assert resumed["status"] == "done"


def test_resume_of_a_one_off_task_whose_date_passed_runs_it_at_once():
    one_off = rules.request_pause(doc(date=60), NOW)
    resumed = rules.request_resume(one_off, at(600))
    assert resumed["status"] == "waiting" and resumed["date"] == iso(at(60))
    [hold] = d.decide(resumed, view(), at(600))
    assert shape([hold]) == ["Hold"] and hold.due_ms == to_ms(at(60))  # due: fires at once


def test_resume_of_a_task_still_ahead_keeps_its_date():
    resumed = rules.request_resume(rules.request_pause(doc(date=3600,
                                                           repeat={"hours": 1}), NOW), at(5))
    assert resumed["date"] == iso(at(3600))


def test_resume_while_its_run_goes_on_undoes_the_pause():
    paused = rules.request_pause(started(doc(repeat={"minutes": 1}), NOW), at(1))
    resumed = rules.request_resume(paused, at(2))
    assert resumed["status"] == "running" and "paused" not in resumed["after"]


def test_resume_of_a_task_not_paused_writes_nothing():
    assert rules.request_resume(doc(), NOW) is None
    with pytest.raises(rules.StateError):
        rules.request_resume(doc("done"), NOW)


def test_a_plain_waiting_on_a_paused_task_is_resumed_by_the_worker():
    """A user resuming with plain HTTP writes "waiting" over the paused document: the worker
    moves it to its next occurrence after now (no catch-up run), then holds that."""
    series = rules.request_pause(doc(repeat={"minutes": 1}), NOW)
    plain = {**series, "status": "waiting"}
    actions = d.decide(plain, view(), at(630))
    assert shape(actions) == ["Drop", ("Write", Kind.RESUME, "waiting")]
    assert actions[1].doc["date"] == iso(at(660)) and "paused" not in actions[1].doc["after"]
    assert shape(d.decide(actions[1].doc, view(), at(630))) == ["Hold"]


def test_a_task_rescheduled_after_a_pause_keeps_the_date_given():
    """A paused task canceled, then rescheduled to a date: no stamp left to read it as a
    resume (which would move it to its next occurrence after now)."""
    paused = rules.request_pause(doc(repeat={"minutes": 1}), NOW)
    again = rules.request_reschedule(rules.request_cancel(paused, at(1)), at(3600),
                                     any_status=True)
    assert "paused" not in again["after"] and again["date"] == iso(at(3600))
    assert shape(d.decide(again, view(), at(2))) == ["Drop"]  # beyond the horizon: left


# -- overlap --------------------------------------------------------------------------------


def ended(overlap: str, seconds: float, **fields):
    """A task every 10 s from NOW, started on time, whose run took ``seconds``: the finished
    document and the run's end write (with its skipped records)."""
    series = doc(repeat={"seconds": 10}, overlap=overlap, **fields)
    live = started(series, NOW)
    outcome = Outcome(rules.OK, NOW, at(seconds))
    return r.end(live, parse(series), outcome, ME, at(seconds))


def test_skip_records_each_occurrence_that_fell_due_during_the_run():
    write = ended("skip", 35)
    assert write.doc["date"] == iso(at(40)) and write.doc["status"] == "waiting"
    assert [r["scheduled"] for r in write.skipped] == [iso(at(10)), iso(at(20)), iso(at(30))]
    assert {r["outcome"] for r in write.skipped} == {"skipped"}
    assert write.doc["after"]["skipped"] == 3 and write.doc["after"]["runs"] == 1
    assert len({r["_id"] for r in write.skipped}) == 3


def test_skip_is_the_default_and_a_short_run_skips_nothing():
    write = ended("skip", 5)
    assert write.skipped == [] and write.doc["date"] == iso(at(10))
    assert "skipped" not in write.doc["after"]
    assert parse(doc()).overlap == "skip"


def test_buffer_one_runs_the_latest_right_after_and_skips_the_others():
    write = ended("buffer_one", 35)
    assert write.doc["date"] == iso(at(30))  # due already: runs right after
    assert [r["scheduled"] for r in write.skipped] == [iso(at(10)), iso(at(20))]
    [hold] = d.decide(write.doc, view(), at(35))
    assert shape([hold]) == ["Hold"] and hold.due_ms == to_ms(at(30))


def test_buffer_one_with_one_occurrence_during_the_run_skips_none():
    write = ended("buffer_one", 15)
    assert write.doc["date"] == iso(at(10)) and write.skipped == []


def test_buffer_one_keeps_to_the_limit():
    write = ended("buffer_one", 35, **{"after": {"occurrences": 1}})
    assert write.doc["status"] == "waiting"
    last = ended("buffer_one", 35)
    assert last.doc["status"] == "waiting"
    series = doc(repeat={"seconds": 10, "limit": 1}, overlap="buffer_one")
    done = r.end(started(series, NOW), parse(series), Outcome(rules.OK, NOW, at(35)), ME,
                 at(35))
    assert done.doc["status"] == "done" and done.skipped == []  # nothing after the last run


def test_skipped_records_are_bounded():
    write = ended("skip", 10 * (rules.MAX_SKIPPED + 50))
    assert len(write.skipped) == rules.MAX_SKIPPED
    assert write.doc["after"]["skipped"] == rules.MAX_SKIPPED


def test_a_run_to_be_retried_skips_nothing_yet():
    series = doc(repeat={"seconds": 10}, retry={"limit": 1})
    live = started(series, NOW)
    write = r.end(live, parse(series), Outcome(rules.FAILED, NOW, at(35), error="x"), ME,
                  at(35))
    assert write.doc["status"] == "scheduled" and write.skipped == []


@settings(max_examples=60, deadline=None)
@given(overlap=st.sampled_from(["skip", "buffer_one"]),
       durations=st.lists(st.integers(1, 45), min_size=1, max_size=12))
def test_every_occurrence_is_run_or_skipped_once(overlap, durations):
    """Runs of random lengths of a task every 10 s, each started when it falls due: every
    occurrence up to the last run's end is either run or recorded skipped, exactly once."""
    series = doc(repeat={"seconds": 10}, overlap=overlap)
    spec0 = parse(series)
    current, ran, skipped = series, [], []
    for seconds in durations:
        spec = parse(current)
        due = spec.date
        ran.append(due)
        live = rules.start(rules.claim(current, ME.process, due, due), ME.process, due, 1)
        end = due + timedelta(seconds=seconds)
        write = r.end(live, spec, Outcome(rules.OK, due, end), ME, end)
        skipped += [parse_date(r["scheduled"]) for r in write.skipped]
        current = {**write.doc, "_rev": "1-x"}
    everything = sorted(ran + skipped)
    assert len(everything) == len(set(everything))
    last = parse(current).date
    expected = [spec0.date + timedelta(seconds=10 * k)
                for k in range(int((last - spec0.date).total_seconds() // 10))]
    assert everything == expected


# -- priority -------------------------------------------------------------------------------


def test_priority_defaults_to_zero_and_reads_integers():
    assert parse(doc()).priority == 0 and parse(doc(priority=-7)).priority == -7
    assert rules.priority_of(doc(priority="x")) == 0


def test_timers_of_held_tasks_fire_by_priority_then_due_instant():
    ranked = sorted([("a", rank(doc(priority=0), to_ms(at(1)))),
                     ("b", rank(doc(priority=2), to_ms(at(3)))),
                     ("c", rank(doc(priority=2), to_ms(at(2))))], key=lambda item: item[1])
    assert [docid for docid, _ in ranked] == ["c", "b", "a"]


def test_the_first_task_waiting_for_a_thread_is_the_highest_priority_then_the_earliest():
    def ranked(priority, due):
        return rank(doc(priority=priority), to_ms(at(due)))
    line = Line()
    for docid, priority, due in (("a", 0, 1), ("b", 3, 9), ("c", 3, 2), ("d", 0, 1)):
        line.add(docid, ranked(priority, due))
    line.add("a", ranked(5, 1))  # waits again, now urgent: its old place is void
    line.remove("d")  # let go (its partition given up, say)
    order = []
    while (docid := line.pop()) is not None:
        order.append(docid)
    assert order == ["a", "c", "b"] and not len(line)


# -- overlap allow: runs detached from the task -------------------------------------------------


def allow_start(series: dict, due: datetime, token="tok1", now=None) -> Write | None:
    """The start of ``series`` at ``due`` as the worker writes it (a fired held occurrence);
    None when it runs in place (its last occurrence)."""
    spec = parse(series)
    started = r.begin(series, spec, due, ME.process, now or due)
    return r.detach(started, spec, token, due, now or due)


def test_allow_schedules_the_next_occurrence_as_a_run_starts():
    series = doc(repeat={"seconds": 10}, overlap="allow")
    write = allow_start(series, NOW)
    assert write.detached and write.token == "tok1" and write.kind is Kind.DETACH
    assert write.doc["status"] == "waiting" and write.doc["date"] == iso(at(10))
    ns = write.doc["after"]
    assert ns["going"] == {"tok1": {"owner": ME.process, "started": iso(NOW), "due": iso(NOW),
                                    "number": 1}}
    assert ns["runs"] == 1 and ns["occurrences"] == 1 and "owner" not in ns
    # the next occurrence is held as any waiting task, while the run goes on
    assert shape(d.decide(write.doc, view(), at(9.5))) == ["Hold"]


def test_allow_runs_side_by_side_have_their_own_numbers_and_end_into_the_task():
    series = doc(repeat={"seconds": 10}, overlap="allow")
    first = allow_start(series, NOW).doc
    second = allow_start({**first, "_rev": "5-y"}, at(10), token="tok2").doc
    assert set(second["after"]["going"]) == {"tok1", "tok2"}
    assert second["after"]["going"]["tok2"]["number"] == 2 and second["after"]["runs"] == 2
    assert second["date"] == iso(at(20))
    spec = parse(series)
    ended = r.end_detached(first, spec, "tok1", Outcome(rules.OK, NOW, at(15)), ME, at(15),
                           dead=lambda owner: False)
    assert ended.run["number"] == 1 and ended.run["scheduled"] == iso(NOW)
    assert ended.run["outcome"] == "done"
    # written over the newer version (a conflict): only its own run leaves the task
    [again] = r.refinish(ended, second, ME, at(15))
    assert set(again.doc["after"]["going"]) == {"tok2"}
    assert again.doc["after"]["successes"] == 1 and again.doc["after"]["runs"] == 2
    assert again.doc["date"] == iso(at(20)) and again.doc["status"] == "waiting"
    assert again.doc["after"]["last_run"]["number"] == 1


def test_allow_a_run_already_recorded_elsewhere_only_records_itself():
    series = doc(repeat={"seconds": 10}, overlap="allow")
    first = allow_start(series, NOW).doc
    spec = parse(series)
    ended = r.end_detached(first, spec, "tok1", Outcome(rules.OK, NOW, at(15)), ME, at(15),
                           dead=lambda owner: False)
    gone = {**first, "after": {**first["after"], "going": {}}}
    assert r.refinish(ended, gone, ME, at(15)) == []


def test_allow_the_runs_of_a_dead_process_are_recorded_interrupted_when_one_ends():
    series = doc(repeat={"seconds": 10}, overlap="allow")
    theirs = allow_start(series, NOW, token="lost").doc
    theirs["after"]["going"]["lost"]["owner"] = "w@gone:9:zzzzzz"
    mine = allow_start({**theirs, "_rev": "5-y"}, at(10), token="tok2").doc
    ended = r.end_detached(mine, parse(series), "tok2", Outcome(rules.OK, at(10), at(12)), ME,
                           at(12), dead=lambda owner: owner == "w@gone:9:zzzzzz")
    assert "going" not in ended.doc["after"]
    [lost] = ended.skipped
    assert lost["outcome"] == "interrupted" and lost["process"] == "w@gone:9:zzzzzz"
    assert lost["number"] == 1 and ended.doc["after"]["failures"] == 1


def test_allow_the_last_occurrence_runs_in_place():
    series = doc(repeat={"seconds": 10, "limit": 1}, overlap="allow")
    assert allow_start(series, NOW) is None  # no next occurrence: its run goes in place


def test_allow_the_job_sees_its_own_occurrence():
    series = doc(repeat={"seconds": 10}, overlap="allow")
    written = allow_start(series, NOW).doc
    from after.rules import overlap

    seen = overlap.as_run(written, "tok1")
    assert seen["date"] == iso(NOW) and seen["status"] == "running"
    assert seen["after"]["run"] == 1 and seen["after"]["attempt"] == 1


def test_allow_takes_no_retry():
    with pytest.raises(rules.TaskError, match="^overlap: 'allow' runs each occurrence once"):
        parse(doc(repeat={"seconds": 10}, overlap="allow", retry=2))
