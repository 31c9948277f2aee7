"""Pid files (locked while their process runs), log tails, worker names."""

from __future__ import annotations

import pytest

from after.process import LockedPidFile, ProcessError, check_name, new_pid_path, pid_files, tail


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
