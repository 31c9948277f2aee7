"""after.rules.task: validation of the task document and the pure rules of its state machine.

No server, no clock: every ``now`` is a fixed aware UTC datetime passed in.
"""

import copy
from datetime import UTC, datetime, timedelta

import pytest

from after.rules import task
from after.rules.repeat import CronRule, IntervalRule
from after.rules.task import (
    INTERRUPTED_RERUNS,
    NS,
    Outcome,
    Retry,
    Spec,
    TaskError,
    parse,
    parse_retry,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


DATE = utc(2026, 12, 1, 9)
NOW = utc(2026, 12, 1, 9, 0, 0, 250000)
OWNER = "billing@host:42:abcd"


def make(**fields) -> dict:
    """A good task document; ``fields`` override or (with value ``...``) remove keys."""
    doc = {
        "_id": "weekly-billing",
        "_rev": "3-abc",
        "worker": "billing",
        "date": "2026-12-01T09:00:00Z",
        "job": {"name": "generate_billing", "arguments": ["1234", "x"]},
        "status": "waiting",
        "owner_note": "user field",
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not ...}


def error_of(doc: dict) -> str:
    with pytest.raises(TaskError) as info:
        parse(doc)
    return str(info.value)


def ok(started: datetime, ended: datetime, result=None) -> Outcome:
    return Outcome(task.OK, started, ended, result=result)


def failed(started: datetime, ended: datetime, error: str = "boom") -> Outcome:
    return Outcome(task.FAILED, started, ended, error=error)


def running(doc: dict, now: datetime, number: int = 1) -> dict:
    """``doc`` claimed and started at ``now`` by OWNER."""
    spec = parse(doc)
    return task.start(task.claim(doc, OWNER, spec.date, now), OWNER, now, number)


def run_once(doc: dict, now: datetime, outcome: Outcome | None = None, rand=0.5) -> dict:
    """Claim, start and finish ``doc`` at ``now``, one second later on success by default."""
    live = running(doc, now)
    outcome = outcome or ok(now, now + timedelta(seconds=1), result={"n": 1})
    return task.finish(live, parse(doc), outcome, now + timedelta(seconds=1), rand=rand)


# --- parse: a good document -----------------------------------------------------------------


def test_parse_good_document_fields():
    doc = make(
        repeat={"days": 7, "limit": 4},
        retry={"limit": 3, "delay": 30, "backoff": "exponential"},
        timeout=300,
        max_delay=600.5,
    )
    spec = parse(doc)
    assert spec == Spec(
        id="weekly-billing",
        worker="billing",
        date=DATE,
        job="generate_billing",
        arguments=["1234", "x"],
        repeat=IntervalRule(days=7, limit=4),
        retry=Retry(limit=3, delay=30.0, backoff="exponential", jitter=0.1),
        timeout=300.0,
        max_delay=600.5,
    )
    assert spec.date.tzinfo is UTC


def test_parse_minimal_document_defaults():
    doc = make(job={"name": "hello"}, date="2026-12-01")
    spec = parse(doc)
    assert (spec.date, spec.arguments, spec.repeat) == (DATE.replace(hour=0), None, None)
    assert spec.retry == Retry(limit=0, delay=0.0, backoff="fixed", jitter=0.1)
    assert (spec.timeout, spec.max_delay) == (None, None)


def test_parse_keyword_arguments_and_offset_date_and_cron():
    doc = make(
        date="2026-12-01T10:00:00+01:00",
        job={"name": "hello", "arguments": {"who": "world"}},
        repeat={"cron": "0 9 * * 1-5", "tz": "Europe/Paris"},
    )
    spec = parse(doc)
    assert spec.date == DATE
    assert spec.arguments == {"who": "world"}
    assert spec.repeat == CronRule(expr="0 9 * * 1-5", tz="Europe/Paris")


@pytest.mark.parametrize("status", task.STATUSES)
def test_parse_accepts_every_status(status):
    assert parse(make(status=status)).job == "generate_billing"


# --- parse: bad input, exact messages -------------------------------------------------------

WORKER_REQUIRED = "worker: required (the name of the worker that runs the task)"
STATUS_LIST = "waiting, scheduled, running, reschedule, cancel, done, error, canceled, paused"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"worker": ...}, WORKER_REQUIRED),
        ({"worker": ""}, WORKER_REQUIRED),
        ({"worker": 7}, WORKER_REQUIRED),
        ({"worker": None}, WORKER_REQUIRED),
        ({"date": ...}, "date: required (ISO 8601, e.g. 2026-12-01T09:00:00Z)"),
        ({"date": "tomorrow"}, "date: 'tomorrow' is not an ISO 8601 date or date-time"),
        (
            {"date": "2026-02-30"},
            "date: '2026-02-30' is not an ISO 8601 date or date-time "
            "(day is out of range for month)",
        ),
        ({"date": 5}, "date: expected an ISO 8601 date or date-time string, got int 5"),
        ({"date": None}, "date: expected an ISO 8601 date or date-time string, got NoneType None"),
        ({"job": ...}, 'job: required ({"name": ..., "arguments": [...]})'),
        ({"job": "generate_billing"}, 'job: required ({"name": ..., "arguments": [...]})'),
        ({"job": ["generate_billing"]}, 'job: required ({"name": ..., "arguments": [...]})'),
        ({"job": {"arguments": []}}, "job.name: required"),
        ({"job": {"name": ""}}, "job.name: required"),
        ({"job": {"name": 3}}, "job.name: required"),
        ({"job": {"name": "x", "arguments": "a b"}}, "job.arguments: must be a list or an object"),
        ({"job": {"name": "x", "arguments": 1}}, "job.arguments: must be a list or an object"),
        ({"status": "pausing"}, f"status: 'pausing' is not one of {STATUS_LIST}"),
        ({"status": ...}, f"status: None is not one of {STATUS_LIST}"),
        ({"status": "Waiting"}, f"status: 'Waiting' is not one of {STATUS_LIST}"),
        (
            {"repeat": {"days": 0}},
            "repeat: the interval is zero; at least one unit must be above 0",
        ),
        (
            {"repeat": {"cron": "0 9 * * *", "tz": "Mars/Olympus"}},
            "repeat: unknown time zone 'Mars/Olympus' (use an IANA name like Europe/Paris or UTC)",
        ),
        ({"retry": -1}, "retry: must be 0 or more attempts, not -1"),
        ({"retry": True}, "retry: must be a number of attempts or an object, not True"),
        ({"retry": "3"}, "retry: must be a number of attempts or an object, not '3'"),
        ({"retry": {"tries": 3}}, "retry: unknown field 'tries' (use limit, delay, backoff)"),
        (
            {"retry": {"backoff": "linear"}},
            "retry.backoff: must be 'fixed' or 'exponential', not 'linear'",
        ),
        ({"retry": {"delay": -5}}, "retry.delay: must be 0 or more seconds, not -5"),
        ({"retry": {"delay": "30"}}, "retry.delay: must be 0 or more seconds, not '30'"),
        ({"retry": {"limit": -1}}, "retry.limit: must be 0 or more attempts, not -1"),
        ({"retry": {"limit": False}}, "retry.limit: must be 0 or more attempts, not False"),
        ({"retry": {"jitter": 2}}, "retry.jitter: must be a fraction from 0 to 1, not 2"),
        ({"timeout": 0}, "timeout: must be a positive number of seconds, not 0"),
        ({"timeout": -1.5}, "timeout: must be a positive number of seconds, not -1.5"),
        ({"timeout": "300"}, "timeout: must be a positive number of seconds, not '300'"),
        ({"timeout": True}, "timeout: must be a positive number of seconds, not True"),
        ({"max_delay": 0}, "max_delay: must be a positive number of seconds, not 0"),
        ({"max_delay": [60]}, "max_delay: must be a positive number of seconds, not [60]"),
    ],
)
def test_parse_bad_input_exact_message(fields, message):
    assert error_of(make(**fields)) == message


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"repeat": {"fortnights": 1}}, "repeat:", "unknown unit 'fortnights'"),
        ({"repeat": {"d": 1, "days": 1}}, "repeat:", "same unit"),
        ({"repeat": {"cron": "61 * * * *"}}, "repeat:", "invalid cron expression '61 * * * *'"),
        ({"repeat": {"cron": "0 9 * *"}}, "repeat:", "must have 5 fields"),
        ({"repeat": "P0D"}, "repeat:", "the interval is zero"),
        ({"repeat": "every day"}, "repeat:", "is not an ISO 8601 duration"),
        ({"repeat": 7}, "repeat:", "expected an object of units"),
        ({"repeat": {"days": 1, "until": "soon"}}, "repeat.until:", "'soon' is not an ISO 8601"),
        ({"repeat": {"days": 1, "limit": 0}}, "repeat:", "limit must be a positive integer"),
    ],
)
def test_parse_bad_repeat_names_the_field(fields, field, says):
    message = error_of(make(**fields))
    assert message.startswith(field)
    assert says in message


