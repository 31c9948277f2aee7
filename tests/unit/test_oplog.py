"""The log line of a run that did not succeed says what comes next (after.worker.oplog), from the
documents the pure rules of after.rules.task leave: at a fixed NOW, no clock patched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from after.rules import task as rules
from after.worker import oplog

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def running(attempt: int = 1, **fields) -> dict:
    return {"_id": "t1", "worker": "w", "date": "2026-12-01T09:00:00.000Z",
            "job": {"name": "sync", "arguments": []}, "status": "running",
            "after": {"owner": "w@h:1:x", "attempt": attempt, "runs": attempt - 1}, **fields}


def line(doc: dict, outcome: str = rules.FAILED, error: str = "RuntimeError: boom") -> str:
    spec = rules.parse(doc)
    ended = rules.Outcome(outcome, NOW, NOW + timedelta(seconds=1), error=error)
    after = rules.finish(doc, spec, ended, NOW + timedelta(seconds=1), rand=0.5)
    return oplog.run_ended(doc, after, spec, ended, NOW + timedelta(seconds=1))


def test_a_failure_that_will_be_retried_says_which_attempt_and_when_next():
    doc = running(1, retry={"limit": 3, "delay": 30, "backoff": "fixed", "jitter": 0})
    assert line(doc) == ("task t1 (job sync): attempt 1 of 4 failed, next at "
                         "2026-12-01T09:00:31.000Z (in 30 s): RuntimeError: boom")


def test_the_last_attempt_says_no_retry_is_left():
    doc = running(4, retry={"limit": 3, "delay": 30, "jitter": 0})
    assert line(doc) == "task t1 (job sync): attempt 4 of 4 failed, no retry left: " \
                        "RuntimeError: boom"


def test_a_task_without_retry_says_so():
    assert line(running()) == ("task t1 (job sync): failed, no retry left (retry: none): "
                               "RuntimeError: boom")


def test_a_timeout_of_a_repeating_task_names_the_next_occurrence():
    doc = running(3, retry=2, repeat={"hours": 1})
    assert line(doc, rules.TIMEOUT, "timeout: ran past 5 s") == (
        "task t1 (job sync): attempt 3 of 3 timed out, no retry left; next occurrence at "
        "2026-12-01T10:00:00.000Z: timeout: ran past 5 s")


def test_an_immediate_retry_reads_in_0_s():
    doc = running(1, retry=2)
    assert line(doc).startswith("task t1 (job sync): attempt 1 of 3 failed, next at "
                                "2026-12-01T09:00:01.000Z (in 0 s)")
