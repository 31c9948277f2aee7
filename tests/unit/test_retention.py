"""Retention's rules (after.couch.retention), pure, at a fixed NOW: what finished when, which
tasks a policy deletes, and which process of a name applies it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from after.couch.retention import Policy, expired, finished_at, first_live, is_extra, older
from after.rules.dates import format_date, to_ms

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY = 24 * 3600.0


def ago(days: float) -> str:
    return format_date(NOW - timedelta(days=days))


def task(status="done", ended_days=10, **fields) -> dict:
    doc = {"_id": "t", "worker": "w", "date": ago(ended_days + 1), "status": status,
           "job": {"name": "hello", "arguments": []},
           "after": {"last_run": {"ended": ago(ended_days)}}}
    doc.update(fields)
    return doc


def extra(status="done", ended_days=10) -> dict:
    return task(status, ended_days, _id="p:manual:2026-11-01T00:00:00.000Z",
                occurrence={"task": "p", "kind": "manual", "date": ago(ended_days)})


def test_when_a_task_finished():
    assert finished_at(task(ended_days=3)) == NOW - timedelta(days=3)
    canceled = task("canceled", after={"canceled": ago(2), "last_run": {"ended": ago(9)}})
    assert finished_at(canceled) == NOW - timedelta(days=2)  # the later of the two
    bad = {"_id": "x", "date": ago(5), "status": "error", "after": {"error": "no worker"}}
    assert finished_at(bad) == NOW - timedelta(days=5)  # no run: its date
    assert finished_at({"_id": "x", "date": "garbage", "status": "error"}) is None
    assert finished_at({**task(), "after": "not an object"}) == NOW - timedelta(days=11)


@pytest.mark.parametrize("doc, policy, gone", [
    (task(ended_days=10), Policy(retain=7 * DAY), True),
    (task(ended_days=5), Policy(retain=7 * DAY), False),
    (task(ended_days=10), Policy(retain=0, retain_extra=7 * DAY), False),  # kept for ever
    (task("error", 10), Policy(retain=7 * DAY), True),
    (task("canceled", 10), Policy(retain=7 * DAY), True),
    (task("waiting", 10), Policy(retain=7 * DAY), False),  # not finished
    (task("paused", 10), Policy(retain=7 * DAY), False),
    (task(ended_days=10, repeat={"days": 1}), Policy(retain=7 * DAY), False),  # no one-off
    (extra(ended_days=10), Policy(retain_extra=7 * DAY), True),
    (extra(ended_days=10), Policy(retain=7 * DAY), False),  # a copy has its own setting
    (extra("scheduled", 10), Policy(retain_extra=7 * DAY), False),
    (task(ended_days=7), Policy(retain=7 * DAY), True),  # exactly at the limit
])
def test_which_tasks_a_policy_deletes(doc, policy, gone):
    assert expired(doc, NOW, policy) is gone


def test_older_and_is_extra():
    assert older(task(ended_days=31), NOW, 30 * DAY)
    assert not older(task(ended_days=29), NOW, 30 * DAY)
    assert not older(task("running", 31), NOW, 30 * DAY)
    assert is_extra(extra()) and not is_extra(task())
    assert not is_extra(task(occurrence="not an object"))
    assert not Policy().active and Policy(retain_extra=1).active


@given(days=st.floats(0, 400), keep=st.floats(1, 400 * DAY),
       status=st.sampled_from(["waiting", "scheduled", "running", "done", "error",
                               "canceled", "cancel", "reschedule", "paused"]))
def test_a_task_kept_less_long_than_it_has_been_finished_goes(days, keep, status):
    assume(abs(days * DAY - keep) > 0.01)  # dates keep milliseconds: not at the boundary
    doc = task(status, days)
    finished = status in ("done", "error", "canceled")
    assert expired(doc, NOW, Policy(retain=keep)) == (finished and days * DAY > keep)


def beat(name, pid, live=True):
    expires = NOW + timedelta(seconds=5 if live else -5)
    return {"_id": f"{name}@h:{pid}:x", "type": "worker", "name": name,
            "expires": format_date(expires)}


def test_only_the_first_live_process_of_a_name_applies_it():
    docs = [beat("w", 2), beat("w", 1, live=False), beat("w", 3)]
    assert first_live(docs, "w@h:2:x", to_ms(NOW))
    assert not first_live(docs, "w@h:3:x", to_ms(NOW))
    assert first_live([], "w@h:9:x", to_ms(NOW))  # none beats yet: the one starting does