def test_parse_reports_the_first_bad_field_in_document_order():
    doc = make(worker="", date="tomorrow", job=None, status="nope")
    assert error_of(doc) == WORKER_REQUIRED
    assert error_of(make(date="tomorrow", job=None)).startswith("date: ")
    assert error_of(make(job=None, status="nope")).startswith("job: ")


# --- parse_retry and Retry.delay_for ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Retry(limit=0, delay=0.0, backoff="fixed", jitter=0.1)),
        (0, Retry(limit=0)),
        (3, Retry(limit=3, delay=0.0)),
        ({}, Retry(limit=1)),
        ({"delay": 30}, Retry(limit=1, delay=30.0)),
        ({"limit": 5, "delay": 1.5, "backoff": "exponential", "jitter": 0},
         Retry(limit=5, delay=1.5, backoff="exponential", jitter=0.0)),
        ({"limit": 0, "jitter": 1}, Retry(limit=0, jitter=1.0)),
    ],
)
def test_parse_retry_forms(value, expected):
    assert parse_retry(value) == expected


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 10.0), (2, 10.0), (5, 10.0)],
)
def test_fixed_delay_does_not_grow(attempt, expected):
    assert Retry(limit=9, delay=10, jitter=0).delay_for(attempt) == expected


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 10.0), (2, 20.0), (3, 40.0), (6, 320.0)],
)
def test_exponential_delay_doubles_per_attempt(attempt, expected):
    retry = Retry(limit=9, delay=10, backoff="exponential", jitter=0)
    assert retry.delay_for(attempt) == expected


