"""The client's and the task commands' pure parts: no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from after.cli.tasks import call_text, duration, json_or_text, option_for, retry_text
from after.client import Client, TaskError, _every, describe_repeat, every_units
from after.rules import task as rules

NOW = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("text, units", [
    ("30s", {"seconds": 30}),
    ("15m", {"minutes": 15}),
    ("1M", {"months": 1}),
    ("1y2w", {"years": 1, "weeks": 2}),
    ("1h30m", {"hours": 1, "minutes": 30}),
    ("250ms", {"milliseconds": 250}),
])
def test_every_shorthand(text, units):
    assert every_units(text) == units


@pytest.mark.parametrize("text, message", [
    ("", "every: '' is not an interval"),
    ("7", "every: '7' is not an interval"),
    ("d", "every: 'd' is not an interval"),
    ("1D", "every: '1D' is not an interval"),
    ("1h1h", "every: '1h1h' gives 'h' twice"),
])
def test_every_shorthand_refused(text, message):
    with pytest.raises(TaskError, match="^" + message):
        every_units(text)


def test_repeat_field_from_keywords():
    assert _every(None, None, None, None, None, NOW) is None
    assert _every("P1D", None, None, None, None, NOW) == "P1D"
    assert _every("P1D", None, None, 2, "+1w", NOW) == {
        "every": "P1D", "limit": 2, "until": "2027-01-08T00:00:00.000Z"}
    assert _every(timedelta(hours=2), None, None, None, None, NOW) == {"milliseconds": 7200000}
    assert _every(None, "0 9 * * *", None, 5, None, NOW) == {"cron": "0 9 * * *", "limit": 5}
    with pytest.raises(TaskError, match="^every: .* is not a whole number of milliseconds"):
        _every(timedelta(microseconds=1), None, None, None, None, NOW)
    with pytest.raises(TaskError, match="^every: expected an object of units"):
        _every(1.5, None, None, None, None, NOW)
    with pytest.raises(TaskError, match="^until: 'later' is not 'now'"):
        _every("1d", None, None, None, "later", NOW)


def doc(**fields) -> dict:
    base = {"_id": "t", "worker": "w", "date": "2027-01-04T09:00:00Z", "status": "waiting",
            "job": {"name": "noop", "arguments": []}}
    return {**base, **fields}


def test_next_runs_of_a_one_off_task():
    assert Client.next_runs(doc()) == [datetime(2027, 1, 4, 9, tzinfo=UTC)]
    assert Client.next_runs(doc(status="done")) == []
    assert Client.next_runs(doc(status="error")) == []
    assert Client.next_runs(doc(date="nope")) == []


def test_next_runs_follow_the_anchor_limit_and_until():
    daily = doc(repeat={"days": 1, "limit": 5}, date="2027-01-06T09:00:00Z",
                after={"anchor": "2027-01-04T09:00:00.000Z", "occurrences": 2})
    assert [d.day for d in Client.next_runs(daily)] == [6, 7, 8]  # 5 runs, 2 done
    until = doc(repeat={"days": 1, "until": "2027-01-06T09:00:00Z"})
    assert [d.day for d in Client.next_runs(until)] == [4, 5, 6]
    months = doc(repeat={"M": 1}, date="2027-01-31")
    assert [d.date().isoformat() for d in Client.next_runs(months, 3)] == [
        "2027-01-31", "2027-02-28", "2027-03-31"]


def test_next_runs_of_a_retry_waiting_on_its_holder():
    held = doc(status="scheduled", after={"owner": "w@h:1:x", "due": "2027-01-04T09:05:00Z"})
    assert Client.next_runs(held) == [datetime(2027, 1, 4, 9, 5, tzinfo=UTC)]


def test_cron_next_runs_across_the_new_york_dst_change():
    nyc = doc(date="2027-03-12T14:00:00Z", repeat={"cron": "0 9 * * 1-5",
                                                    "tz": "America/New_York"})
    assert [d.strftime("%m-%d %H:%M") for d in Client.next_runs(nyc)] == [
        "03-12 14:00", "03-15 13:00", "03-16 13:00", "03-17 13:00", "03-18 13:00"]


def refusal(**fields) -> TaskError:
    """The error task.parse gives for a document with these fields."""
    with pytest.raises(TaskError) as caught:
        rules.parse(doc(**fields))
    return caught.value


@pytest.mark.parametrize("fields, cron, option, problem", [
    ({"worker": None}, False, "--worker", "required"),
    ({"date": "x"}, False, "--at", "'x' is not"),
    ({"repeat": {"cron": "0 9 * * *", "tz": "X/Y"}}, True, "--tz", "unknown time zone 'X/Y'"),
    ({"repeat": {"cron": "0 9 * * *", "dst": {"gap": "skip"}}}, True, "--tz",
     "dst needs a tz"),
    ({"repeat": {"cron": "0 9 * * *", "tz": "UTC", "dst": {"fold": "x"}}}, True,
     "--dst-fold", "dst.fold must be"),
    ({"repeat": {"cron": "0 9 * * *", "tz": "UTC", "dst": {"gap": "x"}}}, True,
     "--dst-gap", "dst.gap must be"),
    ({"repeat": {"hours": 1, "limit": 0}}, False, "--limit",
     "limit must be a positive integer, got 0"),
    ({"repeat": {"hours": 1, "jitter": -1}}, False, "--jitter", "jitter must be"),
    ({"repeat": {"cron": "x", "tz": "UTC"}}, True, "--cron", "cron 'x' must have 5 fields"),
    ({"repeat": {"hours": 0}}, False, "--every", "the interval is zero"),
    ({"repeat": {"hours": 1, "until": "x"}}, False, "--until", "'x' is not"),
    ({"retry": {"backoff": "x"}}, False, "--retry", "must be 'fixed' or 'exponential'"),
    ({"max_delay": -1}, False, "--max-delay", "must be"),
    ({"job": {"arguments": []}}, False, "JOB", "required"),
])
def test_option_for(fields, cron, option, problem):
    """The option to blame comes from the field the error names, not from its text."""
    error = refusal(**fields)
    named, shown = option_for(error, cron=cron)
    assert (named, shown[:len(problem)]) == (option, problem), str(error)
    assert str(error).endswith(shown)


def test_option_for_an_error_of_no_field():
    assert option_for(TaskError("something else")) == ("", "something else")
    assert TaskError("something else").field == ""


def test_option_for_arguments():
    error = TaskError("job.arguments: not JSON")
    assert (error.field, error.problem) == ("job.arguments", "not JSON")
    assert option_for(error) == ("ARGS", "not JSON")
    assert option_for(error, kwargs=True) == ("--kwargs", "not JSON")


def test_display_helpers():
    assert json_or_text("42") == 42
    assert json_or_text('"42"') == "42"
    assert json_or_text("Ada") == "Ada"
    assert json_or_text("[1, 2]") == [1, 2]
    assert call_text({"name": "hello", "arguments": ["Ada", 1]}) == 'hello("Ada", 1)'
    assert call_text({"name": "hello", "arguments": {"name": "Ada"}}) == 'hello(name="Ada")'
    assert call_text({"name": "noop"}) == "noop()"
    assert retry_text(1) == "1 attempt after the first"
    assert retry_text({"limit": 3, "delay": 30, "backoff": "exponential"}) == \
        "3 attempts after the first, 30s apart (exponential)"
    assert duration(12.4) == "12ms"
    assert duration(1530) == "1.5s"
    assert duration(None) == "-"
    assert describe_repeat({"days": 7, "limit": 2}) == "every 7 days, 2 runs at most"
    assert describe_repeat(None) == ""
    assert describe_repeat({"days": "x"}).startswith("invalid (repeat: days must be")


@pytest.mark.parametrize("message, field", [
    ("retry.limit: must be 0 or more attempts", "retry.limit"),
    ("job.arguments[0][0][0]...: nested deeper than 64 levels", "job.arguments[0][0][0]..."),
    ("job.arguments.to: not JSON", "job.arguments.to"),
    ("the database said no: 403", ""),
])
def test_a_task_error_names_its_field(message, field):
    error = TaskError(message)
    assert error.field == field
    assert error.problem == (message[len(field) + 2:] if field else message)
