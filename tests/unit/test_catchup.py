"""Catch-up policies (issue 25, after.rules.catchup): what runs of the occurrences a repeating
task missed while no worker ran it. Pure: tables at a fixed ``NOW``, the worker's decisions
driven by hand (after.worker.decide, after.worker.runs), and generated downtimes replayed
against them with a clock of the test's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from after.rules import catchup as cu
from after.rules import skipping
from after.rules import task as rules
from after.rules.dates import format_date, from_ms, parse_date
from after.rules.repeat import parse_repeat
from after.worker import decide as d
from after.worker import runs as r
from after.worker.decide import Drop, Hold, Note, Over, View
from after.worker.partitions import PARTITIONS
from after.worker.runs import Kind, Write
from after.worker.writer import Answer

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ME = r.Identity(name="w", process="w@here:1:aaaaaa", host="here", pid=1)
VIEW = View(me=ME, horizon_ms=40 * 86400 * 1000, owned=frozenset(range(PARTITIONS)))
MINUTE = timedelta(minutes=1)


def at(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


def task(date=at(-10), repeat=None, **fields) -> dict:
    """A task every minute (``repeat=False``: a one-off task), due at ``date``."""
    doc = {"_id": "t", "_rev": "1-a", "worker": "w", "date": format_date(date),
           "job": {"name": "hello", "arguments": []}, "status": "waiting",
           "repeat": {"minutes": 1} if repeat is None else repeat, **fields}
    if repeat is False:
        del doc["repeat"]
    return doc


def plan_of(doc: dict, now: datetime = NOW) -> cu.Plan | None:
    spec = rules.parse(doc)
    anchor = rules.instant(rules.info(doc).get("anchor")) or spec.date
    return cu.plan(spec.repeat, spec.id, spec.date, anchor, spec.catchup, spec.max_delay, now)


# -- the rule: its last occurrences in a window ----------------------------------------------

# (unit, the longest window in minutes: a forward read of it stays cheap)
RULES = [({"seconds": 1}, 300), ({"minutes": 7}, 20_000), ({"hours": 5}, 400_000),
         ({"months": 1}, 4_000_000), ({"cron": "*/10 * * * *"}, 20_000),
         ({"cron": "0 9 * * 1-5", "tz": "Europe/Paris"}, 400_000),
         ({"cron": "30 1 * * *", "tz": "America/New_York", "dst": {"fold": "both"}}, 400_000)]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(RULES), st.integers(-10_000, 400 * 24 * 60), st.floats(0, 1),
       st.integers(0, 30))
def test_the_last_occurrences_of_a_window_are_those_read_forward(rule_and_most, low, part,
                                                                  most):
    unit, longest = rule_and_most
    rule = parse_repeat(unit)
    anchor = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)
    start = anchor + timedelta(minutes=low)
    end = start + timedelta(minutes=int(part * longest))
    forward = rule.between(anchor, start, end, 100_000)
    assert rule.last(anchor, start, end, most) == forward[-(most + 1):]


def test_the_last_occurrences_of_a_long_downtime_cost_what_they_are():
    """A task every second down for three years: its last ones are found at once."""
    rule = parse_repeat({"seconds": 1})
    anchor = datetime(2023, 1, 1, tzinfo=UTC)
    found = rule.last(anchor, anchor, NOW, 99)
    assert found == [NOW - timedelta(seconds=k) for k in range(99, -1, -1)]
    assert parse_repeat({"cron": "* * * * *"}).last(anchor, anchor, NOW, 2) == [
        NOW - 2 * MINUTE, NOW - MINUTE, NOW]


# -- the policies, as tables -----------------------------------------------------------------

PLANS = [
    # (what, the catchup and other fields, runs now, missed)
    ("latest: the latest occurrence due runs, the nine before are missed", {},
     [0], list(range(-10, 0))),
    ("latest, its date still the latest due: as it is", {"date": at(-0.5)}, [-0.5], []),
    ("latest within a window of 5 minutes: the same", {"catchup": {"window": 300}},
     [0], list(range(-10, 0))),
    ("latest: max_delay past the latest: none runs", {"max_delay": 30, "date": at(-9.5),
                                                      "repeat": {"minutes": 2}},
     [], [-9.5, -7.5, -5.5, -3.5, -1.5]),
    ("none: the latest, on time, runs", {"catchup": {"policy": "none"}}, [0],
     list(range(-10, 0))),
    ("none: none more than a minute late", {"catchup": {"policy": "none"},
                                            "date": at(-9.5), "repeat": {"minutes": 2}},
     [], [-9.5, -7.5, -5.5, -3.5, -1.5]),
    ("none: a minute late: still runs", {"catchup": {"policy": "none"}, "date": at(-1),
                                         "repeat": {"minutes": 2}}, [-1], []),
    ("none: max_delay is the bound", {"catchup": {"policy": "none"}, "max_delay": 600},
     [0], list(range(-10, 0))),
    ("all: each one, in turn", {"catchup": {"policy": "all"}}, list(range(-10, 1)), []),
    ("all, at most 3: the latest 3", {"catchup": {"policy": "all", "max": 3}},
     [-2, -1, 0], list(range(-10, -2))),
    ("all within 4 minutes", {"catchup": {"policy": "all", "window": 240}},
     [-4, -3, -2, -1, 0], list(range(-10, -4))),
    ("all: max_delay smaller than the window wins", {"catchup": {"policy": "all",
                                                                 "window": 240},
                                                     "max_delay": 120},
     [-2, -1, 0], list(range(-10, -2))),
]


@pytest.mark.parametrize(("what", "fields", "runs", "missed"), PLANS,
                         ids=[p[0] for p in PLANS])
def test_plan(what, fields, runs, missed):
    plan = plan_of(task(**fields))
    assert plan.runs == tuple(at(m) for m in runs)
    assert plan.missed == tuple(at(m) for m in missed)
    assert plan.as_is == (not missed)
    assert set(plan.why) == set(plan.missed)


def test_a_task_not_due_yet_has_no_catch_up():
    assert plan_of(task(date=at(1))) is None


def test_why_an_occurrence_was_missed_says_which_bound_or_policy():
    plan = plan_of(task(catchup={"policy": "all", "max": 3, "window": 420}))
    assert plan.why[at(-10)] == ("missed: would have started 600.0s late (catch-up window "
                                 "420s)")
    assert plan.why[at(-5)] == ("missed: 300.0s late, and catch-up all runs the latest 3 "
                                "occurrences due")
    latest = plan_of(task(max_delay=300))
    assert latest.why[at(-10)] == "missed: would have started 600.0s late (max_delay 300s)"
    assert latest.why[at(-1)] == ("missed: 60.0s late, and catch-up latest runs the latest "
                                  "occurrence due instead")
    none = plan_of(task(catchup={"policy": "none"}, date=at(-9.5), repeat={"minutes": 2}))
    assert none.why[at(-9.5)] == ("missed: would have started 570.0s late (catch-up none: "
                                  "at most 60s late)")


def test_the_records_of_a_long_downtime_are_bounded_to_the_latest():
    plan = plan_of(task(date=NOW - timedelta(days=3), repeat={"seconds": 1}))
    assert plan.runs == (NOW,) and plan.more
    assert len(plan.missed) == cu.MAX_MISSED
    assert plan.missed[-1] == NOW - timedelta(seconds=1)


def test_a_jitter_keeps_an_occurrence_not_yet_due_out_of_the_backlog():
    doc = task(repeat={"minutes": 1, "jitter": 50})
    plan = plan_of(doc)
    due = [rules.occ.jittered("t", a, 50) for a in (*plan.missed, *plan.runs)]
    assert all(when <= NOW for when in due)
    assert len(plan.runs) == 1 and plan.runs[0] >= at(-1)


@pytest.mark.parametrize(("catchup", "max_delay", "expected"), [
    (None, None, None),
    (None, 30, (30, "max_delay 30s")),
    ({"policy": "none"}, None, (60, "catch-up none: at most 60s late")),
    ({"policy": "none"}, 600, (600, "max_delay 600s")),
    ({"policy": "all", "window": 90}, 600, (90, "catch-up window 90s")),
    ({"policy": "latest", "window": 900}, 600, (600, "max_delay 600s")),
])
def test_the_bound_is_the_smaller_of_max_delay_and_the_window(catchup, max_delay, expected):
    parsed = cu.parse_catchup(catchup, rules.MAX_SECONDS)
    assert cu.bound(parsed, max_delay) == expected
    doc = task(**({"catchup": catchup} if catchup else {}),
               **({"max_delay": max_delay} if max_delay else {}))
    assert rules.late_bound(rules.parse(doc)) == expected


def test_describe():
    parse = lambda value: cu.parse_catchup(value, rules.MAX_SECONDS)  # noqa: E731
    assert cu.describe(None) == ""
    assert cu.describe(parse({})) == "latest: one run of the latest missed occurrence"
    assert cu.describe(parse({"policy": "none"})) == "none: no missed occurrence runs"
    assert cu.describe(parse({"policy": "all", "window": 3600, "max": 24})) == (
        "all: each missed occurrence in turn, 24 at most, within 3600s")


# -- the worker's decisions ------------------------------------------------------------------

def test_an_overdue_task_is_caught_up_before_it_is_held():
    actions = d.decide(task(), VIEW, NOW)
    assert [type(a) for a in actions] == [Drop, Note, Write]
    assert actions[1].message == ("task t: 10 occurrence(s) missed while no worker ran it, "
                                  "recorded (catch-up latest); it runs "
                                  "2026-12-01T09:00:00.000Z now")
    write = actions[2]
    assert write.kind is Kind.CATCHUP and write.doc["status"] == "waiting"
    assert write.doc["date"] == format_date(NOW)
    info = write.doc["after"]
    assert (info["missed"], info["anchor"]) == (10, format_date(at(-10)))
    assert "runs" not in info  # nothing ran: counted as missed, never toward limit
    records = write.skipped
    assert [rec["occurrence_date"] for rec in records] == [format_date(at(m))
                                                          for m in range(-10, 0)]
    assert {rec["outcome"] for rec in records} == {"missed"}
    assert records[0]["_id"] == f"t#00000001#m{int(at(-10).timestamp() * 1000)}"
    assert records[0]["occurrence"] == rules.occ.key("t", at(-10))
    assert records[0]["lateness_ms"] == 600_000
    # once it lands, the records go out and the latest occurrence is held, due now
    after = d.settle(write, Answer(ok=True), VIEW, NOW)
    assert [type(a) for a in after] == [Over, Hold]
    assert after[0].records == records and after[0].outcome.outcome == "missed"
    assert after[1].spec.date == NOW


def test_a_catch_up_that_conflicts_is_decided_again_on_the_task_as_it_is():
    write = d.decide(task(), VIEW, NOW)[-1]
    moved = {**task(date=at(30)), "_rev": "2-b"}
    after = d.settle(write, Answer(conflict=True, fresh=moved), VIEW, NOW)
    assert [type(a) for a in after] == [Hold]  # no record of the write that did not land


@pytest.mark.parametrize("fields", [
    {"date": at(-0.2)},  # just due: its date runs as it is
    {"status": "scheduled", "after": {"owner": ME.process, "due": format_date(at(-10)),
                                      "retry_at": format_date(at(-10))}},  # a retry
    {"status": "reschedule"},  # the date the user wrote
    {"repeat": False, "date": at(-10)},  # no repeat: max_delay's
])
def test_what_is_not_caught_up(fields):
    doc = task(**fields)
    assert [type(a) for a in d.decide(doc, VIEW, NOW)] == [Hold]


def test_a_series_with_nothing_left_ends_done():
    doc = task(repeat={"minutes": 1, "until": format_date(at(-5))}, max_delay=60)
    actions = d.decide(doc, VIEW, NOW)
    write = actions[-1]
    assert write.doc["status"] == "done" and "anchor" not in write.doc["after"]
    assert len(write.skipped) == 6
    assert actions[1].message.endswith("(catch-up latest); its series is over")
    ahead = d.decide(task(catchup={"policy": "none"}, date=at(-10),
                          repeat={"minutes": 7}), VIEW, NOW)
    assert ahead[1].message.endswith("it goes on at 2026-12-01T09:04:00.000Z")


def test_under_all_a_run_goes_on_to_the_next_occurrence_even_due():
    doc = task(catchup={"policy": "all"})
    spec = rules.parse(doc)
    started = r.begin(doc, spec, spec.due, ME.process, NOW)
    end = r.end(started, spec, rules.Outcome(rules.OK, NOW, NOW + 3 * MINUTE), ME,
                NOW + 3 * MINUTE)
    assert end.doc["date"] == format_date(at(-9))
    assert end.skipped == []  # nothing skipped: the three that fell due meanwhile run too
    assert end.doc["after"]["occurrences"] == 1


def test_under_latest_the_occurrences_a_run_waited_past_are_recorded_missed():
    """A run that waited (for a free job thread, its retries): the occurrences that fell due
    meanwhile are recorded, the ones during the run skipped (overlap), the task on after now."""
    doc = task(date=NOW)
    spec = rules.parse(doc)
    started = r.begin(doc, spec, spec.due, ME.process, at(3.5))
    end = r.end(started, spec, rules.Outcome(rules.OK, at(3.5), at(5.5)), ME, at(5.5))
    assert end.doc["date"] == format_date(at(6))
    assert [(rec["outcome"], rec.get("occurrence_date") or rec["scheduled"])
            for rec in end.skipped] == [
        ("skipped", format_date(at(4))), ("skipped", format_date(at(5))),
        ("missed", format_date(at(1))), ("missed", format_date(at(2))),
        ("missed", format_date(at(3)))]
    assert end.doc["after"]["missed"] == 3 and end.doc["after"]["skipped"] == 2
    assert "waited to start (catch-up latest" in end.skipped[-1]["error"]["message"]


def test_a_retried_run_records_nothing_yet():
    doc = task(date=NOW, retry={"limit": 1, "delay": 60})
    spec = rules.parse(doc)
    started = r.begin(doc, spec, spec.due, ME.process, at(3.5))
    end = r.end(started, spec, rules.Outcome(rules.FAILED, at(3.5), at(3.6), error="x"), ME,
                at(3.6))
    assert end.doc["status"] == "scheduled" and end.skipped == []


def test_an_excluded_day_under_all_is_skipped_in_turn():
    """The catch-up goes on past an excluded occurrence rather than leaping to after now."""
    doc = task(date=datetime(2026, 11, 28, 9, tzinfo=UTC), repeat={
        "days": 1, "exclude": ["2026-11-28", "2026-11-29"]}, catchup={"policy": "all"})
    spec = rules.parse(doc)
    assert skipping.leap(doc, spec, NOW, {}) is None
    write = r.skip(doc, spec, "excluded", ME, NOW, calendars={})
    assert write.doc["date"] == "2026-11-29T09:00:00.000Z"
    latest = {**doc, "catchup": {"policy": "latest"}}
    assert skipping.leap(latest, rules.parse(latest), datetime(2026, 11, 28, 9, 0, 1,
                                                               tzinfo=UTC), {}) is not None


# -- downtimes replayed: every occurrence accounted for once ---------------------------------

def replay(doc: dict, now: datetime, duration: timedelta, steps: int = 400):
    """The worker's pure decisions on ``doc`` from ``now``, as its loop would carry them out:
    writes land, a held task fires at its instant (recorded missed past its bound, else run
    for ``duration``). Until the task is held for an instant still ahead: caught up (the
    last value returned), or ``steps`` writes."""
    runs, records = [], []
    actions = d.decide(doc, VIEW, now)
    for _ in range(steps):
        records += [rec for a in actions if isinstance(a, Over) for rec in a.records]
        writes = [a for a in actions if isinstance(a, Write)]
        holds = [a for a in actions if isinstance(a, Hold)]
        if writes:
            doc = writes[0].doc
            actions = d.settle(writes[0], Answer(ok=True), VIEW, now)
            continue
        if not holds:
            return doc, runs, records, True
        hold = holds[0]
        due = from_ms(hold.due_ms)
        if due > now:
            return doc, runs, records, True
        if rules.missed(hold.spec, due, now):
            write = r.missed(hold.doc, hold.spec, due, ME, now)
        else:
            started = r.begin(hold.doc, hold.spec, due, ME.process, now)
            runs.append((hold.spec.date, now))
            now += duration
            write = r.end(started, hold.spec, rules.Outcome(rules.OK, now - duration, now),
                          ME, now)
        doc = write.doc
        actions = d.settle(write, Answer(ok=True), VIEW, now)
    records += [rec for a in actions if isinstance(a, Over) for rec in a.records]
    return doc, runs, records, False


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(["latest", "none", "all"]), st.integers(1, 90), st.integers(0, 80),
       st.integers(0, 59), st.sampled_from([None, 1, 3, 200]),
       st.sampled_from([None, 30, 400]), st.sampled_from([None, 45, 500]),
       st.sampled_from([0, 5, 130]))
def test_after_any_downtime_each_occurrence_is_run_or_recorded_once(
        policy, minutes, periods, seconds, most, window, max_delay, duration):
    """A task every ``minutes`` whose worker came back ``periods`` periods and ``seconds``
    seconds after its date, runs of ``duration`` seconds: up to the date it is caught up at,
    every occurrence ran once or is recorded once (missed, or skipped while a run went),
    in date order; nothing ran later than its bound; ``latest`` ran once. (Under ``all``, a
    job slower than its schedule never catches up: it runs on, at most ``max`` behind.)"""
    interval = timedelta(minutes=minutes)
    catchup = {"policy": policy}
    if policy == "all" and most is not None:
        catchup["max"] = most
    if policy != "none" and window is not None:
        catchup["window"] = window
    fields = {"catchup": catchup, "repeat": {"minutes": minutes}}
    if max_delay is not None:
        fields["max_delay"] = max_delay
    first = NOW - periods * interval - timedelta(seconds=seconds)
    doc, runs, records, caught = replay(task(date=first, **fields), NOW,
                                        timedelta(seconds=duration))
    assert caught or policy == "all" and duration >= minutes * 60
    end = parse_date(doc["date"])
    expected = []
    at_ = first
    while at_ < end:
        expected.append(at_)
        at_ += interval
    ran = [date for date, _ in runs]
    noted = [parse_date(rec.get("occurrence_date") or rec["scheduled"]) for rec in records
             if rec["outcome"] in ("missed", "skipped")]
    assert sorted(ran + noted) == expected
    assert ran == sorted(ran)
    spec = rules.parse(task(date=first, **fields))
    bound = rules.late_bound(spec)
    for date, started in runs:
        assert bound is None or (started - date).total_seconds() <= bound[0]
    if policy == "latest" and runs:
        assert len([1 for date, started in runs if started - date >= interval]) <= 1
    if policy == "all" and not bound and not duration:
        assert len(runs) == min(len(expected), most or cu.DEFAULT_MAX)