@pytest.mark.parametrize(
    ("rand", "expected"),
    [(0.0, 90.0), (0.5, 100.0), (0.999, 109.98)],
)
def test_jitter_spreads_both_ways_within_bounds(rand, expected):
    fixed = Retry(limit=3, delay=100, jitter=0.1)
    assert fixed.delay_for(1, rand) == pytest.approx(expected)
    exponential = Retry(limit=3, delay=25, backoff="exponential", jitter=0.1)
    assert exponential.delay_for(3, rand) == pytest.approx(expected)
    assert 90.0 <= fixed.delay_for(1, rand) < 110.0


def test_full_jitter_never_goes_negative_and_zero_delay_stays_zero():
    assert Retry(delay=10, jitter=1).delay_for(1, 0.0) == 0.0
    assert Retry(delay=10, jitter=1).delay_for(1, 0.75) == pytest.approx(15.0)
    assert Retry(delay=0, jitter=0.5).delay_for(4, 0.999) == 0.0


# --- transitions --------------------------------------------------------------------------


def test_claim_holds_the_task_and_leaves_user_fields_alone():
    doc = make(**{NS: {"runs": 2, "error": "old problem"}})
    before = copy.deepcopy(doc)
    due = DATE + timedelta(seconds=5)
    new = task.claim(doc, OWNER, due, NOW)
    assert new["status"] == "scheduled"
    assert new[NS] == {
        "runs": 2,
        "owner": OWNER,
        "due": "2026-12-01T09:00:05.000Z",
        "claimed": "2026-12-01T09:00:00.250Z",
        "next_run": "2026-12-01T09:00:05.000Z",
        "date": doc["date"],  # the date the claim is for: a new one written later is seen
    }
    assert {k: v for k, v in new.items() if k not in ("status", NS)} == {
        k: v for k, v in before.items() if k not in ("status", NS)
    }
    assert doc == before


@pytest.mark.parametrize(
    "transition",
    [
        lambda d: task.claim(d, OWNER, DATE, NOW),
        lambda d: task.hand_back(d),
        lambda d: task.start(d, OWNER, NOW, 1),
        lambda d: task.mark_error(d, "worker: required", NOW),
        lambda d: task.cancel(d, NOW),
        lambda d: task.finish(d, parse(make()), ok(NOW, NOW), NOW),
    ],
    ids=["claim", "hand_back", "start", "mark_error", "cancel", "finish"],
)
@pytest.mark.parametrize("namespace", [..., {"owner": OWNER, "attempt": 1}, "not an object"])
def test_transitions_do_not_mutate_their_input(transition, namespace):
    doc = make(**{NS: namespace})
    before = copy.deepcopy(doc)
    new = transition(doc)
    assert doc == before
    assert isinstance(new[NS], dict)
    assert new is not doc


def test_hand_back_returns_to_the_pool():
    held = task.claim(make(**{NS: {"runs": 1}}), OWNER, DATE, NOW)
    new = task.hand_back(held)
    assert new["status"] == "waiting"
    assert new[NS] == {"runs": 1, "next_run": "2026-12-01T09:00:00.000Z"}
    assert new["date"] == "2026-12-01T09:00:00Z"


def test_start_counts_the_attempt_and_records_the_run_number():
    held = task.claim(make(), OWNER, DATE, NOW)
    first = task.start(held, OWNER, NOW, 7)
    assert first["status"] == "running"
    assert first[NS]["attempt"] == 1
    assert first[NS]["run"] == 7
    assert first[NS]["owner"] == OWNER
    assert first[NS]["started"] == "2026-12-01T09:00:00.250Z"
    again = task.start(first | {"status": "scheduled"}, "other@h:1:t", NOW + timedelta(1), 8)
    assert (again[NS]["attempt"], again[NS]["run"], again[NS]["owner"]) == (2, 8, "other@h:1:t")
    assert again[NS]["started"] == "2026-12-02T09:00:00.250Z"


