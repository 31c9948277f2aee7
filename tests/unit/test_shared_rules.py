"""The rules written in two languages, each tested against one table (``tests/cases/``):

- the date grammar: :func:`after.rules.dates.parse_date`, the design document's ``parseDate``
  (built from the same regex, in :mod:`after.couch.schema`) and ``parseDate`` of the dashboard's
  ``model.js``, against ``dates.json``;
- what the dashboard offers for each status: :data:`after.rules.task.ACTIONS` and ``ACTIONS`` of
  ``model.js``, against ``actions.json``.

The browser tests run ``model.js`` against the same tables in Chromium.
"""

from __future__ import annotations

import json

import pytest

from after.couch import schema
from after.rules import task
from after.rules.dates import ISO_DATE_RE, DateError, parse_date, to_ms

from ..js import cases, model_url, node

DATES = cases("dates")["cases"]
ACTIONS = cases("actions")["actions"]


def python_ms(value):
    try:
        return to_ms(parse_date(value))
    except DateError:
        return None


@pytest.mark.parametrize("case", DATES, ids=lambda c: repr(c["value"]))
def test_python_reads_each_date_as_the_table_says(case):
    assert python_ms(case["value"]) == case["ms"]


def test_the_design_documents_parser_is_built_from_the_python_regex():
    assert f"/{ISO_DATE_RE.pattern}/.exec(value)" in schema.JS_PARSE_DATE


def test_the_design_documents_parser_reads_each_date_as_the_table_says():
    values = json.dumps([c["value"] for c in DATES])
    got = node(f"{schema.JS_PARSE_DATE}\nconsole.log(JSON.stringify({values}.map(parseDate)));")
    assert dict(zip(map(repr, (c["value"] for c in DATES)), got, strict=True)) == {
        repr(c["value"]): c["ms"] for c in DATES}


def test_the_dashboard_reads_each_date_as_the_table_says():
    values = json.dumps([c["value"] for c in DATES])
    got = node(f"import * as m from '{model_url()}';\n"
               f"console.log(JSON.stringify({values}.map(m.parseDate)));")
    assert dict(zip(map(repr, (c["value"] for c in DATES)), got, strict=True)) == {
        repr(c["value"]): c["ms"] for c in DATES}


def test_the_actions_of_each_status_are_the_tables():
    assert {k: list(v) for k, v in task.ACTIONS.items()} == ACTIONS
    assert set(ACTIONS) == set(task.STATUSES)
    got = node(f"import * as m from '{model_url()}';\n"
               "console.log(JSON.stringify([true, false].map((r) => Object.fromEntries("
               "m.STATUSES.map((s) => [s, m.actionsFor(r ? {status: s, repeat: 'P1D'} "
               ": {status: s})])))));")
    assert got[0] == ACTIONS
    # backfill is offered for a repeating task only
    assert got[1] == {s: [a for a in actions if a != "backfill"] for s, actions in ACTIONS.items()}


def test_the_dashboard_tells_an_isolated_task_as_the_worker_does():
    """model.js's isolationOf is after.rules.task.isolated, on what a user may write there."""
    base = {"_id": "t", "worker": "w", "date": "2026-12-01", "status": "waiting",
            "job": {"name": "j"}}
    marks = [None, "2026-12-01T09:00:00Z", "", 0, 1, False, True, [], [0], {}, {"a": 1}]
    docs = [{**base, "isolation": iso, "after": {"isolated": mark}}
            for iso in (None, "thread", "process") for mark in marks]
    docs += [{**base, "after": "not an object"}, {**base, "isolation": "process"}, base]
    got = node(f"import * as m from '{model_url()}';\n"
               f"console.log(JSON.stringify({json.dumps(docs)}.map(m.isolationOf)));")
    want = ["process" if task.isolated(doc, task.parse(doc)) else "thread" for doc in docs]
    assert got == want and want.count("process") > 10 and want.count("thread") > 5


def test_the_dashboard_writes_the_python_regex_too():
    assert f"const ISO = /{ISO_DATE_RE.pattern}/;" in (model_url_path()).read_text()


def model_url_path():
    from ..js import DASHBOARD

    return DASHBOARD / "model.js"


def test_the_dashboard_says_a_repeat_rule_as_after_show_does():
    """model.js's repeatText is after.rules.repeat's describe, for cron rules (with their dst
    policy) and objects of units, with limit, until and jitter."""
    from after.client import describe_repeat

    repeats = [
        {"cron": "30 2 * * *", "tz": "America/New_York"},
        {"cron": "30 2 * * *", "tz": "America/New_York", "dst": {"gap": "skip"}},
        {"cron": "30  1 * * *", "tz": "Europe/Paris", "dst": {"gap": "shift", "fold": "both"}},
        {"cron": "45 1 * * *", "tz": "Australia/Lord_Howe", "dst": {"fold": "last"}},
        {"cron": "0 9 * * 1-5"},
        {"cron": "*/30 * * * *", "tz": "Europe/Paris", "dst": {}, "limit": 3},
        {"days": 7}, {"M": 1, "d": 7}, {"hours": 1, "minutes": 30, "limit": 1},
        {"weeks": 2, "until": "2027-01-01", "jitter": 60},
        {"y": 1, "ms": 500},
    ]
    docs = [{"_id": "t", "repeat": repeat} for repeat in repeats]
    got = node(f"import * as m from '{model_url()}';\n"
               f"console.log(JSON.stringify({json.dumps(docs)}.map(m.repeatText)));")
    assert got == [describe_repeat(repeat) for repeat in repeats]
    assert "dst gap skip" in got[1] and "dst gap shift, fold both" in got[2]
    none = node(f"import * as m from '{model_url()}';\n"
                "console.log(JSON.stringify([{}, {repeat: null}].map(m.repeatText)));")
    assert none == ["", ""]


