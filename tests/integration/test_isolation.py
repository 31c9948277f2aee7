"""``"isolation": "process"``: runs in a child process, against the real test servers.

The worker runs in a thread of this test process (see conftest.Harness), so a job that
reports ``os.getpid()`` tells which process ran it.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

import pytest

from after.rules.dates import format_date, parse_date, utcnow

from ..conftest import ROOT
from ..escapes import ESCAPES, cleanup, pids_of
from .test_http_jobs import Endpoint
from .test_worker import cancel

JOBS = {
    "whoami": '''
import os

def whoami(task, tag):
    return {"pid": os.getpid(), "tag": tag, "attempt": task.attempt, "id": task.id}
''',
    "hangs": '''
import os, time

def hangs(task, path):
    with open(path, "w") as out:
        out.write(str(os.getpid()))
    time.sleep(60)
''',
    "ends": '''
import os

def ends(task):
    os._exit(1)
''',
    "escapes": ESCAPES,
}


@pytest.fixture
def jobs_dir(tmp_path):
    folder = tmp_path / "jobs"
    folder.mkdir()
    for name in ("record", "sleep"):
        shutil.copy(ROOT / "jobs" / f"{name}.py", folder)
    for name, source in JOBS.items():
        (folder / f"{name}.py").write_text(source)
    return folder


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z")


def test_an_isolated_run_is_recorded_as_a_thread_run_is(harness):
    harness.start()
    harness.put("iso", job="whoami", arguments=["child"], isolation="process")
    harness.put("thr", job="whoami", arguments=["thread"])
    iso = harness.wait_status("iso", "done")
    thr = harness.wait_status("thr", "done")
    assert thr["after"]["last_run"]["result"]["pid"] == os.getpid()
    result = iso["after"]["last_run"]["result"]
    assert result["pid"] != os.getpid()
    assert result == {"pid": result["pid"], "tag": "child", "attempt": 1, "id": "iso"}
    [run] = harness.wait(lambda: harness.runs("iso"), what="the run record")
    assert run["outcome"] == "done" and run["result"] == result
    assert run["isolation"] == "process"
    [thread_run] = harness.wait(lambda: harness.runs("thr"), what="the thread's run record")
    assert "isolation" not in thread_run
    assert not alive(result["pid"])


def test_an_isolated_timeout_kills_the_child_and_frees_the_job_thread_at_once(harness,
                                                                             tmp_path):
    """Pool of 1: a thread job past its timeout would keep its thread (and the next task
    would wait for it); an isolated one is killed, and the next task runs on time."""
    harness.start(pool=1)
    pidfile = tmp_path / "hung.pid"
    first = harness.put("hung", job="hangs", arguments=[str(pidfile)], timeout=1.0,
                        isolation="process", delay=1.0)
    due = parse_date(first["date"]) + timedelta(seconds=1.5)  # 0.5 s after the timeout
    harness.put("next", date=format_date(due))
    hung = harness.wait_status("hung", "error", timeout=15)
    assert hung["after"]["last_run"]["outcome"] == "timeout"
    assert hung["after"]["error"] == ("timeout: the run took longer than 1s; its process was "
                                      "killed")
    pid = int(pidfile.read_text())
    harness.wait(lambda: not alive(pid), timeout=5, what="the child killed")
    harness.wait_status("next", "done")
    [ran] = harness.recorded()
    late = (parse_date(ran["at"]) - due).total_seconds()
    print(f"\n[isolation] the next task started {late * 1000:.0f} ms after its date, "
          "after a killed timeout on the only job thread")
    assert late < 0.5


def test_an_isolated_job_that_ends_its_process_fails_and_the_worker_carries_on(harness):
    worker = harness.start()
    harness.put("ends", job="ends", isolation="process")
    doc = harness.wait_status("ends", "error")
    assert doc["after"]["error"] == "the job ended its process (exit code 1)"
    [run] = harness.wait(lambda: harness.runs("ends"), what="the run record")
    assert run["outcome"] == "error"
    assert run["error"]["message"] == "the job ended its process (exit code 1)"
    harness.put("after-it")
    harness.wait_status("after-it", "done")
    assert not worker.stop_requested.is_set() and len(harness.recorded()) == 1


def test_a_task_marked_by_an_interruption_runs_isolated_whatever_its_isolation(harness):
    """after.isolated (written by the takeover of a run whose process died) sends every
    later run of the task to a child process."""
    harness.start()
    harness.put("marked", job="whoami", arguments=["m"], isolation="thread",
                after={"isolated": format_date(utcnow())})
    doc = harness.wait_status("marked", "done")
    assert doc["after"]["last_run"]["result"]["pid"] != os.getpid()
    assert doc["after"]["isolated"]


def test_the_http_job_runs_isolated_and_its_response_is_recorded(harness):
    endpoint = Endpoint()
    try:
        harness.start()
        harness.put("call", job="http", isolation="process",
                    arguments={"url": f"{endpoint.url}/hook", "method": "POST",
                               "json": {"n": 1}})
        doc = harness.wait_status("call", "done")
        assert doc["after"]["last_run"]["result"]["status"] == 200
        [run] = harness.wait(lambda: harness.runs("call"), what="the run record")
        assert run["response"]["status"] == 200
        assert run["response"]["body"] == {"path": "/hook", "status": 200}
        assert endpoint.calls_to("/hook") == 1
    finally:
        endpoint.close()


def test_a_graceful_stop_lets_an_isolated_run_finish_within_the_grace(harness):
    worker = harness.start(grace=10)
    harness.put("long", job="sleep", arguments=[1.5], isolation="process")
    harness.wait_status("long", "running")
    time.sleep(0.3)  # the child is running the job
    harness.stop(worker)
    assert harness.exit_codes == [0]
    doc = harness.store.get("long")
    assert doc["status"] == "done" and doc["after"]["last_run"]["result"] == 1.5


def test_past_the_grace_an_isolated_run_is_killed_and_its_task_handed_back(harness,
                                                                          tmp_path):
    """A thread past the grace runs on, unrecorded, until the process exits; a child is
    killed, so it cannot run beside the re-run another process makes."""
    worker = harness.start(grace=1)
    pidfile = tmp_path / "hung.pid"
    harness.put("hung", job="hangs", arguments=[str(pidfile)], isolation="process")
    harness.wait_status("hung", "running")
    harness.wait(lambda: pidfile.exists() and pidfile.read_text(), what="the child's pid")
    pid = int(pidfile.read_text())
    harness.stop(worker)
    harness.wait(lambda: not alive(pid), timeout=5, what="the child killed")
    doc = harness.store.get("hung")
    assert doc["status"] == "waiting" and "owner" not in doc["after"]
    [run] = harness.wait(lambda: harness.runs("hung"), what="the run record")
    assert run["outcome"] == "interrupted"


def group_of(pgid: int) -> list[int]:
    """The live processes of the process group ``pgid`` (from /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while this read
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.parametrize("how", ["timeout", "grace", "cancel"])
def test_every_process_an_isolated_job_started_is_killed_with_its_run(harness, store,
                                                                      tmp_path, how):
    """Issue 24 item 10: past its timeout, past the grace of a stop, and past the grace of
    a cancel (issue 25 item 1: the job never looks at ``task.canceled``), the processes the
    job started in sessions of their own (one ignoring SIGTERM, one double-forked) are
    killed with the run's process, and its process group is gone."""
    pidfile = tmp_path / "pids"
    worker = harness.start(grace=1)
    fields = {"timeout": 6.0} if how == "timeout" else {}
    harness.put("escapes", job="escapes", arguments=[str(pidfile)], isolation="process",
                **fields)
    try:
        started = pids_of(pidfile)
        assert all(alive(pid) for pid in started)
        assert started[0] in group_of(started[0])  # the run leads a group of its own
        if how == "timeout":
            doc = harness.wait_status("escapes", "error", timeout=15)
            assert doc["after"]["last_run"]["outcome"] == "timeout"
        elif how == "cancel":
            cancel(store, "escapes")
            asked = time.monotonic()
            doc = harness.wait_status("escapes", "canceled", timeout=15)
            assert 4 <= time.monotonic() - asked < 8  # the grace: 5 s
            last = doc["after"]["last_run"]
            assert last["outcome"] == "canceled" and 4000 <= last["duration_ms"] < 30_000
            [run] = harness.wait_runs("escapes")
            assert run["outcome"] == "canceled" and run["isolation"] == "process"
        else:
            harness.stop(worker)
        harness.wait(lambda: not any(alive(pid) for pid in started), timeout=5,
                     what="every process of the run killed")
        assert group_of(started[0]) == []
    finally:
        cleanup(pidfile)