def test_mark_error_records_the_reason_and_releases_the_task():
    held = task.claim(make(**{NS: {"runs": 3}}), OWNER, DATE, NOW)
    new = task.mark_error(held, "job.name: required", NOW)
    assert new["status"] == "error"
    assert new[NS] == {
        "runs": 3,
        "error": "job.name: required",
        "updated": "2026-12-01T09:00:00.250Z",
    }


def test_cancel_drops_holder_and_next_run():
    doc = make(status="cancel", **{NS: {
        "owner": OWNER, "claimed": "x", "due": "y", "next_run": "z", "runs": 4,
    }})
    new = task.cancel(doc, NOW)
    assert new["status"] == "canceled"
    assert new[NS] == {"runs": 4, "canceled": "2026-12-01T09:00:00.250Z"}


def test_missed_without_max_delay_is_never_missed():
    spec = parse(make())
    assert task.missed(spec, DATE, DATE + timedelta(days=365)) is False


def test_missed_with_max_delay_at_the_boundary():
    spec = parse(make(max_delay=600))
    limit = DATE + timedelta(seconds=600)
    assert task.missed(spec, DATE, DATE) is False
    assert task.missed(spec, DATE, limit) is False
    assert task.missed(spec, DATE, limit + timedelta(microseconds=1)) is True
    assert task.missed(spec, DATE + timedelta(hours=1), limit + timedelta(seconds=1)) is False


def test_outcome_duration_and_ok():
    outcome = Outcome(task.OK, NOW, NOW + timedelta(seconds=1, microseconds=234567))
    assert outcome.ok is True
    assert outcome.duration_ms == 1234.567
    assert Outcome(task.TIMEOUT, NOW, NOW).ok is False


# --- finish: one-off tasks ----------------------------------------------------------------


def test_finish_success_of_a_one_off_is_done_with_counters_and_last_run():
    live = running(make(**{NS: {"runs": 2, "successes": 1, "failures": 1}}), NOW, number=3)
    ended = NOW + timedelta(seconds=2, milliseconds=500)
    new = task.finish(live, parse(live), ok(NOW, ended, {"rows": 12}), ended)
    assert new["status"] == "done"
    assert new[NS] == {
        "runs": 3,
        "successes": 2,
        "failures": 1,
        "attempt": 0,
        "last_run": {
            "number": 3,
            "attempt": 1,
            "outcome": "done",
            "started": "2026-12-01T09:00:00.250Z",
            "ended": "2026-12-01T09:00:02.750Z",
            "duration_ms": 2500.0,
            "result": {"rows": 12},
        },
    }
    for gone in ("owner", "claimed", "due", "started", "run", "next_run", "error", "retry_at"):
        assert gone not in new[NS]
    assert new["date"] == "2026-12-01T09:00:00Z"
    assert new["owner_note"] == "user field"


def test_finish_failure_with_retry_left_stays_scheduled_after_the_delay():
    doc = make(retry={"limit": 2, "delay": 60, "backoff": "exponential"})
    live = running(doc, NOW)
    ended = NOW + timedelta(seconds=1)
    new = task.finish(live, parse(doc), failed(NOW, ended, "HTTP 503"), ended, rand=0.0)
    assert new["status"] == "scheduled"
    info = new[NS]
    assert info["due"] == "2026-12-01T09:00:55.250Z"  # ended + 60 * 0.9
    assert info["next_run"] == info["due"] == info["retry_at"]
    assert info["attempt"] == 1
    assert info["owner"] == OWNER
    assert (info["runs"], info["failures"], "successes" in info) == (1, 1, False)
    assert info["last_run"]["error"] == "HTTP 503"
    assert info["last_run"]["outcome"] == "error"
    assert "result" not in info["last_run"]
    assert new["date"] == "2026-12-01T09:00:00Z"

    # second attempt fails too: the exponential delay doubles (jitter at rand=0.999)
    again = task.start(new, OWNER, ended, 2)
    later = ended + timedelta(seconds=1)
    second = task.finish(again, parse(doc), failed(ended, later), later, rand=0.999)
    assert second["status"] == "scheduled"
    assert second[NS]["attempt"] == 2
    assert second[NS]["due"] == "2026-12-01T09:02:14.226Z"  # later + 120 * 1.0998
    assert second[NS]["last_run"]["number"] == 2


def test_finish_failure_on_the_last_attempt_is_error_with_the_message():
    doc = make(retry=1)
    first = task.finish(running(doc, NOW), parse(doc), failed(NOW, NOW, "first"), NOW, rand=0.5)
    assert first["status"] == "scheduled"
    assert first[NS]["due"] == "2026-12-01T09:00:00.250Z"  # retry=1 means no delay
    second = task.start(first, OWNER, NOW, 2)
    last = task.finish(second, parse(doc), failed(NOW, NOW, "ValueError: bad row"), NOW)
    assert last["status"] == "error"
    info = last[NS]
    assert info["error"] == "ValueError: bad row"
    assert (info["attempt"], info["runs"], info["failures"]) == (0, 2, 2)
    assert info["last_run"]["attempt"] == 2
    for gone in ("owner", "due", "retry_at", "next_run"):
        assert gone not in info


