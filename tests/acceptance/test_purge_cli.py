"""``after purge``: finished tasks by status, age and worker name, a dry run by default; and
the workers' retention (after.couch.retention) on each real server."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from after.couch.retention import Policy, Retainer
from after.rules.dates import format_date, utcnow

from .conftest import one_line_error, wait_for


def finished(docid, status="done", days=40, worker="billing", **fields):
    ended = format_date(utcnow() - timedelta(days=days))
    return {"_id": docid, "worker": worker, "date": ended, "status": status,
            "job": {"name": "hello", "arguments": []},
            "after": {"runs": 1, "last_run": {"outcome": "done", "ended": ended}}, **fields}


def run_record(task, number=1, parent=None):
    doc = {"_id": f"{task}#{number:08d}#abcdef", "type": "run", "task": task,
           "number": number, "outcome": "done", "started": format_date(utcnow())}
    if parent:
        doc["parent"] = parent
    return doc


@pytest.fixture
def filled(tasks):
    runs = f"{tasks.db}_runs"
    for doc in (finished("old-done"), finished("old-error", "error"),
                finished("old-canceled", "canceled"), finished("new-done", days=1),
                finished("other-name", worker="mailer"),
                finished("p:manual:2026-01-01T00:00:00.000Z",
                         occurrence={"task": "p", "kind": "manual",
                                     "date": "2026-01-01T00:00:00.000Z"}),
                {"_id": "still-waiting", "worker": "billing", "status": "waiting",
                 "date": format_date(utcnow() - timedelta(days=90)),
                 "job": {"name": "hello", "arguments": []}}):
        tasks.put(doc)
    for docid in ("old-done", "old-error", "new-done"):
        tasks.put(run_record(docid), db=runs)
    tasks.put(run_record("old-done", 2), db=runs)
    tasks.put(run_record("p:manual:2026-01-01T00:00:00.000Z", parent="p"), db=runs)
    return tasks


def ids(store, db=None):
    return sorted(d["_id"] for d in store.prefixed("", db=db) if not d["_id"].startswith("_"))


def test_purge_is_a_dry_run_until_yes(cli, filled):
    before = ids(filled)
    dry = cli.run("purge", "--older-than", "30d", "--worker", "billing")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-1] == (
        "would delete 4 tasks finished done, error or canceled of billing at least 30d ago, "
        "with their run records (a dry run: --yes deletes them)")
    assert "  old-done" in dry.stdout.splitlines() and "new-done" not in dry.stdout
    assert ids(filled) == before  # nothing deleted
    done = cli.run("purge", "--older-than", "30d", "--worker", "billing", "--status", "done",
                   "--yes")
    assert done.stdout == ("deleted 2 tasks finished done of billing at least 30d ago and 2 "
                           "run records\n")
    left = ids(filled)
    assert "old-done" not in left and "p:manual:2026-01-01T00:00:00.000Z" not in left
    assert {"old-error", "old-canceled", "new-done", "other-name", "still-waiting"} <= set(left)
    runs = ids(filled, f"{filled.db}_runs")
    assert not any(r.startswith("old-done#") for r in runs)
    assert "p:manual:2026-01-01T00:00:00.000Z#00000001#abcdef" in runs  # the parent's history
    everything = json.loads(cli.run("purge", "--yes", "--json").stdout)
    assert sorted(everything["tasks"]) == ["new-done", "old-canceled", "old-error",
                                           "other-name"]
    assert everything["deleted"] == 4 and everything["dry_run"] is False
    assert ids(filled) == ["still-waiting"]  # never a task that may still run
    assert cli.run("purge").stdout == "no task finished done, error or canceled\n"


@pytest.mark.parametrize("args, needle", [
    (("purge", "--older-than", "soon"), "'--older-than': 'soon' is not an age like 30d"),
    (("purge", "--older-than", "1M"), "'--older-than': '1M' is not an age"),
    (("purge", "--status", "waiting"), "'-s' / '--status': 'waiting' is not one of"),
    (("purge", "--worker", "a b"), "'--worker': 'a b' is not a worker name"),
])
def test_bad_purge_options_are_one_line(cli, args, needle):
    line = one_line_error(cli.run(*args))
    assert needle in line


def test_a_workers_retention_deletes_what_its_setting_keeps_no_longer(filled, tasks):
    retainer = Retainer(tasks, "billing", Policy(retain=30 * 86400, retain_extra=86400),
                        600, f"{tasks.db}_runs", lambda: True)
    assert retainer.round(utcnow()) == (4, 3)  # old-done (2 records), old-error (1)...
    left = ids(tasks)
    assert "new-done" in left and "other-name" in left and "still-waiting" in left
    assert not {"old-done", "old-error", "old-canceled",
                "p:manual:2026-01-01T00:00:00.000Z"} & set(left)
    assert retainer.round(utcnow()) == (0, 0)


def test_a_worker_process_applies_its_retention(cli, tasks, tmp_path):
    tasks.put(finished("long-done", worker="keeper"))
    tasks.put(finished("recent-done", worker="keeper", days=0.5))
    worker = cli.spawn("start", "keeper", "--poll", "1", "--retain", "86400",
                       AFTER_WORKER_RETAIN_EVERY="2")  # its first round after 0.2 s
    wait_for(lambda: "long-done" not in ids(tasks), timeout=30, what="the retention")
    assert "recent-done" in ids(tasks)
    worker.terminate()
    assert worker.wait(30) == 0
    logged = (cli.home / "keeper.log").read_text()
    assert "retention of keeper: deleted 1 finished task(s) and 0 run record(s)" in logged
