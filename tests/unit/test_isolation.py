"""after.worker.isolation: a job run in a child process, without a server.

Real child processes (of the fork server this test process starts), real signals: what a
job sees, what comes back, and what is killed. Pids are checked gone with ``os.kill(pid,
0)``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from after.jobs import JobRegistry, TaskContext
from after.process import LockedPidFile
from after.worker import isolation

from ..escapes import ESCAPES, cleanup, pids_of

ROOT = Path(__file__).resolve().parents[2]
DATE = datetime(2026, 12, 1, 9, tzinfo=UTC)

JOBS = {
    "stoppable": '''
def stoppable(task, seconds):
    """Waits for its cancel, at most ``seconds``."""
    return "stopped" if task.canceled.wait(seconds) else "not stopped"
''',
    "seen": '''
import os, signal

def seen(task, *args, **kwargs):
    """What the job sees of its task and its process."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    pid = os.getpid()
    return {"pid": pid, "leads": [os.getsid(0) == pid, os.getpgid(0) == pid],
            "id": task.id, "worker": task.worker, "job": task.job, "attempt": task.attempt,
            "date": task.date.isoformat(), "arguments": [args, kwargs],
            "doc_keys": sorted(task.doc), "fds": sorted(fds.values()),
            "sigterm": getattr(signal.getsignal(signal.SIGTERM), "__qualname__", None)}
''',
    "fails": '''
def fails(task):
    raise ValueError("no such invoice: 1234")
''',
    "ends": '''
import os, signal

def ends(task, how):
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), getattr(signal, how))
''',
    "hangs": '''
import os, subprocess, sys, time

def hangs(task, path):
    """Start a grandchild, write both pids, then hang."""
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(path, "w") as out:
        out.write(f"{os.getpid()} {grandchild.pid}")
    time.sleep(60)
''',
    "escapes": ESCAPES,
    "touches": '''
from pathlib import Path

def touches(task, path):
    Path(path).write_text("ran")