def test_finish_timeout_without_retry_is_error_named_after_the_outcome():
    doc = make(timeout=5)
    outcome = Outcome(task.TIMEOUT, NOW, NOW + timedelta(seconds=5))
    new = task.finish(running(doc, NOW), parse(doc), outcome, NOW + timedelta(seconds=5))
    assert new["status"] == "error"
    assert new[NS]["error"] == "timeout"
    assert new[NS]["failures"] == 1
    assert new[NS]["last_run"]["outcome"] == "timeout"


def test_finish_missed_one_off_counts_missed_not_runs_and_ends_error():
    doc = make(max_delay=60, **{NS: {"runs": 1, "successes": 1}})
    held = task.claim(doc, OWNER, DATE, NOW)
    late = DATE + timedelta(hours=1)
    outcome = Outcome(task.MISSED, late, late, error="missed: 3600.0s late")
    new = task.finish(held, parse(doc), outcome, late)
    assert new["status"] == "error"
    info = new[NS]
    assert (info["runs"], info["successes"], info["missed"]) == (1, 1, 1)
    assert "failures" not in info
    assert info["error"] == "missed: 3600.0s late"
    assert info["last_run"]["outcome"] == "missed"
    assert info["last_run"]["number"] == 1
    assert info["last_run"]["attempt"] == 1


# --- finish: repeating tasks --------------------------------------------------------------


def test_finish_repeating_success_goes_back_to_waiting_with_the_next_date():
    doc = make(repeat={"days": 1})
    new = run_once(doc, NOW)
    assert new["status"] == "waiting"
    assert new["date"] == "2026-12-02T09:00:00.000Z"
    info = new[NS]
    assert info["next_run"] == "2026-12-02T09:00:00.000Z"
    assert info["anchor"] == "2026-12-01T09:00:00.000Z"
    assert (info["occurrences"], info["runs"], info["successes"], info["attempt"]) == (1, 1, 1, 0)
    assert "owner" not in info and "due" not in info
    assert info["last_run"]["result"] == {"n": 1}


def test_month_end_anchor_is_kept_jan31_feb28_mar31():
    doc = make(date="2026-01-31T10:00:00Z", repeat={"months": 1})
    feb = run_once(doc, utc(2026, 1, 31, 10))
    assert feb["date"] == "2026-02-28T10:00:00.000Z"
    assert feb[NS]["anchor"] == "2026-01-31T10:00:00.000Z"

    mar = run_once(feb, utc(2026, 2, 28, 10))
    assert mar["date"] == "2026-03-31T10:00:00.000Z"
    assert mar[NS]["anchor"] == "2026-01-31T10:00:00.000Z"
    assert mar[NS]["occurrences"] == 2

    # without the stored anchor the series would drift to the 28th
    drifted = copy.deepcopy(feb)
    del drifted[NS]["anchor"]
    assert run_once(drifted, utc(2026, 2, 28, 10))["date"] == "2026-03-28T10:00:00.000Z"


def test_repeating_task_with_limit_reached_is_done():
    doc = make(repeat={"hours": 1, "limit": 2})
    first = run_once(doc, NOW)
    assert first["status"] == "waiting"
    assert first["date"] == "2026-12-01T10:00:00.000Z"
    second = run_once(first, utc(2026, 12, 1, 10))
    assert second["status"] == "done"
    assert second["date"] == "2026-12-01T10:00:00.000Z"
    assert second[NS]["runs"] == 2
    for gone in ("next_run", "anchor", "occurrences"):
        assert gone not in second[NS]


def test_repeating_task_past_until_is_done():
    doc = make(repeat={"days": 1, "until": "2026-12-02T08:59:59Z"})
    new = run_once(doc, NOW)
    assert new["status"] == "done"
    assert new["date"] == "2026-12-01T09:00:00Z"


def test_downtime_runs_once_then_next_date_after_now():
    doc = make(date="2026-01-01T09:00:00Z", repeat={"days": 1})
    now = utc(2026, 3, 15, 17, 30)
    new = run_once(doc, now)
    assert new["status"] == "waiting"
    assert new["date"] == "2026-03-16T09:00:00.000Z"
    assert new[NS]["occurrences"] == 1
    assert new[NS]["runs"] == 1


def test_repeating_failure_on_last_attempt_goes_on_to_the_next_date():
    doc = make(repeat={"days": 1}, **{NS: {"error": "earlier"}})
    new = run_once(doc, NOW, failed(NOW, NOW, "boom"))
    assert new["status"] == "waiting"
    assert new["date"] == "2026-12-02T09:00:00.000Z"
    assert "error" not in new[NS]
    assert new[NS]["last_run"]["error"] == "boom"
    assert new[NS]["failures"] == 1


