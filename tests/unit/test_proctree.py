"""after.worker.proctree: the processes under a run, read from /proc and killed (issue 24 item
10). The reading is pure and tested on made-up tables and generated trees; the kills on
real processes this test starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from hypothesis import given
from hypothesis import strategies as st

from after.worker import proctree

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"


def test_a_stat_line_is_read_after_the_commands_last_parenthesis():
    assert proctree.parse_stat("42 (sleep) S 7 42 42 0 -1 4194304") == (7, "S")
    assert proctree.parse_stat("43 (a) b (c)) Z 1 43 43 0 -1") == (1, "Z")
    assert proctree.parse_stat("44 ( ) R 2 44") == (2, "R")


def test_descendants_are_every_process_under_a_root_nearest_first():
    parents = {2: 1, 3: 2, 4: 2, 5: 3, 6: 1, 7: 6, 8: 5}
    assert proctree.descendants(2, parents) == [3, 4, 5, 8]
    assert proctree.descendants(6, parents) == [7]
    assert proctree.descendants(8, parents) == []
    assert proctree.descendants(99, parents) == []


@given(st.lists(st.integers(0, 40), min_size=1, max_size=40), st.integers(1, 41))
def test_descendants_of_a_generated_tree(links, root):
    # process k + 1 has parent links[k] (taken below k + 1: a tree, as the kernel keeps)
    parents = {k + 1: min(parent, k) for k, parent in enumerate(links)}

    def under(pid: int) -> bool:
        while pid in parents and pid != root:
            pid = parents[pid]
        return pid == root

    found = proctree.descendants(root, parents)
    assert sorted(found) == sorted(p for p in parents if p != root and under(p))
    assert len(found) == len(set(found))
    assert all(parents[p] == root or found.index(parents[p]) < found.index(p) for p in found)


def test_this_process_sees_the_processes_it_started(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        table = proctree.processes()
        assert table[child.pid] == os.getpid()
        assert child.pid in proctree.descendants(os.getpid(), table)
    finally:
        child.kill()
        child.wait()
    assert child.pid not in proctree.processes()  # reaped


def test_kill_tree_kills_a_subreapers_whole_tree_whatever_the_sessions(tmp_path):
    """A subreaper (as a run's process is) with a grandchild in a session of its own that
    ignores SIGTERM, and a daemon whose parent exited: all of them, and it, are killed."""
    pids = tmp_path / "pids"
    program = f"""
import os, subprocess, sys, time
from after.worker import proctree
assert proctree.adopt_orphans()
stubborn = subprocess.Popen([sys.executable, "-c", {STUBBORN!r}], start_new_session=True)
middle = os.fork()
if middle == 0:  # a double fork: the daemon's parent exits at once
    daemon = subprocess.Popen([sys.executable, "-c", {STUBBORN!r}], start_new_session=True)
    open({str(pids)!r} + ".d", "w").write(str(daemon.pid))
    os._exit(0)
os.waitpid(middle, 0)
open({str(pids)!r}, "w").write(str(stubborn.pid))
time.sleep(60)
"""
    root = subprocess.Popen([sys.executable, "-c", program])
    started: list[int] = []
    try:
        deadline = time.monotonic() + 20
        while not pids.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        started = [int(pids.read_text()), int((tmp_path / "pids.d").read_text())]
        table = proctree.processes()
        assert [table[pid] for pid in started] == [root.pid, root.pid]  # the daemon adopted
        assert proctree.kill_tree(root.pid) == 2
        root.wait(5)
        assert root.returncode == -signal.SIGKILL
        assert not set(started) & set(proctree.processes())
    finally:
        for pid in [root.pid, *started]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_without_proc_nothing_is_found(tmp_path):
    assert proctree.processes(tmp_path / "none") == {}
    assert proctree.kill_descendants(os.getpid(), tmp_path / "none") == 0
