"""Pause and resume, overlap and priority: the pure rules (after.task, after.decide,
after.priorities), at a fixed ``NOW``; no server, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from after import decide as d
from after import priorities
from after import task as rules
from after.dates import format_date, parse_date, to_ms
from after.decide import Kind, Liveness, View, Write
from after.runner import Held
from after.slots import Slots
from after.task import Outcome, parse

NOW = datetime(2026, 12, 1, 9, 0, 0, 250000, tzinfo=UTC)
ME = d.Identity(name="w", process="w@here:1:aaaaaa", host="here", pid=1)
PEER = "w@there:2:bbbbbb"


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def iso(when: datetime) -> str:
    return format_date(when)


def doc(status="waiting", date=0.0, **fields) -> dict:
    return {"_id": "t", "_rev": "3-x", "worker": "w", "status": status, "date": iso(at(date)),
            "job": {"name": "hello", "arguments": []}, **fields}


def view(held=None, paused=False, alive=(PEER,)) -> View:
    return View(me=ME, horizon_ms=300_000, held=held or {},
                liveness=lambda o: Liveness.ALIVE if o in alive else Liveness.DEAD,
                preferred=lambda docid: True, check_job=lambda name: None, paused=paused)


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
    assert shape(d.decide(paused, view(held={"t": False}), NOW)) == ["Drop"]


def test_a_paused_task_running_here_is_kept_until_its_run_ends():
    paused = rules.request_pause(started(doc(), NOW), at(1))
    assert shape(d.decide(paused, view(held={"t": True}), at(1))) == ["Keep"]


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
    assert shape(d.decide(resumed, view(), at(600))) == [
        "Drop", ("Write", Kind.CLAIMSTART, "running")]


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
    moves it to its next occurrence after now (no catch-up run), then claims that."""
    series = rules.request_pause(doc(repeat={"minutes": 1}), NOW)
    plain = {**series, "status": "waiting"}
    actions = d.decide(plain, view(), at(630))
    assert shape(actions) == ["Drop", ("Write", Kind.RESUME, "waiting")]
    assert actions[1].doc["date"] == iso(at(660)) and "paused" not in actions[1].doc["after"]
    assert shape(d.decide(actions[1].doc, view(), at(630))) == [
        "Drop", ("Write", Kind.CLAIM, "scheduled")]


def test_a_task_rescheduled_after_a_pause_keeps_the_date_given():
    """A paused task canceled, then rescheduled to a date: no stamp left to read it as a
    resume (which would move it to its next occurrence after now)."""
    paused = rules.request_pause(doc(repeat={"minutes": 1}), NOW)
    again = rules.request_reschedule(rules.request_cancel(paused, at(1)), at(3600),
                                     any_status=True)
    assert "paused" not in again["after"] and again["date"] == iso(at(3600))
    assert shape(d.decide(again, view(), at(2))) == ["Drop"]  # beyond the horizon: left


# -- a paused worker name -------------------------------------------------------------------


@pytest.mark.parametrize("status", ["waiting", "reschedule"])
def test_a_paused_name_claims_nothing(status):
    assert shape(d.decide(doc(status, date=-1), view(paused=True), NOW)) == ["Drop"]


def test_a_paused_name_hands_back_what_it_holds():
    held = doc("scheduled", date=30, after={"owner": ME.process, "due": iso(at(30))})
    assert shape(d.decide(held, view(held={"t": False}, paused=True), NOW)) == [
        "Drop", ("Write", Kind.HANDBACK, "waiting")]


def test_a_paused_name_takes_over_nothing_from_a_dead_process():
    dead = doc("scheduled", date=-1, after={"owner": "w@gone:9:zzzzzz", "due": iso(at(-1))})
    assert shape(d.decide(dead, view(paused=True), NOW)) == ["Drop"]
    running = started(doc(date=-1), NOW, owner="w@gone:9:zzzzzz")
    assert shape(d.decide(running, view(paused=True), NOW)) == ["Drop"]


def test_a_paused_name_lets_its_runs_finish():
    running = started(doc(), NOW)
    assert shape(d.decide(running, view(held={"t": True}, paused=True), NOW)) == ["Keep"]


def test_a_paused_name_still_applies_a_cancel():
    assert shape(d.decide(doc("cancel"), view(paused=True), NOW)) == [
        "Drop", ("Write", Kind.CANCEL, "canceled")]


# -- overlap --------------------------------------------------------------------------------