def test_missed_occurrence_of_a_repeating_task_goes_on():
    """To the occurrence right after it, even one already due: its catch-up decides on
    those (issue 25: the latest one may still be within max_delay)."""
    doc = make(repeat={"days": 1}, max_delay=60, **{NS: {"runs": 5, "successes": 5}})
    late = utc(2026, 12, 3, 12)
    held = task.claim(doc, OWNER, DATE, late)
    new = task.finish(held, parse(doc), Outcome(task.MISSED, late, late, error="late"), late)
    assert new["status"] == "waiting"
    assert new["date"] == "2026-12-02T09:00:00.000Z"
    info = new[NS]
    assert (info["runs"], info["successes"], info["missed"]) == (5, 5, 1)
    assert "failures" not in info and "error" not in info
    assert info["last_run"]["outcome"] == "missed"


# --- finish: interrupted runs -------------------------------------------------------------


def test_interrupted_run_is_rerun_now_even_with_retry_zero():
    doc = make(retry={"limit": 0, "delay": 600})
    live = running(doc, NOW)
    later = NOW + timedelta(minutes=5)
    outcome = Outcome(task.INTERRUPTED, NOW, later, error="interrupted: worker gone")
    new = task.finish(live, parse(doc), outcome, later, rand=0.999)
    assert new["status"] == "scheduled"
    assert new[NS]["due"] == "2026-12-01T09:05:00.250Z"  # no delay
    assert new[NS]["attempt"] == 1
    assert new[NS]["failures"] == 1


def test_an_interrupted_run_marks_the_task_isolated_from_then_on():
    doc = make()  # isolation "thread" (the default)
    spec = parse(doc)
    assert spec.isolation == "thread" and not task.isolated(doc, spec)
    live = task.start(task.claim(doc, OWNER, DATE, NOW), OWNER, NOW, 1)
    later = NOW + timedelta(seconds=10)
    current = task.finish(live, spec, Outcome(task.INTERRUPTED, NOW, later), later)
    assert current["status"] == "scheduled"  # run again, now
    assert current[NS]["isolated"] == "2026-12-01T09:00:10.250Z"
    assert task.isolated(current, spec)  # the re-run goes to a child process


def test_a_rerun_whose_child_dies_is_a_failure_and_retry_applies():
    """Issue 13.4: the job that ended its process kills its isolated re-run's child, not a
    second process; that is a failure like any other (retry applies, in child processes; the
    interrupted run was an attempt: with 2 retries, attempt 2 dies, attempt 3 is the last)."""
    doc = make(retry={"limit": 2, "delay": 30})
    spec = parse(doc)
    current = task.start(task.claim(doc, OWNER, DATE, NOW), OWNER, NOW, 1)
    current = task.finish(current, spec, Outcome(task.INTERRUPTED, NOW, NOW), NOW)
    died = Outcome(task.FAILED, NOW, NOW, error=task.ended_its_process(1))
    current = task.finish(task.start(current, OWNER, NOW, 2), spec, died, NOW, rand=0.5)
    assert current["status"] == "scheduled"
    assert current[NS]["due"] == "2026-12-01T09:00:30.250Z"  # its retry delay
    assert task.isolated(current, spec)  # the retry is isolated too
    current = task.finish(task.start(current, OWNER, NOW, 3), spec, died, NOW, rand=0.5)
    assert current["status"] == "error"
    assert current[NS]["error"] == "the job ended its process (exit code 1)"
    assert task.isolated(current, spec)  # and so is any later run of it


def test_a_repeating_task_stays_isolated_over_its_next_occurrences():
    doc = make(repeat={"days": 1})
    spec = parse(doc)
    current = task.start(task.claim(doc, OWNER, DATE, NOW), OWNER, NOW, 1)
    current = task.finish(current, spec, Outcome(task.INTERRUPTED, NOW, NOW), NOW)
    current = task.finish(task.start(current, OWNER, NOW, 2), spec, ok(NOW, NOW), NOW)
    assert current["status"] == "waiting" and current["date"] == "2026-12-02T09:00:00.000Z"
    assert task.isolated(current, spec) and "interrupted" not in current[NS]


def test_a_new_job_takes_the_isolated_mark_off_and_a_new_date_does_not():
    marked = {**make(), NS: {"isolated": "2026-12-01T09:00:00Z"}}
    moved = task.redefine(marked, make(date="2026-12-05T09:00:00Z"), date_given=True)
    assert moved[NS]["isolated"] == "2026-12-01T09:00:00Z"
    other = task.redefine(marked, make(job={"name": "fixed", "arguments": []}),
                          date_given=False)
    assert "isolated" not in other[NS]
    assert not task.isolated(other, parse(other))


def test_isolation_process_is_isolated_without_any_mark():
    doc = make(isolation="process")
    assert parse(doc).isolation == "process" and task.isolated(doc, parse(doc))


