"""Pathological documents: read safely, refused with a clear message, never a crash."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from after.rules import task as rules
from after.rules.jsonsafe import MAX_DEPTH, Unreadable, loads, problem, shared

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GOOD = {"_id": "t", "worker": "w", "date": "2026-03-01T12:00:00Z",
        "job": {"name": "hello", "arguments": []}, "status": "waiting"}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def depth_of(value) -> int:
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    return depth + isinstance(value, list)


@pytest.mark.parametrize("depth", [999, 1000, 10_000, 200_000])
def test_deep_nesting_is_read_with_the_excess_marked_unreadable(depth):
    started = time.perf_counter()
    doc = loads('{"_id": "d", "x": %s, "after": 1}' % nested(depth))  # noqa: UP031
    assert time.perf_counter() - started < 2.0
    assert doc["_id"] == "d" and doc["after"] == 1
    value = doc["x"]
    for _ in range(MAX_DEPTH - 2):
        value = value[0]
    assert isinstance(value[0], Unreadable)
    assert "nested deeper than 64 levels" in value[0]
    json.dumps(doc)  # what is read can be written back


def test_shallow_documents_read_exactly_as_json_does():
    text = '{"a": [1, 2.5, "x\\u00e9", true, false, null, {"b": -0.0}], "c": 1e-300}'
    assert loads(text) == json.loads(text)
    assert depth_of(loads(nested(50))) == 50


@pytest.mark.parametrize("text, what", [
    ("1" + "0" * 5000, "an integer of 5001 digits"),
    ("-" + "9" * 4500, "an integer of 4501 digits"),
    ("1e400", "the number 1e400 is out of range"),
    ("-1e400", "the number -1e400 is out of range"),
    ("NaN", "NaN is not JSON"),
    ("Infinity", "Infinity is not JSON"),
])
def test_numbers_python_cannot_carry_become_unreadable(text, what):
    value = loads('{"x": %s}' % text)["x"]  # noqa: UP031
    assert isinstance(value, Unreadable) and what in value
    assert problem({"x": value}) == f"x: {value}"


def test_the_bounded_parser_handles_numbers_and_strings_past_the_depth():
    text = '{"k": %s, "n": 1%s, "s": "a\\"]}[{", "f": 1.5e3}' % (  # noqa: UP031
        "[" * 1500 + '"]]]"' + "]" * 1500, "0" * 4500)
    doc = loads(text)
    assert isinstance(doc["n"], Unreadable)
    assert doc["s"] == 'a"]}[{' and doc["f"] == 1500.0


@pytest.mark.parametrize("value, expected", [
    ({"a": {"b": "x" * 1_000_001}}, "a.b: a string of 1000001 characters (at most 1000000)"),
    ({"a": [float("inf")]}, "a[0]: inf is not a finite number"),
    ({"a": [float("nan")]}, "a[0]: nan is not a finite number"),
    ({"a": 10 ** 20000}, "a: an integer too long to read"),
    ({"x" * 1_000_001: 1}, "the document: a key of 1000001 characters (at most 1000000)"),
])
def test_problem_names_the_field(value, expected):
    assert problem(value) == expected


def test_problem_on_deep_nesting_is_iterative_and_cut_short():
    value: list = []
    for _ in range(100_000):
        value = [value]
    message = problem({"job": {"arguments": value}})
    assert message.endswith(": nested deeper than 64 levels")
    assert message.startswith("job.arguments[0][0]") and len(message) < 120
    assert problem({"a": json.loads(nested(63))}) is None


JSON_VALUES = [None, True, False, 0, -1, 2 ** 63, 1.5, -0.0, 1e308, -1e308, "", "x",
               "2026-03-01", "\u0000", [], [1], {}, {"a": 1}, {"limit": 2}]
FIELDS = ["worker", "date", "job", "status", "repeat", "retry", "timeout", "max_delay",
          "after", "_id"]


@pytest.mark.parametrize("field", FIELDS)
def test_every_json_type_in_every_field_parses_or_is_refused_with_a_task_error(field):
    for value in JSON_VALUES:
        doc = {**GOOD, field: value}
        try:
            rules.parse(doc)
        except rules.TaskError as exc:
            assert str(exc) and "\n" not in str(exc) and len(str(exc)) < 300
    for value in JSON_VALUES:
        job = {**GOOD["job"], "name" if field == "job" else "arguments": value}
        try:
            rules.parse({**GOOD, "job": job})
        except rules.TaskError:
            pass


AFTER_KEYS = ["owner", "due", "anchor", "attempt", "runs", "run", "successes", "failures",
              "missed", "occurrences", "started", "last_run", "next_run", "error"]


@pytest.mark.parametrize("key", AFTER_KEYS)
def test_any_value_under_after_leaves_every_transition_working(key):
    spec = rules.parse({**GOOD, "repeat": {"seconds": 10, "limit": 3},
                        "retry": {"limit": 2, "delay": 1}})
    for value in JSON_VALUES + [{"x": [1]}, "nope", -5, 2 ** 80]:
        doc = {**GOOD, "after": {key: value}}
        claimed = rules.claim(doc, "me", NOW, NOW)
        started = rules.start(claimed, "me", NOW, 1)
        for outcome in (rules.OK, rules.FAILED, rules.MISSED, rules.INTERRUPTED):
            done = rules.finish(started, spec, rules.Outcome(outcome, NOW, NOW, error="e"),
                                NOW, rand=0.5)
            assert done["status"] in (rules.WAITING, rules.SCHEDULED, rules.DONE,
                                      rules.ERROR)
            json.dumps(done, allow_nan=False)
        rules.hand_back(doc)
        rules.mark_error(doc, "x", NOW)
        rules.cancel(doc, NOW)


@pytest.mark.parametrize("fields, message", [
    ({"timeout": 1e308}, "timeout: at most 316224000 seconds (ten years), not 1e+308"),
    ({"max_delay": 1e308}, "max_delay: at most 316224000 seconds (ten years), not 1e+308"),
    ({"retry": {"delay": 1e12}}, "retry.delay: at most 316224000 seconds (ten years), "
                                 "not 1000000000000.0"),
    ({"retry": 10 ** 30}, "retry: at most 1000 attempts, not 1000000000000000000000000000000"),
    ({"retry": {"limit": 5000}}, "retry.limit: at most 1000 attempts, not 5000"),
])
def test_huge_numbers_are_refused_by_name(fields, message):
    with pytest.raises(rules.TaskError) as caught:
        rules.parse({**GOOD, **fields})
    assert str(caught.value) == message


def test_the_longest_retry_backoff_stays_a_date():
    retry = rules.parse_retry({"limit": 1000, "delay": rules.MAX_SECONDS,
                               "backoff": "exponential"})
    assert retry.delay_for(1000) <= rules.MAX_SECONDS * 1.1


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                    allow_infinity=False) | st.text(max_size=80),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["_id", "worker", "date", "status", "type", "job",
                                        "after", "name"]) | st.text(max_size=8), JSON,
                       max_size=8))
def test_a_shared_document_is_the_same_document(doc):
    again = loads(json.dumps(doc))
    assert shared(again) == again == doc


def test_documents_read_apart_share_their_keys_and_their_repeated_values():
    first, second = (shared(loads(json.dumps({**GOOD, "_id": name, "after": {"runs": 2},
                                               "x": {"y": {"deeper": "deep"}}})))
                     for name in ("a", "b"))
    assert first == {**GOOD, "_id": "a", "after": {"runs": 2}, "x": {"y": {"deeper": "deep"}}}
    pairs = list(zip(first, second, strict=True))
    assert all(one is other for one, other in pairs)  # every key, held once
    for field in ("worker", "date", "status"):
        assert first[field] is second[field]
    assert first["job"]["name"] is second["job"]["name"]
    assert next(iter(first["after"])) is next(iter(second["after"]))
    # deeper than two levels, and values that do not repeat, are left as they were read
    assert next(iter(first["x"]["y"])) is not next(iter(second["x"]["y"]))
    odd = shared(loads('{"worker": 1e400, "status": "%s"}' % ("s" * 100)))  # noqa: UP031
    assert isinstance(odd["worker"], Unreadable) and odd["status"] == "s" * 100