def ended(overlap: str, seconds: float, **fields):
    """A task every 10 s from NOW, started on time, whose run took ``seconds``: the finished
    document and the run's end write (with its skipped records)."""
    series = doc(repeat={"seconds": 10}, overlap=overlap, **fields)
    live = started(series, NOW)
    outcome = Outcome(rules.OK, NOW, at(seconds))
    return d.end(live, parse(series), outcome, ME, at(seconds))


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
    assert shape(d.decide(write.doc, view(), at(35))) == [
        "Drop", ("Write", Kind.CLAIMSTART, "running")]


def test_buffer_one_with_one_occurrence_during_the_run_skips_none():
    write = ended("buffer_one", 15)
    assert write.doc["date"] == iso(at(10)) and write.skipped == []


def test_buffer_one_keeps_to_the_limit():
    write = ended("buffer_one", 35, **{"after": {"occurrences": 1}})
    assert write.doc["status"] == "waiting"
    last = ended("buffer_one", 35)
    assert last.doc["status"] == "waiting"
    series = doc(repeat={"seconds": 10, "limit": 1}, overlap="buffer_one")
    done = d.end(started(series, NOW), parse(series), Outcome(rules.OK, NOW, at(35)), ME,
                 at(35))
    assert done.doc["status"] == "done" and done.skipped == []  # nothing after the last run


def test_skipped_records_are_bounded():
    write = ended("skip", 10 * (rules.MAX_SKIPPED + 50))
    assert len(write.skipped) == rules.MAX_SKIPPED
    assert write.doc["after"]["skipped"] == rules.MAX_SKIPPED


