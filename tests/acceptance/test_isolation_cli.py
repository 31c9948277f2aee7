"""Isolated runs under a background worker (``after start -b``): the daemon's child processes
log to its log file, and ``after stop`` leaves neither a child, nor the fork server, nor a
lock that keeps the name from starting again."""

from __future__ import annotations

import os
import signal

from after.process import pid_files

from ..escapes import ESCAPES, cleanup, pids_of
from .conftest import task_doc, wait_for

LOGS = '''
import logging, os

def logs(task):
    logging.getLogger("jobs.logs").warning("isolated run of %s says hello", task.id)
    return {"pid": os.getpid(), "server": os.getppid()}
'''


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1].startswith("Z")


def test_a_background_worker_runs_isolated_jobs_and_stops_clean(cli, tasks, tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "logs.py").write_text(LOGS)
    started = cli.run("start", "bg", "-b", "--poll", "1", AFTER_JOBS=str(jobs))
    assert started.returncode == 0, started.stderr
    [worker] = pid_files(cli.home, "bg")
    doc = task_doc("hello", "bg", tmp_path / "unused", isolation="process")
    doc["job"] = {"name": "logs", "arguments": []}
    tasks.put(doc)
    done = wait_for(lambda: (d := tasks.get("hello"))["status"] == "done" and d,
                    what="the isolated run")
    result = done["after"]["last_run"]["result"]
    assert result["pid"] not in (worker.pid, None) and result["server"] != worker.pid
    log = cli.run("log", "bg", "-n", "200", AFTER_JOBS=str(jobs)).stdout
    assert "isolated run of hello says hello" in log  # the child logs to the worker's file
    stopped = cli.run("stop", "bg")
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: gone(result["server"]), timeout=10, what="the fork server to exit")
    assert gone(result["pid"])
    again = cli.run("start", "bg", "-b", "--poll", "1", AFTER_JOBS=str(jobs))
    assert again.returncode == 0, again.stderr  # no child holds the name's lock
    assert cli.run("stop", "bg").returncode == 0


def test_a_worker_killed_outright_takes_every_process_its_isolated_run_started(cli, tasks,
                                                                              tmp_path):
    """Issue 24 item 10, as found: `kill -9` of the worker; a grandchild of its isolated
    run, in a session of its own and ignoring SIGTERM, outlived it (a double-forked daemon
    too). Its run's process kills every process under it, then itself."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "escapes.py").write_text(ESCAPES)
    pidfile = tmp_path / "pids"
    worker = cli.spawn("start", "iso", "--poll", "1", AFTER_JOBS=str(jobs))
    doc = task_doc("escapes", "iso", tmp_path / "unused", isolation="process")
    doc["job"] = {"name": "escapes", "arguments": [str(pidfile)]}
    tasks.put(doc)
    try:
        started = pids_of(pidfile, within=30)
        assert not any(gone(pid) for pid in started)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        wait_for(lambda: all(gone(pid) for pid in started), timeout=5,
                 what="every process of the run killed")
    finally:
        cleanup(pidfile)
