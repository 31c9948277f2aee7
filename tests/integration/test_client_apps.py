"""The Client for applications, on each real server with a worker in this process:
``wait``, ``schedule_many`` in one ``_bulk_docs``, the job checked when the jobs are known,
the warning for a worker name no live process serves, and the asyncio flavour."""

from __future__ import annotations

import asyncio
import time
import warnings

import pytest

from after.aio import AsyncClient
from after.client import Client, TaskError, TaskNotFound, UnservedWorker
from after.jobs import JobRegistry


@pytest.fixture
def client(couch_url, store, jobs_dir):
    with Client(couch_url, store.db, jobs=jobs_dir) as client:
        yield client


class Counting:
    """Counts the requests a store sends (the transport, not a fake of CouchDB)."""

    def __init__(self, store):
        self.calls: list[tuple[str, str]] = []
        original = store.request

        def request(method, path, **kwargs):
            self.calls.append((method, path))
            return original(method, path, **kwargs)

        store.request = request


def test_wait_returns_the_finished_task_as_soon_as_the_worker_writes_it(client, harness):
    harness.start("w")
    task_id = client.schedule("noop", worker="w")
    started = time.monotonic()
    doc = client.wait(task_id, timeout=15)
    assert doc["status"] == "done" and doc["_id"] == task_id
    assert time.monotonic() - started < 5
    failing = client.schedule("fail", worker="w", kwargs={"message": "boom"})
    assert client.wait(failing, 15)["after"]["error"] == "RuntimeError: boom"


def test_wait_for_a_run_of_a_repeating_task_and_the_timeout(client, harness):
    harness.start("w")
    task_id = client.schedule("noop", worker="w", every="1s", at="+1s")
    doc = client.wait(task_id, timeout=15, run=True)
    assert doc["after"]["last_run"]["outcome"] == "done"
    assert doc["status"] in ("waiting", "scheduled", "running")  # the series goes on
    later = client.schedule("noop", worker="w", at="+1h")
    with pytest.raises(TimeoutError, match=f"task {later} is still (waiting|scheduled) "
                                           "after 0.5 s"):
        client.wait(later, timeout=0.5)
    with pytest.raises(TaskNotFound):
        client.wait("no-such-task", timeout=1)


def test_schedule_many_writes_in_one_bulk_request(client, store):
    counting = Counting(client.store)
    ids = client.schedule_many(
        [{"job": "hello", "args": [f"n{k}"], "worker": "w", "at": "+1h"} for k in range(50)]
        + [{"job": "hello", "worker": "w", "id": "fixed", "every": "1d"}])
    assert len(ids) == 51 and ids[-1] == "fixed"
    posts = [path for method, path in counting.calls if method == "POST"]
    # the task given an id read first (one request), then every task in one write
    assert posts == [f"{store.db}/_bulk_get", f"{store.db}/_bulk_docs"]
    assert store.get(ids[7])["job"] == {"name": "hello", "arguments": ["n7"]}
    assert store.get("fixed")["repeat"] == {"days": 1}
    # the same again: an upsert for the task with an id, unchanged so not written
    rev = store.get("fixed")["_rev"]
    client.schedule_many([{"job": "hello", "worker": "w", "id": "fixed", "every": "1d"}])
    assert store.get("fixed")["_rev"] == rev
    client.schedule_many([{"job": "hello", "worker": "w", "id": "fixed", "every": "2d"}])
    assert store.get("fixed")["repeat"] == {"days": 2}


