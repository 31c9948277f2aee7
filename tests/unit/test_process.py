"""Pid files (locked while their process runs), log tails, worker names, JSON log lines."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import time

import pytest

from after.process import (
    JsonFormatter,
    LockedPidFile,
    ProcessError,
    check_name,
    new_pid_path,
    pid_files,
    pid_line,
    process_start,
    stop_processes,
    tail,
)


def test_a_locked_pid_file_is_running_and_an_unlocked_one_is_stale(tmp_path):
    live = LockedPidFile(new_pid_path(tmp_path, "billing"))
    stale = new_pid_path(tmp_path, "billing")
    stale.write_text("999999")
    new_pid_path(tmp_path, "billing.eu")  # another name that shares a prefix
    try:
        files = {f.path: f for f in pid_files(tmp_path, "billing")}
        assert set(files) == {live.path, stale}
        assert files[live.path].running and files[live.path].pid > 0
        assert not files[stale].running and files[stale].pid == 999999
    finally:
        live.release()
    assert not live.path.exists()
    assert [f.name for f in pid_files(tmp_path)] == ["billing"]


def test_tail_reads_the_last_lines(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert tail(log, 3) == ["line 9997", "line 9998", "line 9999"]
    assert tail(log, 0) == []
    short = tmp_path / "short.log"
    short.write_text("only\n")
    assert tail(short, 50) == ["only"]


@pytest.mark.parametrize("name", ["billing", "eu.billing-2", "a_b", "X"])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "bad name", "../x", "-dash", "a/b", "x" * 101])
def test_bad_names(name):
    with pytest.raises(ProcessError, match="is not a worker name"):
        check_name(name)


def test_a_reused_pid_is_never_signalled(tmp_path):
    """The pid file names a live process that is not the one that wrote it."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path = new_pid_path(tmp_path, "billing")
        path.write_text(f"{stranger.pid} 12345\n")  # another start time: another process
        with open(path) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and someone holds the lock
            [found] = pid_files(tmp_path, "billing")
            assert found.locked and not found.same_process and not found.running
            assert stop_processes([found], timeout=0.5) == ([], [])
        time.sleep(0.2)
        assert stranger.poll() is None, "an unrelated process was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_forked_child_holding_the_lock_does_not_keep_a_dead_worker_running(tmp_path):
    path = new_pid_path(tmp_path, "billing")
    read, write = os.pipe()
    worker = os.fork()
    if worker == 0:  # the "worker": locks its pid file, forks a long-lived child, exits
        try:
            held = LockedPidFile(path)  # noqa: F841  (kept open across the fork)
            if os.fork() == 0:
                time.sleep(5)
                os._exit(0)
            os.write(write, b"x")
        finally:
            os._exit(0)
    os.waitpid(worker, 0)
    os.read(read, 1)
    [found] = pid_files(tmp_path, "billing")
    assert found.pid == worker and found.start is not None
    assert found.locked, "the forked child inherited the lock"
    assert not found.running
    assert stop_processes([found], timeout=0.5) == ([], [])


def test_the_pid_line_names_this_process():
    pid, start = pid_line(os.getpid()).split()
    assert int(pid) == os.getpid() and start == process_start(os.getpid()) != "?"
    assert process_start(2**22 + 12345) is None


def json_line(**extra) -> dict:
    record = logging.LogRecord("after.worker", logging.WARNING, __file__, 1, "task %s failed",
                               ("t1",), None)
    record.created, record.msecs = 1796115600.0025, 2.5  # 2026-12-01T09:00:00.002Z
    record.__dict__.update(extra)
    return json.loads(JsonFormatter().format(record))


def test_a_json_line_carries_a_jobs_traceback_as_its_exception():
    plain = json_line()
    assert plain == {"time": "2026-12-01T09:00:00.002Z", "level": "WARNING",
                     "pid": plain["pid"], "logger": "after.worker",
                     "message": "task t1 failed"}
    trace = "Traceback (most recent call last):\n  ...\nValueError: no\n"
    assert json_line(traceback=trace)["exception"] == trace.rstrip("\n")
    try:
        raise KeyError("here")
    except KeyError:
        raised = json_line(exc_info=sys.exc_info())["exception"]
    assert raised.startswith("Traceback") and raised.endswith("KeyError: 'here'")
