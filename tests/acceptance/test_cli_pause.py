"""``after pause``/``after resume`` and ``after add --overlap --priority`` in a subprocess:
bad arguments are one line on stderr and a non-zero exit; good ones say what they did."""

from __future__ import annotations

import json

import pytest

from .conftest import one_line_error


@pytest.mark.parametrize("args, code, says", [
    (("pause",), 2, "give a worker NAME or --task ID"),
    (("resume",), 2, "give a worker NAME or --task ID"),
    (("pause", "billing", "--task", "t1"), 2, "give a worker NAME or --task ID"),
    (("pause", "not a name"), 2, "is not a worker name"),
    (("resume", "a@b"), 2, "is not a worker name"),
    (("pause", "--task", "no-such-task"), 4, "no task 'no-such-task'"),
    (("resume", "--task", "no-such-task"), 4, "no task 'no-such-task'"),
    (("add", "hello", "--worker", "billing", "--overlap", "sometimes"), 2, "'--overlap'"),
    (("add", "hello", "--worker", "billing", "--priority", "high"), 2, "'--priority'"),
    (("add", "hello", "--worker", "billing", "--priority", "2000000"), 2, "'--priority'"),
    (("add", "hello", "--worker", "billing", "--every", "1m", "--overlap", "allow", "--retry",
      "2"), 2, "'--overlap': 'allow' runs each occurrence once"),
])
def test_bad_arguments_are_one_line_and_a_non_zero_exit(cli, args, code, says):
    result = cli.run(*args)
    assert result.returncode == code, result.stderr
    assert says in one_line_error(result)


def test_add_with_overlap_and_priority_then_pause_and_resume_the_task(cli, tasks):
    added = cli.run("add", "hello", "--worker", "billing", "--every", "1h", "--at",
                    "2020-01-01T00:00:00Z", "--overlap", "buffer_one", "--priority", "7",
                    "--id", "hourly")
    assert added.returncode == 0, added.stderr
    doc = tasks.get("hourly")
    assert (doc["overlap"], doc["priority"]) == ("buffer_one", 7)
    shown = cli.run("show", "hourly").stdout
    assert "overlap" in shown and "buffer_one" in shown and "priority" in shown
    paused = cli.run("pause", "--task", "hourly")
    assert paused.returncode == 0 and paused.stdout.strip() == "hourly paused"
    assert "paused since" in cli.run("show", "hourly").stdout
    again = cli.run("pause", "--task", "hourly")
    assert again.returncode == 0  # already paused: nothing written
    resumed = cli.run("resume", "--task", "hourly")
    assert resumed.returncode == 0 and "hourly resumed: waiting, next run 20" in resumed.stdout
    doc = tasks.get("hourly")
    assert doc["status"] == "waiting" and doc["date"] > "2026"  # no catch-up from 2020
    twice = cli.run("resume", "--task", "hourly")
    assert (twice.returncode, twice.stdout) == (0, "hourly was not paused (it is waiting)\n")
    assert tasks.get("hourly")["_rev"] == doc["_rev"]  # nothing written
    listing = json.loads(cli.run("tasks", "--json").stdout)
    assert [t["_id"] for t in listing] == ["hourly"]
