"""A worker running in a thread of the test process, against the real test server."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from after.couch.store import Store, StoreError
from after.jobs import JobRegistry
from after.rules.dates import format_date, parse_date, utcnow
from after.worker import Settings, Worker

# visible 0.3: a run that goes on for longer is shown running in its task
FAST = dict(horizon=60, poll=0.5, heartbeat=0.5, lease=3, grace=5, pool=4, visible=0.3)


class Harness:
    """Starts workers on a database and waits for task states."""

    def __init__(self, url: str, store: Store, jobs: Path, tmp: Path):
        self.url = url  # with its credentials: the store's own URL has them apart
        self.store = store
        self.jobs = jobs
        self.tmp = tmp
        self.workers: list[tuple[Worker, threading.Thread, Store]] = []
        self.exit_codes: list[int] = []

    def start(self, name: str = "w", store_class: type[Store] = Store, **settings) -> Worker:
        store = store_class(self.url, self.store.db)
        worker = Worker(store, name, JobRegistry(self.jobs), Settings(**{**FAST, **settings}))
        thread = threading.Thread(target=lambda: self.exit_codes.append(worker.run()),
                                  daemon=True)
        thread.start()
        assert worker.ready.wait(15), "the worker did not start"
        self.workers.append((worker, thread, store))
        return worker

    def stop(self, worker: Worker | None = None, timeout: float = 15) -> None:
        for w, thread, store in list(self.workers):
            if worker is None or w is worker:
                w.request_stop()
                thread.join(timeout)
                assert not thread.is_alive(), "the worker did not stop"
                store.close()
                self.workers.remove((w, thread, store))

    def put(self, docid: str, *, job: str = "record", arguments=None, delay: float = 0.0,
            worker: str = "w", **fields) -> dict:
        if arguments is None and job == "record":
            arguments = [str(self.record_file)]
        doc = {
            "_id": docid,
            "worker": worker,
            "date": format_date(utcnow() + timedelta(seconds=delay)),
            "job": {"name": job, "arguments": arguments if arguments is not None else []},
            "status": "waiting",
            **fields,
        }
        self.store.put(doc)
        return doc

    @property
    def record_file(self) -> Path:
        return self.tmp / "runs.jsonl"

    def recorded(self) -> list[dict]:
        if not self.record_file.exists():
            return []
        text = self.record_file.read_text()
        # a job may be writing its line as this reads: only whole lines count
        return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]

    def wait_status(self, docid: str, *statuses: str, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        doc = None
        while time.monotonic() < deadline:
            doc = self.store.get_or_none(docid)
            if doc and doc.get("status") in statuses:
                return doc
            time.sleep(0.05)
        raise AssertionError(f"{docid} never reached {statuses}: {doc}")

    def wait(self, predicate, timeout: float = 15, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def settled(self, worker: Worker, *docids: str, timeout: float = 15) -> None:
        """Wait until ``worker`` holds none of ``docids`` and has no write pending: nothing
        can run them again now (what a fixed sleep before "nothing else ran" used to mean)."""
        self.wait(lambda: not worker.pending and not any(i in worker.held for i in docids),
                  timeout, f"{', '.join(docids)} to be settled")

    def past(self, date: str, margin: float = 0.2) -> None:
        """Wait until ``date`` (a task's) is ``margin`` seconds past: a run due then would
        have started. Bounded by the date, not a fixed sleep."""
        left = (parse_date(date) - utcnow()).total_seconds() + margin
        if left > 0:
            time.sleep(left)

    def runs(self, docid: str) -> list[dict]:
        for attempt in range(3):
            try:
                docs = list(self.store.find_all({"task": docid}, db=f"{self.store.db}_runs"))
                break
            except StoreError:
                # pouchdb-server's _find can fail on a document deleted while it reads
                # ("Cannot read properties of undefined"): the worker prunes run records.
                if attempt == 2:
                    raise
                time.sleep(0.1)
        docs = [d for d in docs if d.get("outcome") != "intended"]  # records, not intents
        return sorted(docs, key=lambda d: (d["number"], d["started"]))

    def wait_runs(self, docid: str, count: int = 1, timeout: float = 15) -> list[dict]:
        """The run records of ``docid`` once there are ``count``: the worker writes them on
        its own thread, after the task's own status, so a task can read ``done`` first."""
        return self.wait(lambda: len(runs := self.runs(docid)) >= count and runs,
                         timeout, f"{count} run record(s) of {docid}")


@pytest.fixture
def harness(couch_url, store, jobs_dir, tmp_path):
    h = Harness(couch_url, store, jobs_dir, tmp_path)
    yield h
    h.stop()
