"""``after calendar``, ``after caps`` and ``after add --exclude/--concurrency`` in
subprocesses against the real server: what they write, and one-line errors with exit codes
for bad arguments."""

from __future__ import annotations

import json

import pytest

from .test_cli_tasks import after, env  # noqa: F401 (env is a fixture)


def test_add_writes_exclude_and_concurrency(env, store):  # noqa: F811
    after(env, "add", "hello", "-w", "r", "--every", "1d", "--at", "2027-01-04T09:00:00Z",
          "--exclude", "2027-01-05", "--exclude", "2027-01-07..2027-01-09",
          "--exclude", "calendar:fr", "--concurrency", "reports:3", "--id", "t")
    doc = store.get("t")
    assert doc["repeat"] == {"days": 1, "exclude": [
        "2027-01-05", {"from": "2027-01-07", "to": "2027-01-09"}, {"calendar": "fr"}]}
    assert doc["concurrency"] == {"key": "reports", "limit": 3}
    shown = json.loads(after(env, "show", "t", "--json").stdout)
    # the calendar fr does not exist (yet): only the task's own days are left out
    assert [d[:10] for d in shown["next_runs"]] == [
        "2027-01-04", "2027-01-06", "2027-01-10", "2027-01-11", "2027-01-12"]
    assert shown["waiting_for_slot"] is None
    after(env, "calendar", "fr", "2027-01-10..2027-01-11")
    shown = json.loads(after(env, "show", "t", "--json").stdout)
    assert [d[:10] for d in shown["next_runs"]][:3] == ["2027-01-04", "2027-01-06",
                                                         "2027-01-12"]


@pytest.mark.parametrize("args, message", [
    (("--concurrency", "reports"), "Invalid value for '--concurrency': 'reports' is not "
                                   "KEY:LIMIT (like reports:2)"),
    (("--concurrency", "reports:0"), "Invalid value for '--concurrency': must be a whole "
                                     "number from 1 to 1000, not 0"),
    (("--concurrency", ":2"), "Invalid value for '--concurrency': ':2' is not KEY:LIMIT"),
    (("--concurrency", "a#b:2"), "Invalid value for '--concurrency': 'a#b' is not a key"),
    (("--every", "1d", "--exclude", "2027-13-01"),
     "Invalid value for '--exclude': '2027-13-01' is not a date (YYYY-MM-DD)"),
    (("--every", "1d", "--exclude", "calendar:no good"),
     "Invalid value for '--exclude': 'no good' is not a calendar name"),
    (("--exclude", "2027-01-01",), "Invalid value for '--exclude': applies to a repeating "
                                   "task only (every or cron)"),
])
def test_bad_add_arguments_are_one_line_errors(env, store, args, message):  # noqa: F811
    done = after(env, "add", "hello", "-w", "r", *args, code=2)
    assert done.stderr.startswith(f"after: error: {message}")
    assert store.find({"worker": "r"})[0] == []  # nothing written


def test_calendar_set_show_delete_and_its_errors(env, store):  # noqa: F811
    set_ = after(env, "calendar", "fr", "2026-12-25", "2026-12-24..2026-12-26", "--json")
    assert json.loads(set_.stdout)["dates"] == ["2026-12-25", {"from": "2026-12-24",
                                                               "to": "2026-12-26"}]
    assert after(env, "calendar", "fr").stdout == (
        "calendar fr: 2 item(s)\n  2026-12-25\n  2026-12-24..2026-12-26\n")
    assert after(env, "calendar", "bad name", "2026-12-25", code=2).stderr.startswith(
        "after: error: Invalid value for NAME: 'calendar:bad name' is not a calendar id")
    assert after(env, "calendar", "fr", "calendar:x", code=2).stderr.startswith(
        "after: error: Invalid value for DAYS: a calendar holds days and ranges, not calendars")
    assert after(env, "calendar", "fr", "x", "--delete", code=2).stderr.startswith(
        "after: error: Invalid value for '--delete': cannot be combined with DAYS")
    assert after(env, "calendar", "fr", "2026-12-26..2026-12-24", code=2).stderr.startswith(
        "after: error: Invalid value for DAYS: from 2026-12-26 is after to 2026-12-24")
    after(env, "add", "hello", "-w", "r", "--at", "2027-01-04T09:00:00Z", "--id", "a-task")
    listed = after(env, "tasks").stdout
    assert "a-task" in listed and "calendar" not in listed  # a calendar is not a task
    after(env, "calendar", "fr", "--delete")
    assert after(env, "calendar", "fr", code=4).stderr == (
        "after: error: no calendar 'fr' in " + store.db + " (no document calendar:fr)\n")


def test_caps_lists_the_slots(env, store):  # noqa: F811
    store.put({"_id": "slot:reports#0", "type": "slot", "key": "reports", "holder": "w@h:1:x",
               "task": "q1", "since": "2027-01-04T09:00:00.000Z"}, db=f"{store.db}_workers")
    store.put({"_id": "slot:reports#1", "type": "slot", "key": "reports", "holder": None,
               "task": None}, db=f"{store.db}_workers")
    assert after(env, "caps").stdout.splitlines() == [
        "KEY      SLOT  TASK  HOLDER   SINCE",
        "reports  0     q1    w@h:1:x  2027-01-04 09:00:00",
        "reports  1     -     free     -"]
    assert json.loads(after(env, "caps", "other", "--json").stdout) == []


def test_show_counts_skipped_occurrences(env, store):  # noqa: F811
    store.put({"_id": "s", "worker": "r", "date": "2027-01-04T09:00:00Z", "status": "waiting",
               "job": {"name": "hello", "arguments": []}, "repeat": {"days": 1},
               "after": {"runs": 1, "successes": 1, "skipped": 2}})
    assert "runs       1 (1 done, 0 failed, 0 missed, 2 skipped)" in after(
        env, "show", "s").stdout.splitlines()