@pytest.mark.parametrize("items, message", [
    ([{"job": "hello", "worker": "w"}, {"job": "hello", "worker": "w", "at": "soon"}],
     r"^tasks\[1\]: at: 'soon' is not"),
    ([{"job": "hello", "worker": "w", "colour": "red"}],
     r"^tasks\[0\]: schedule\(\) got an unexpected keyword argument 'colour'"),
    ([{"job": "hello", "worker": "w", "args": "Ada"}], r"^tasks\[0\]: args: a list"),
    ([{"worker": "w"}], r"^tasks\[0\]: expected a dict of schedule\(\)'s arguments"),
    ([{"job": "nosuchjob", "worker": "w"}], r"^tasks\[0\]: job.name: job 'nosuchjob' not "
                                            "found in jobs folder"),
    ([{"job": "hello", "worker": "w", "args": [1, 2, 3]}],
     r"^tasks\[0\]: job.arguments: job 'hello' cannot take these arguments"),
    ([{"job": "hello", "worker": "w", "id": "x"}, {"job": "noop", "worker": "w", "id": "x"}],
     "^id: 'x' is given more than once"),
])
def test_schedule_many_refuses_before_writing_anything(client, store, items, message):
    with pytest.raises(TaskError, match=message):
        client.schedule_many(items)
    assert store.find({"worker": "w"})[0] == []


def test_the_job_is_checked_when_the_jobs_are_known(couch_url, store, jobs_dir, tmp_path):
    with Client(couch_url, store.db, jobs=jobs_dir) as checked:
        with pytest.raises(TaskError, match="^job.name: job 'nosuchjob' not found"):
            checked.schedule("nosuchjob", worker="w")
        with pytest.raises(TaskError, match="^job.arguments: job 'hello' cannot take"):
            checked.schedule("hello", "a", "b", worker="w")
        assert checked.schedule("http", worker="w", kwargs={"url": "http://x"})
    with Client(couch_url, store.db, jobs=JobRegistry(tmp_path / "none")) as builtins:
        with pytest.raises(TaskError, match="the jobs folder .* does not exist"):
            builtins.schedule("hello", worker="w")
    with Client(couch_url, store.db) as unknown:  # no jobs known: the workers decide
        assert unknown.schedule("nosuchjob", worker="w")


def test_schedule_warns_once_when_no_live_process_serves_the_name(client, harness):
    counting = Counting(client.store)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", UnservedWorker)
        client.schedule("noop", worker="nobody", at="+1h")
        client.schedule_many([{"job": "noop", "worker": "nobody", "at": "+1h"}] * 3)
        client.schedule("noop", worker="other", at="+1h")
    assert [w.category for w in caught] == [UnservedWorker, UnservedWorker]
    assert str(caught[0].message).startswith("no live process serves the worker name nobody")
    assert "worker name other" in str(caught[1].message)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    reads = [path for _, path in counting.calls if path.startswith(f"{client.db}_workers")]
    assert len(reads) == 2  # once per name
    harness.start("served", lease=30)  # live all along, however slow the machine
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            client.schedule("noop", worker="served", at="+1h")
    # (only the client's warnings: a ResourceWarning of another test's socket may land here)
    assert [str(w.message) for w in caught if issubclass(w.category, UnservedWorker)] == []


def test_the_asyncio_flavour(couch_url, store, jobs_dir, harness):
    harness.start("w")

    async def main():
        async with AsyncClient(couch_url, store.db, jobs=jobs_dir) as client:
            first = await client.schedule("noop", worker="w")
            many = await client.schedule_many([{"job": "noop", "worker": "w"}] * 3)
            done = await asyncio.gather(*(client.wait(i, timeout=15) for i in [first, *many]))
            later = await client.schedule("noop", worker="w", at="+1h")
            waiting = asyncio.create_task(client.wait(later))
            await asyncio.sleep(0.3)
            waiting.cancel()  # a wait can be cancelled: no thread is left waiting
            with pytest.raises(asyncio.CancelledError):
                await waiting
            with pytest.raises(TimeoutError):
                await client.wait(later, timeout=0.3)
            return done, await client.get(first), await client.runs(first), \
                await client.tasks(worker="w", status="done")

    done, doc, runs, tasks = asyncio.run(main())
    assert [d["status"] for d in done] == ["done"] * 4
    assert doc["status"] == "done"
    assert len(tasks) == 4
    assert runs == [] or runs[0]["task"] == doc["_id"]  # records are written on their own