''',
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jobs")
    for name, source in JOBS.items():
        (folder / f"{name}.py").write_text(source)
    return JobRegistry(folder)


def run(registry, name, arguments=None, deadline=None, child=None):
    doc = {"_id": "inv-1", "worker": "billing", "status": "running",
           "job": {"name": name, "arguments": arguments}}
    context = TaskContext(doc, DATE, 2)
    try:
        func = registry.resolve(name)
    except Exception as exc:
        func = exc
    return isolation.run(child or isolation.Child(), registry, func, context, arguments,
                         deadline)


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return True  # a zombie: dead, its parent has not reaped it yet
        time.sleep(0.05)
    return False


def test_the_job_runs_in_a_child_of_its_own_and_sees_its_task(registry, tmp_path):
    pidfile = LockedPidFile(tmp_path / "w.12345678.pid")  # the worker's, locked
    try:
        reply = run(registry, "seen", ["1234", "x"])
    finally:
        pidfile.release()
    assert reply.ok, reply.error
    seen = reply.result
    assert seen["pid"] != os.getpid()
    assert seen["leads"] == [True, True]  # a session and process group of its own
    assert {k: seen[k] for k in ("id", "worker", "job", "attempt", "date", "arguments")} == {
        "id": "inv-1", "worker": "billing", "job": "seen", "attempt": 2,
        "date": "2026-12-01T09:00:00+00:00", "arguments": [["1234", "x"], {}]}
    assert seen["doc_keys"] == ["_id", "job", "status", "worker"]
    assert str(tmp_path / "w.12345678.pid") not in seen["fds"]  # no pid-file lock
    # not the worker's handler: the one that sets task.canceled
    assert seen["sigterm"] == "_canceler.<locals>.cancel"


def test_sigterm_tells_the_job_its_task_was_canceled(registry):
    child = isolation.Child()
    threading.Timer(1.0, child.terminate).start()
    started = time.monotonic()
    reply = run(registry, "stoppable", [20], child=child)
    assert reply.ok, reply.error
    assert reply.result == "stopped" and time.monotonic() - started < 10


def test_keyword_arguments_pass_as_in_a_thread(registry):
    reply = run(registry, "seen", {"customer": "acme"})
    assert reply.result["arguments"] == [[], {"customer": "acme"}]


def test_an_exception_comes_back_as_one_line_with_its_traceback(registry):
    reply = run(registry, "fails")
    assert not reply.ok
    assert reply.error == "ValueError: no such invoice: 1234"
    assert 'raise ValueError("no such invoice: 1234")' in reply.trace
    assert reply.trace.splitlines()[0] == "Traceback (most recent call last):"


@pytest.mark.parametrize(("how", "message"), [
    ("exit", "the job ended its process (exit code 3)"),
    ("SIGSEGV", "the job ended its process (killed by signal 11, SIGSEGV)"),
    ("SIGKILL", "the job ended its process (killed by signal 9, SIGKILL)"),
])
def test_a_child_that_dies_fails_the_run_and_this_process_lives_on(registry, how, message):
    reply = run(registry, "ends", [how])
    assert (reply.ok, reply.error) == (False, message)


def test_past_its_deadline_the_child_and_its_own_children_are_killed(registry, tmp_path):
    pids = tmp_path / "pids"
    began = time.monotonic()
    reply = run(registry, "hangs", [str(pids)], deadline=time.monotonic() + 1.5)
    took = time.monotonic() - began
    assert reply is None  # timed out
    assert 1.5 <= took < 3.0, took
    child, grandchild = map(int, pids.read_text().split())
    assert gone(child) and gone(grandchild)


def test_past_its_deadline_every_process_the_job_started_is_killed(registry, tmp_path):
    """Issue 24 item 10: a grandchild in a session of its own that ignores SIGTERM, and a
    double-forked daemon, outlived the timeout's kill of the run's process group."""
    pids = tmp_path / "pids"
    try:
        reply = run(registry, "escapes", [str(pids)], deadline=time.monotonic() + 5)
        assert reply is None  # timed out
        child, grandchild, daemon = pids_of(pids)
        assert gone(child) and gone(grandchild) and gone(daemon)
    finally:
        cleanup(pids)


def test_kill_from_another_thread_frees_the_waiting_thread_at_once(registry, tmp_path):
    pids = tmp_path / "pids"
    child = isolation.Child()
    answer = []
    thread = threading.Thread(target=lambda: answer.append(
        run(registry, "hangs", [str(pids)], child=child)))
    thread.start()
    deadline = time.monotonic() + 10
    while not (pids.exists() and pids.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed_at = time.monotonic()
    child.kill("timeout")  # what the loop does at the run's deadline
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - killed_at < 2
    assert answer == [None]
    assert all(gone(int(pid)) for pid in pids.read_text().split())


def test_a_job_that_cannot_be_resolved_starts_no_child(registry):
    reply = run(registry, "missing")
    assert not reply.ok and reply.error.startswith("JobError: job 'missing' not found")


def test_a_child_that_comes_to_its_job_past_not_after_does_not_call_it(registry, tmp_path):
    mark = tmp_path / "ran"
    doc = {"_id": "inv-1", "worker": "billing", "job": {"name": "touches"}}
    context = TaskContext(doc, DATE, 1)
    func = registry.resolve("touches")
    with pytest.raises(isolation.NotBegun):
        isolation.run(isolation.Child(), registry, func, context, [str(mark)],
                      not_after=time.monotonic())
    assert not mark.exists()
    reply = isolation.run(isolation.Child(), registry, func, context, [str(mark)],
                          not_after=time.monotonic() + 30)
    assert reply.ok, reply.error
    assert mark.read_text() == "ran"


def test_a_worker_frozen_between_its_lease_check_and_the_child_does_not_begin_the_run(
        registry, tmp_path):
    """Chaos seed 27 on the cluster: a worker SIGSTOPped just after its job thread checked
    the lease, thawed past it, started the child, and the job ran although another process
    had taken the task over and run it. The freeze is modelled by a clock whose reading
    takes 0.3 s and reads 0.05 s before the lease ends: the child sees it has lapsed."""
    from after.rules import task as rules
    from after.worker.runner import Runner

    mark = tmp_path / "ran"
    doc = {"_id": "inv-1", "worker": "billing", "job": {"name": "touches"}}
    posted = []
    lease_until = time.monotonic() + 0.1

    def frozen_after_reading() -> float:
        time.sleep(0.3)
        return lease_until - 0.05

    runner = Runner(1, posted.append, registry, mono=frozen_after_reading,
                    lease=lambda: lease_until)
    try:
        spec = rules.Spec("inv-1", "billing", DATE, "touches", [str(mark)])
        runner._execute("inv-1", "t1", spec, TaskContext(doc, DATE, 1),
                        registry.resolve("touches"), isolation.Child())
    finally:
        runner.shutdown()
    assert posted == [("unbegun", ("inv-1", "t1"))]
    assert not mark.exists()


def test_the_built_in_http_job_runs_isolated(registry):
    reply = run(registry, "http", {"url": "http://127.0.0.1:9/", "timeout": 2})
    assert not reply.ok
    assert reply.error.startswith("HttpJobFailed: ConnectError calling GET http://127.0.0.1:9/")


ORPHAN = '''
import sys, time
from datetime import UTC, datetime
from after.worker import isolation
from after.jobs import JobRegistry, TaskContext

# No `if __name__ == "__main__"` guard: a child that ran this script again would say so.
registry = JobRegistry(sys.argv[1])
doc = {"_id": "t", "worker": "w", "job": {"name": "hangs", "arguments": [sys.argv[2]]}}
isolation.run(isolation.Child(), registry, registry.resolve("hangs"),
              TaskContext(doc, datetime.now(UTC), 1), [sys.argv[2]])
