"""``after audit`` in a subprocess against the real (session) server: the table, ``--all``,
``--json``, ``--late``, extra runs, a task that cannot be read, and one-line errors."""

from __future__ import annotations

import json
from datetime import timedelta

from after.rules import occurrence as occ
from after.rules.dates import format_date, parse_date, utcnow

from .test_cli_tasks import after, env  # noqa: F401 - the fixture

HOUR = timedelta(hours=1)


def record(store, when, *, late=0.2, n=1, kind=None, outcome="done", error=None):
    doc = {"_id": f"r-{format_date(when)}-{n}-{kind}", "type": "run", "task": "nightly",
           "worker": "night", "attempt": 1, "number": n, "scheduled": format_date(when),
           "occurrence": occ.key("nightly", when), "occurrence_date": format_date(when),
           "started": format_date(when + timedelta(seconds=late)), "outcome": outcome}
    if kind:
        doc.update(kind=kind, parent="nightly", task=f"nightly:{kind}:{format_date(when)}")
    if error:
        doc["error"] = {"message": error}
    store.put(doc, db=f"{store.db}_runs")


def test_the_table_the_json_and_the_threshold(env, store):  # noqa: F811
    start = parse_date(format_date(utcnow().replace(minute=0, second=0, microsecond=0)
                                   - 5 * HOUR))
    store.put({"_id": "nightly", "worker": "night", "job": {"name": "hello"},
               "status": "waiting", "date": format_date(start + 5 * HOUR),
               "repeat": {"hours": 1}, "after": {"anchor": format_date(start)}})
    store.put({"_id": "broken", "worker": "night", "job": {"name": "hello"},
               "status": "error", "date": "soon", "repeat": {"hours": 1}})
    record(store, start)  # on time
    record(store, start + HOUR, late=90)  # late by default, on time with --late 100
    record(store, start + 2 * HOUR)
    record(store, start + 2 * HOUR, n=2)  # twice
    record(store, start + 3 * HOUR, outcome="missed", error="missed: would have started 9.0s "
                                                              "late (max_delay 1s)")
    record(store, start + 3.5 * HOUR, kind="manual")  # extra
    window = ["--from", format_date(start), "--to", format_date(start + 4 * HOUR)]
    table = after(env, "audit", "night", *window).stdout.splitlines()
    assert table[0].split() == ["TASK", "OCCURRENCE", "VERDICT", "LATE", "RUNS", "WHY"]
    rows = [line.split()[:5] for line in table[1:-1]]
    day = lambda h: (start + h * HOUR).strftime("%Y-%m-%d")  # noqa: E731
    hour = lambda h: (start + h * HOUR).strftime("%H:%M:%S")  # noqa: E731
    assert rows == [
        ["broken", "-", "error", "-", "-"],
        ["nightly", day(1), hour(1), "late", "90.0s"],
        ["nightly", day(2), hour(2), "twice", "0.2s"],
        ["nightly", day(3), hour(3), "missed", "-"],
        ["nightly", day(4), hour(4), "never", "-"],
        ["nightly", day(3.5), hour(3.5), "extra", "-"],
    ]
    assert "cannot be read: date: 'soon' is not an ISO 8601" in table[1]
    assert "missed: would have started 9.0s late (max_delay 1s)" in table[4]
    assert "a manual run (after run): r-" in table[6]
    assert table[-1] == (f"5 occurrences of 2 tasks from {format_date(start)} to "
                         f"{format_date(start + 4 * HOUR)}: 1 on time, 1 late, 1 ran twice, "
                         "1 missed, 1 never ran, 1 extra runs")
    everything = after(env, "audit", "night", *window, "--all", "--late", "100").stdout
    assert [line.split()[3] for line in everything.splitlines()[2:7]] == [
        "on_time", "on_time", "twice", "missed", "never"]
    data = json.loads(after(env, "audit", "--task", "nightly", *window, "--json").stdout)
    assert data["counts"] == {"on_time": 1, "late": 1, "backfilled": 0, "twice": 1,
                              "missed": 1, "skipped": 0, "never": 1, "pending": 0, "extra": 1}
    assert [o["verdict"] for o in data["tasks"][0]["occurrences"]] == [
        "on_time", "late", "twice", "missed", "never"]
    assert after(env, "audit", "nobody", *window).stdout == (
        f"no occurrence from {format_date(start)} to {format_date(start + 4 * HOUR)}\n")


def test_bad_input_is_one_line(env, store):  # noqa: F811
    late = after(env, "audit", "--late", "-1", code=2).stderr
    assert "Invalid value for '--late'" in late
    when = after(env, "audit", "--from", "yesterday", code=2).stderr
    assert when.startswith("after: error: Invalid value for '--from': 'yesterday' is not")
    assert "not a worker name" in after(env, "audit", "a b", code=2).stderr
    assert "no task 'nope'" in after(env, "audit", "--task", "nope", code=4).stderr