def test_the_dashboard_lists_an_audit_as_after_audit_does():
    """model.js's auditRows on a report of after.audit: the rows ``after audit`` prints (a
    task that cannot be read, the occurrences not on time, or all of them, the extra runs),
    and auditParams reads the form's dates as UTC."""
    from datetime import UTC, datetime, timedelta

    from after import audit
    from after.rules.dates import format_date

    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    start = now - timedelta(hours=3)
    doc = {"_id": "t", "worker": "w", "job": {"name": "j"}, "status": "waiting",
           "date": format_date(now), "repeat": {"hours": 1},
           "after": {"anchor": format_date(start)}}
    runs = [{"_id": "a", "task": "t", "attempt": 1, "outcome": "done",
             "occurrence_date": format_date(start), "started": format_date(start)},
            {"_id": "b", "task": "t", "attempt": 1, "outcome": "done",
             "occurrence_date": format_date(start + timedelta(hours=1)),
             "started": format_date(start + timedelta(hours=1, minutes=5))},
            {"_id": "c", "task": "t:manual:x", "parent": "t", "kind": "manual",
             "attempt": 1, "outcome": "done", "occurrence_date": format_date(start),
             "started": format_date(start)}]
    report = audit.report(start, now, now, 60.0, [
        audit.audit_task(doc, runs, start, now, now),
        audit.audit_task({"_id": "bad", "worker": "w", "date": "soon"}, [], start, now, now)])
    got = node(f"import * as m from '{model_url()}';\n"
               f"const r = {json.dumps(report.as_json())};\n"
               "console.log(JSON.stringify([false, true].map((all) => m.auditRows(r, all)"
               ".map((x) => [x.task, x.verdict, x.reason, x.runs]))));")
    wanted = []
    for show_all in (False, True):
        rows = []
        for one in report.tasks:
            if one.error:
                rows.append([one.task, "error", f"cannot be read: {one.error}", None])
            rows += [[one.task, e.verdict, e.reason or "", len(e.runs)] for e in one.entries
                     if show_all or e.verdict != "on_time"]
            rows += [[one.task, "extra", f"{x['reason']}: {x['run']}", 1] for x in one.extra]
        wanted.append(rows)
    assert got == wanted
    assert [row[1] for row in got[1]] == ["error", "on_time", "late", "never", "pending",
                                          "extra"]
    params = node(f"import * as m from '{model_url()}';\n"
                  "console.log(JSON.stringify([m.auditParams({worker: 'w', from: "
                  "'2026-12-01T09:30', to: '', late: ' 5 '}), m.auditParams({from: 'x'}), "
                  "m.auditParams({})]));")
    assert params == [{"worker": "w", "from": "2026-12-01T09:30:00Z", "late": "5"}, None, {}]


def test_the_dashboard_says_a_catch_up_policy_as_after_show_does():
    """model.js's catchupText is after.rules.catchup's describe (issue 25); nothing for a task
    without one or with one that cannot be read."""
    from after.rules import catchup
    from after.rules.task import MAX_SECONDS

    policies = [{}, {"policy": "none"}, {"policy": "latest", "window": 90.5},
                {"policy": "all"}, {"policy": "all", "max": 24, "window": 3600}]
    docs = [{"_id": "t", "catchup": value} for value in policies]
    got = node(f"import * as m from '{model_url()}';\n"
               f"console.log(JSON.stringify({json.dumps(docs)}.map(m.catchupText)));")
    assert got == [catchup.describe(catchup.parse_catchup(value, MAX_SECONDS))
                   for value in policies]
    odd = node(f"import * as m from '{model_url()}';\n"
               "console.log(JSON.stringify([{}, {catchup: null}, {catchup: 'all'}, "
               "{catchup: {policy: 'often'}}].map(m.catchupText)));")
    assert odd == ["", "", "", ""]


def test_the_dashboard_says_a_rate_limit_as_after_show_does():
    """model.js's rateText is after.rules.task.describe_rate (issue 25, item 5); nothing for a
    task without one or with one that cannot be read."""
    from after.rules.task import describe_rate

    values = [{"key": "mail", "limit": 100, "per": 3600}, {"key": "api", "limit": 1,
                                                         "per": 0.25},
              {"key": "a.b:c-d", "limit": 1000, "per": 316224000}, None, "5/60", [],
              {"key": "mail", "limit": 0, "per": 60}, {"key": "mail", "limit": 5},
              {"key": "my key", "limit": 5, "per": 60}, {"key": "k", "limit": 5, "per": 0},
              {"key": "k", "limit": True, "per": 1}, {"key": "k", "limit": 5, "per": 60,
                                                      "burst": 1}]
    docs = [{"_id": "t", "rate": value} for value in values]
    got = node(f"import * as m from '{model_url()}';\n"
               f"console.log(JSON.stringify({json.dumps(docs)}.map(m.rateText)));")
    expected = [describe_rate(value) for value in values]
    assert got == expected
    assert expected[:2] == ["at most 100 begin in any 3600s with key mail",
                            "at most 1 begin in any 0.25s with key api"]
    assert expected[3:] == [""] * 9