def test_a_run_to_be_retried_skips_nothing_yet():
    series = doc(repeat={"seconds": 10}, retry={"limit": 1})
    live = started(series, NOW)
    write = d.end(live, parse(series), Outcome(rules.FAILED, NOW, at(35), error="x"), ME,
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
        write = d.end(live, spec, Outcome(rules.OK, due, end), ME, end)
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


def test_the_loop_decides_higher_priorities_then_earlier_dates_first():
    events = [("change", doc(date=5) | {"_id": "low"}),
              ("finished", ("x", "tok")),
              ("recheck", doc(date=9, priority=5) | {"_id": "high-late"}),
              ("change", doc(date=1, priority=5) | {"_id": "high-early"}),
              ("fire", ("run", "y")),
              ("change", doc(date=0, priority=-1) | {"_id": "negative"})]
    order = [e[1]["_id"] if isinstance(e[1], dict) else e[0]
             for e in sorted(events, key=priorities.event_order)]
    assert order == ["fire", "finished", "high-early", "high-late", "low", "negative"]


def test_timers_of_held_tasks_fire_by_priority_then_due_instant():
    def held(priority, due):
        return Held(doc=doc(priority=priority), spec=parse(doc()), due_ms=to_ms(at(due)))
    table = {"a": held(0, 1), "b": held(2, 3), "c": held(2, 2)}
    events = [("fire", ("run", "a")), ("fire", ("run", "b")), ("fire", ("claim", "x")),
              ("fire", ("run", "c"))]
    order = [e[1][1] for e in sorted(events, key=lambda e: priorities.event_order(e, table))]
    assert order == ["c", "b", "x", "a"]  # a claim timer as priority 0, at no instant


def test_the_first_task_waiting_for_a_thread_is_the_highest_priority_then_the_earliest():
    def rank(priority, due):
        return priorities.rank(doc(priority=priority), to_ms(at(due)))
    slots = Slots(1)
    for docid, priority, due in (("a", 0, 1), ("b", 3, 9), ("c", 3, 2), ("d", 0, 1)):
        slots.wait(docid, rank(priority, due))
    slots.wait("a", rank(5, 1))  # waits again, now urgent: its old place is void
    del slots.waiting["d"]  # let go (claimed elsewhere, say)
    order = []
    while (docid := slots.next_waiting()) is not None:
        order.append(docid)
    assert order == ["a", "c", "b"] and not slots.waiting and not slots.line


# -- overlap allow: runs detached from the task -------------------------------------------------


def allow_start(series: dict, due: datetime, token="tok1", now=None) -> Write:
    """The start of ``series`` at ``due`` as the worker writes it (a fired held occurrence)."""
    spec = parse(series)
    held = rules.claim(series, ME.process, due, now or due)
    number = rules.counter(rules.info(held), "runs") + 1  # as decide.fire numbers it
    return d.detached(Write(Kind.START, rules.start(held, ME.process, now or due, number),
                            spec=spec, token=token, due=due), now or due)


def test_allow_schedules_the_next_occurrence_as_a_run_starts():
    series = doc(repeat={"seconds": 10}, overlap="allow")
    write = allow_start(series, NOW)
    assert write.detached == "tok1"
    assert write.doc["status"] == "waiting" and write.doc["date"] == iso(at(10))
    ns = write.doc["after"]
    assert ns["going"] == {"tok1": {"owner": ME.process, "started": iso(NOW), "due": iso(NOW),
                                    "number": 1}}
    assert ns["runs"] == 1 and ns["occurrences"] == 1 and "owner" not in ns
    # the next occurrence is claimed as any waiting task, while the run goes on
    assert shape(d.decide(write.doc, view(), at(9.5))) == [
        "Drop", ("Write", Kind.CLAIM, "scheduled")]


def test_allow_runs_side_by_side_have_their_own_numbers_and_end_into_the_task():
    series = doc(repeat={"seconds": 10}, overlap="allow")
    first = allow_start(series, NOW).doc
    second = allow_start({**first, "_rev": "5-y"}, at(10), token="tok2").doc
    assert set(second["after"]["going"]) == {"tok1", "tok2"}
    assert second["after"]["going"]["tok2"]["number"] == 2 and second["after"]["runs"] == 2
    assert second["date"] == iso(at(20))
    spec = parse(series)
    ended = d.end_detached(first, spec, "tok1", Outcome(rules.OK, NOW, at(15)), ME, at(15),
                           dead=lambda owner: False)
    assert ended.run["number"] == 1 and ended.run["scheduled"] == iso(NOW)
    assert ended.run["outcome"] == "done"
    # written over the newer version (a conflict): only its own run leaves the task
    [again] = d.refinish(ended, second, ME, at(15))
    assert set(again.doc["after"]["going"]) == {"tok2"}
    assert again.doc["after"]["successes"] == 1 and again.doc["after"]["runs"] == 2
    assert again.doc["date"] == iso(at(20)) and again.doc["status"] == "waiting"
    assert again.doc["after"]["last_run"]["number"] == 1


def test_allow_a_run_already_recorded_elsewhere_only_records_itself():
    series = doc(repeat={"seconds": 10}, overlap="allow")
    first = allow_start(series, NOW).doc
    spec = parse(series)
    ended = d.end_detached(first, spec, "tok1", Outcome(rules.OK, NOW, at(15)), ME, at(15),
                           dead=lambda owner: False)
    gone = {**first, "after": {**first["after"], "going": {}}}
    assert d.refinish(ended, gone, ME, at(15)) == []


def test_allow_the_runs_of_a_dead_process_are_recorded_interrupted_when_one_ends():
    series = doc(repeat={"seconds": 10}, overlap="allow")
    theirs = allow_start(series, NOW, token="lost").doc
    theirs["after"]["going"]["lost"]["owner"] = "w@gone:9:zzzzzz"
    mine = allow_start({**theirs, "_rev": "5-y"}, at(10), token="tok2").doc
    ended = d.end_detached(mine, parse(series), "tok2", Outcome(rules.OK, at(10), at(12)), ME,
                           at(12), dead=lambda owner: owner == "w@gone:9:zzzzzz")
    assert "going" not in ended.doc["after"]
    [lost] = ended.skipped
    assert lost["outcome"] == "interrupted" and lost["process"] == "w@gone:9:zzzzzz"
    assert lost["number"] == 1 and ended.doc["after"]["failures"] == 1


def test_allow_the_last_occurrence_runs_in_place():
    series = doc(repeat={"seconds": 10, "limit": 1}, overlap="allow")
    write = allow_start(series, NOW)
    assert write.detached is None and write.doc["status"] == "running"


def test_allow_the_job_sees_its_own_occurrence():
    series = doc(repeat={"seconds": 10}, overlap="allow")
    written = allow_start(series, NOW).doc
    from after import overlap

    seen = overlap.as_run(written, "tok1")
    assert seen["date"] == iso(NOW) and seen["status"] == "running"
    assert seen["after"]["run"] == 1 and seen["after"]["attempt"] == 1


def test_allow_is_never_started_ahead_of_its_date():
    series = doc(date=1, repeat={"seconds": 10}, overlap="allow")
    write = d.claim(series, parse(series), at(1), ME.process, NOW, lead_ms=2000)
    assert write.kind is Kind.CLAIM  # held, started at its due instant


def test_allow_takes_no_retry():
    with pytest.raises(rules.TaskError, match="^overlap: 'allow' runs each occurrence once"):
        parse(doc(repeat={"seconds": 10}, overlap="allow", retry=2))