print("the run ended", flush=True)
'''


def test_a_child_whose_worker_is_killed_kills_itself_and_its_children(registry, tmp_path):
    """kill -9 of the worker: its isolated run must not run on beside the re-run that
    another process of the name makes once the lease is over."""
    script, pids = tmp_path / "worker.py", tmp_path / "pids"
    script.write_text(textwrap.dedent(ORPHAN))
    worker = subprocess.Popen([sys.executable, str(script), str(registry.root), str(pids)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not (pids.exists() and pids.read_text()) and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stdout.read()
            time.sleep(0.05)
        child, grandchild = map(int, pids.read_text().split())
        assert not gone(child, within=0.3)  # it runs while its worker lives
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert gone(child) and gone(grandchild)
        output = worker.stdout.read().decode()
        assert "the run ended" not in output and "Error" not in output, output
    finally:
        if worker.poll() is None:
            worker.kill()


SLOW_IMPORT = '''
import os, sys
from pathlib import Path

MARK = Path(os.environ["AFTER_TEST_MARK"])
MARK.write_text(str(os.getpid()))
sum(range(100_000_000))  # C code that holds the GIL: the child's watch on its worker waits

def slow(task, path):
    Path(path).write_text("ran")
'''

WORKER = '''
import sys
from datetime import UTC, datetime
from after.worker import isolation
from after.jobs import JobRegistry, TaskContext

def slow(task, path):
    """Stands for the folder's job, which this process does not import (the child does)."""


registry = JobRegistry(sys.argv[1])
doc = {"_id": "t", "worker": "w", "job": {"name": "slow", "arguments": [sys.argv[2]]}}
isolation.run(isolation.Child(), registry, slow, TaskContext(doc, datetime.now(UTC), 1),
              [sys.argv[2]])
'''


def test_a_child_whose_worker_died_while_it_started_does_not_begin_the_job(tmp_path):
    """Chaos, on a loaded machine: a worker was killed while its isolated run's child
    started, and the job began a second later, before the child's watch on its worker ran:
    after the next owner had taken the run over. Here the job's module holds the GIL while
    the worker is killed; the child then finds its worker gone and does not call the job."""
    folder, ran, mark = tmp_path / "jobs", tmp_path / "ran", tmp_path / "importing"
    folder.mkdir()
    (folder / "slow.py").write_text(SLOW_IMPORT)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    worker = subprocess.Popen([sys.executable, str(script), str(folder), str(ran)], cwd=ROOT,
                              env={**os.environ, "AFTER_TEST_MARK": str(mark)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not (mark.exists() and mark.read_text()) and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stdout.read()
            time.sleep(0.01)
        child = int(mark.read_text())
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert gone(child, within=20)
        assert not ran.exists()
    finally:
        if worker.poll() is None:
            worker.kill()


def test_a_worker_killed_takes_every_process_its_run_started(registry, tmp_path):
    """Issue 24 item 10: kill -9 of the worker; the processes its isolated run started in
    sessions of their own (one ignoring SIGTERM, one double-forked) outlived it."""
    script, pids = tmp_path / "worker.py", tmp_path / "pids"
    script.write_text(textwrap.dedent(ORPHAN).replace('"hangs"', '"escapes"'))
    worker = subprocess.Popen([sys.executable, str(script), str(registry.root), str(pids)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        started = pids_of(pids)
        assert not any(gone(pid, within=0.3) for pid in started)  # they run while it lives
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert [pid for pid in started if not gone(pid)] == []
    finally:
        if worker.poll() is None:
            worker.kill()
        cleanup(pids)


def test_the_main_module_is_not_run_again_in_a_child():
    data = {"name": "after-job-x", "init_main_from_path": "/nonexistent/main.py",
            "init_main_from_name": "nonexistent_module"}
    prepared = []
    isolation._prepare(data, prepare=prepared.append)
    assert prepared == [{"name": "after-job-x"}]
    other = {"name": "SpawnProcess-1", "init_main_from_path": "/app/main.py"}
    isolation._prepare(other, prepare=prepared.append)
    assert prepared[-1] == other  # another library's children are left as they are
    assert json.dumps(prepared)  # (plain data)


def test_a_registered_job_is_imported_in_the_child_from_its_module_a_folder_job_is_not(
        registry):
    from after import builtin_jobs

    assert isolation._module_of(registry.resolve("seen")) is None  # the registry loads it
    assert isolation._module_of(builtin_jobs.JOBS["http"]) == "after.builtin_jobs"

    def in_main(task):
        pass

    in_main.__module__ = "__main__"
    assert isolation._module_of(in_main) is None  # never the worker's script again


def test_after_show_says_how_runs_are_isolated_and_why():
    from after.cli.tasks import isolation_text

    assert isolation_text({}, {}) == "thread"
    assert isolation_text({"isolation": "process"}, {}) == "process"
    assert isolation_text({"isolation": "process"}, {"isolated": "2026-12-01T09:00:00Z"}) == \
        "process"
    assert isolation_text({"isolation": "thread"}, {"isolated": "2026-12-01T09:00:00Z"}) == (
        "process (since 2026-12-01T09:00:00Z: a run was interrupted by the death of its "
        "process)")