@pytest.mark.parametrize("value", ["fork", "", "THREAD", 1, 0, True, [], {}, ["process"]])
def test_isolation_must_be_thread_or_process(value):
    assert error_of(make(isolation=value)) == (
        f"isolation: must be 'thread' or 'process', not {value!r}")


def test_isolation_defaults_to_thread():
    assert parse(make()).isolation == parse(make(isolation=None)).isolation == "thread"


@pytest.mark.parametrize(("code", "message"), [
    (1, "the job ended its process (exit code 1)"),
    (0, "the job ended its process (exit code 0)"),
    (-9, "the job ended its process (killed by signal 9, SIGKILL)"),
    (-11, "the job ended its process (killed by signal 11, SIGSEGV)"),
    (-200, "the job ended its process (killed by signal 200, an unknown signal)"),
    (None, "the job ended its process (it ended without an answer)"),
])
def test_how_a_child_that_ended_without_an_answer_is_described(code, message):
    assert task.ended_its_process(code) == message


def test_timeout_errors_say_whether_the_process_was_killed():
    assert task.timeout_error(1.5, False) == "timeout: the run took longer than 1.5s"
    assert task.timeout_error(2, True) == ("timeout: the run took longer than 2s; its process "
                                          "was killed")


def test_an_occurrence_interrupted_too_often_in_a_row_ends_error():
    """A safety net: re-runs are isolated, so each interruption after the first is a process
    killed from outside (or a child that still brought its worker down)."""
    doc = make()
    spec = parse(doc)
    current = task.claim(doc, OWNER, DATE, NOW)
    statuses = []
    for number in range(1, INTERRUPTED_RERUNS + 2):
        current = task.start(current, OWNER, NOW, number)
        outcome = Outcome(task.INTERRUPTED, NOW, NOW, error=f"interrupted #{number}")
        current = task.finish(current, spec, outcome, NOW)
        statuses.append(current["status"])
    assert INTERRUPTED_RERUNS == 2
    assert statuses == ["scheduled", "scheduled", "error"]
    assert current[NS]["error"] == ("interrupted 3 times in a row by the death of the process "
                                    "running it, in a child process of its own since the "
                                    "first: not run again (last: interrupted #3)")
    assert current[NS]["last_run"]["error"] == current[NS]["error"]
    assert "interrupted" not in current[NS] and "owner" not in current[NS]


def test_a_run_that_ends_resets_the_streak_of_interruptions():
    doc = make(retry=2)
    spec = parse(doc)
    current = task.start(task.claim(doc, OWNER, DATE, NOW), OWNER, NOW, 1)
    current = task.finish(current, spec, Outcome(task.INTERRUPTED, NOW, NOW), NOW)
    assert current["status"] == "scheduled" and current[NS]["interrupted"] == 1
    current = task.start(current, OWNER, NOW, 2)
    current = task.finish(current, spec, Outcome(task.FAILED, NOW, NOW, error="x"), NOW,
                          rand=0.5)
    assert current["status"] == "scheduled" and "interrupted" not in current[NS]  # retry
    current = task.start(current, OWNER, NOW, 3)
    current = task.finish(current, spec, Outcome(task.INTERRUPTED, NOW, NOW), NOW)
    assert current["status"] == "scheduled"  # a first interruption again: run again


# --- finish: edits written while it was held or ran -------------------------------------


def test_waiting_written_during_a_run_means_run_it_again_after_this_run():
    doc = make()
    live = running(doc, NOW)
    edited = {**live, "status": "waiting"}
    new = task.finish(edited, parse(doc), Outcome(task.OK, NOW, NOW), NOW)
    assert new["status"] == "waiting" and new["date"] == doc["date"]
    assert "owner" not in new[NS] and new[NS]["runs"] == 1 and new[NS]["attempt"] == 0


def test_a_new_date_written_during_a_run_applies_after_it():
    doc = make(repeat={"days": 1})
    live = running(doc, NOW)
    assert not task.date_moved(live)
    edited = {**live, "date": "2026-12-24T10:00:00Z"}
    assert task.date_moved(edited)
    new = task.finish(edited, parse(doc), Outcome(task.OK, NOW, NOW), NOW)
    assert new["status"] == "waiting" and new["date"] == "2026-12-24T10:00:00Z"
    assert "anchor" not in new[NS] and "date" not in new[NS]
    reclaimed = task.claim(new, OWNER, parse(new).date, NOW)
    assert not task.date_moved(reclaimed)


# --- finish: what the user wrote during the run --------------------------------------------


