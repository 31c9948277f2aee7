"""The job threads (after.worker.runner.Runner): whatever happens on one, the loop hears of
the run (a run it never hears of holds its task for ever)."""

from __future__ import annotations

import queue
from datetime import UTC, datetime

import pytest

from after.jobs import TaskContext
from after.rules import task as rules
from after.worker.runner import Runner

DATE = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


def test_a_run_whose_job_thread_fails_before_the_job_is_reported_failed_with_why():
    """A clock read that raised on a job thread (after.couch.clock, before it was mended)
    left the run in its future, never begun nor reported: its task stayed held for ever,
    with nothing in the log."""
    ran, posted = [], queue.SimpleQueue()

    def clock() -> float:
        raise RuntimeError("deque mutated during iteration")

    runner = Runner(1, posted.put, clock=clock)
    try:
        doc = {"_id": "t1", "worker": "w", "job": {"name": "j"}}
        spec = rules.Spec("t1", "w", DATE, "j", [])
        runner._execute("t1", "tok", spec, TaskContext(doc, DATE, 1),
                        lambda task: ran.append(task.id))
    finally:
        runner.shutdown()
    kind, (docid, token, outcome, trace, response) = posted.get(timeout=1)
    assert (kind, docid, token, ran) == ("finished", "t1", "tok", [])
    assert outcome.outcome == rules.FAILED and outcome.started <= outcome.ended
    assert outcome.error == ("the worker could not carry out the run: RuntimeError: deque "
                             "mutated during iteration")
    assert posted.empty()


def test_a_job_that_raises_is_a_failed_run_as_before():
    posted = queue.SimpleQueue()
    runner = Runner(1, posted.put)

    def job(task):
        raise ValueError("no")

    try:
        doc = {"_id": "t2", "worker": "w", "job": {"name": "j"}}
        spec = rules.Spec("t2", "w", DATE, "j", [])
        runner._execute("t2", "tok", spec, TaskContext(doc, DATE, 1), job)
    finally:
        runner.shutdown()
    kind, (docid, _token, outcome, trace, _response) = posted.get(timeout=1)
    assert (kind, docid, outcome.outcome, outcome.error) == ("finished", "t2", rules.FAILED,
                                                            "ValueError: no")
    assert "raise ValueError" in trace


def test_the_job_threads_run_jobs_in_order_and_a_job_taken_back_never_begins():
    import threading

    from after.worker.runner import JobThreads

    pool, ran, gate, first = JobThreads(1), [], threading.Event(), threading.Event()

    def job(n):
        ran.append(n)
        if n == 0:
            first.set()
            gate.wait(2)

    try:
        held = pool.submit(job, 0)  # the one thread is on it
        assert first.wait(2)
        queued = [pool.submit(job, n) for n in (1, 2, 3)]
        assert not held.cancel()  # begun: too late to take back
        assert queued[1].cancel() and not queued[1].cancel()  # taken back, once
        gate.set()
        done = pool.submit(lambda: None)
        for _ in range(200):
            if ran == [0, 1, 3] and not pool._queued:
                break
            threading.Event().wait(0.01)
        assert ran == [0, 1, 3] and not done.cancel()
    finally:
        pool.shutdown()


def test_a_job_that_raises_leaves_its_thread_to_the_next_and_shutdown_drops_the_queued():
    import threading

    from after.worker.runner import JobThreads

    pool, ran, gate, begun = JobThreads(1), [], threading.Event(), threading.Event()

    def boom():
        raise RuntimeError("a bug")

    def slow():
        begun.set()
        gate.wait(2)

    pool.submit(boom)
    pool.submit(ran.append, "after the error")
    pool.submit(slow)
    assert begun.wait(2) and ran == ["after the error"]
    pool.submit(ran.append, "never")
    pool.shutdown()
    gate.set()
    pool._threads[0].join(2)
    assert ran == ["after the error"]
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(ran.append, "closed")