@pytest.mark.parametrize("outcome", [task.OK, task.FAILED])
def test_cancel_written_during_the_run_ends_canceled(outcome):
    doc = make(repeat={"days": 1}, retry=3)
    live = running(doc, NOW) | {"status": "cancel"}
    result = Outcome(outcome, NOW, NOW + timedelta(seconds=1), result=1, error="e")
    new = task.finish(live, parse(doc), result, NOW + timedelta(seconds=1))
    assert new["status"] == "canceled"
    info = new[NS]
    assert info["canceled"] == "2026-12-01T09:00:01.250Z"
    assert info["runs"] == 1
    assert info["last_run"]["outcome"] == outcome
    for gone in ("owner", "claimed", "due", "next_run", "started", "run"):
        assert gone not in info
    assert new["date"] == "2026-12-01T09:00:00Z"


def test_reschedule_written_during_the_run_keeps_the_users_date():
    doc = make(repeat={"days": 1})
    live = running(doc, NOW) | {"status": "reschedule", "date": "2026-12-24T18:00:00Z"}
    new = task.finish(live, parse(doc), ok(NOW, NOW, "r"), NOW + timedelta(seconds=1))
    assert new["status"] == "reschedule"
    assert new["date"] == "2026-12-24T18:00:00Z"
    info = new[NS]
    assert info["attempt"] == 0
    assert (info["runs"], info["successes"]) == (1, 1)
    assert info["last_run"]["result"] == "r"
    assert "owner" not in info and "claimed" not in info


def test_a_rescheduled_repeating_task_follows_its_new_date():
    doc = make(repeat={"days": 1})
    first = run_once(doc, NOW)
    assert first[NS]["anchor"] == "2026-12-01T09:00:00.000Z"
    moved = first | {"status": "reschedule", "date": "2026-12-05T18:00:00Z"}
    new = run_once(moved, utc(2026, 12, 5, 18))
    assert new["status"] == "waiting"
    assert new["date"] == "2026-12-06T18:00:00.000Z"
    assert new[NS]["anchor"] == "2026-12-05T18:00:00.000Z"


def test_a_rescheduled_repeating_task_parked_or_rescheduled_mid_run_drops_the_old_anchor():
    doc = make(repeat={"days": 1}, **{NS: {"anchor": "2026-11-01T09:00:00.000Z"}})
    moved = doc | {"status": "reschedule", "date": "2026-12-24T18:00:00Z"}
    assert "anchor" not in task.hand_back(moved)[NS]
    live = running(doc, NOW) | {"status": "reschedule", "date": "2026-12-24T18:00:00Z"}
    assert "anchor" not in task.finish(live, parse(doc), ok(NOW, NOW), NOW)[NS]


def test_a_finished_series_run_anew_starts_a_new_series():
    doc = make(repeat={"days": 1, "limit": 1})
    done = run_once(doc, NOW)
    assert done["status"] == "done"
    assert "anchor" not in done[NS] and "occurrences" not in done[NS]
    anew = done | {"status": "waiting", "date": "2026-12-10T15:00:00Z",
                   "repeat": {"days": 1, "limit": 2}}
    first = run_once(anew, utc(2026, 12, 10, 15))
    assert first["status"] == "waiting"
    assert first["date"] == "2026-12-11T15:00:00.000Z"
    assert first[NS]["occurrences"] == 1
    assert first[NS]["runs"] == 2


def test_a_reschedule_that_keeps_the_date_keeps_the_series_anchor():
    held = task.claim(make(repeat={"months": 1}, **{NS: {"anchor": "2026-01-31T09:00:00.000Z"}}),
                      OWNER, DATE, NOW)
    same_date = held | {"status": "reschedule", "retry": 2}
    assert task.claim(same_date, OWNER, DATE, NOW)[NS]["anchor"] == "2026-01-31T09:00:00.000Z"
    moved = held | {"status": "reschedule", "date": "2026-12-05T18:00:00Z"}
    assert "anchor" not in task.claim(moved, OWNER, DATE, NOW)[NS]
    assert "anchor" not in task.hand_back(moved)[NS]


def test_a_run_stopped_by_a_cancel_ends_the_task_canceled_with_no_retry():
    doc = {"_id": "t", "worker": "w", "date": "2026-12-01T09:00:00Z", "status": "cancel",
           "job": {"name": "hello"}, "retry": {"limit": 3},
           "after": {"started": "2026-12-01T09:00:00Z", "attempt": 1}}
    spec = task.parse({**doc, "status": "running"})
    began, now = datetime(2026, 12, 1, 9, tzinfo=UTC), datetime(2026, 12, 1, 9, 0, 7, tzinfo=UTC)
    outcome = task.Outcome(task.STOPPED, began, now, error="canceled while running, after 7.0 s")
    after = task.finish(doc, spec, outcome, now)
    assert after["status"] == "canceled"
    info = after["after"]
    assert info["last_run"]["outcome"] == "canceled" and info["last_run"]["duration_ms"] == 7000
    assert info["canceled"] and info["runs"] == 1
    assert info.get("failures", 0) == 0 and info.get("successes", 0) == 0
    assert "retry_at" not in info
