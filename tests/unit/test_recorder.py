"""after.worker.runner.Recorder: how a run's record is written over its intent, against the
in-memory store (held to CouchDB's by ``tests/integration/test_store_contract.py``)."""

from __future__ import annotations

import pytest

from after.config import runs_db
from after.couch import schema
from after.couch.memstore import MemStore
from after.rules import task as rules
from after.worker.intents import INTENDED
from after.worker.runner import Recorder

ID = "t#00000001#aaaaaa"


@pytest.fixture
def store() -> MemStore:
    store = MemStore("tasks")
    schema.setup(store)
    return store


def record(outcome: str, process: str = "w@a:1:aaaaaa") -> dict:
    return {"_id": ID, "type": "run", "task": "t", "number": 1, "outcome": outcome,
            "process": process}


def written(store: MemStore, *records: dict) -> dict[str, str]:
    """Each record written over the intent by a recorder of its own, in turn: what the runs
    database holds then, id by outcome."""
    db = runs_db(store.db)
    store.put({**record(INTENDED), "_id": ID}, db=db)
    intent_rev = store.get(ID, db=db)["_rev"]
    for run in records:
        recorder = Recorder(store, db, keep=100, batch=10)
        recorder.record({**run, "_rev": intent_rev})  # each read the intent before the other
        recorder.stop()
    docs, _ = store.find({"task": "t"}, db=db, limit=10)
    return {doc["_id"]: doc["outcome"] for doc in docs}


def test_a_record_written_over_the_intent_replaces_it(store):
    assert written(store, record(rules.OK)) == {ID: rules.OK}


def test_a_run_that_ended_after_it_was_recorded_interrupted_is_kept_beside_marked_late(store):
    held = written(store, record(rules.INTERRUPTED), record(rules.OK))
    assert held == {ID: rules.INTERRUPTED, ID + rules.LATE_SUFFIX: rules.OK}


def test_an_interrupted_verdict_on_a_run_recorded_interrupted_already_is_dropped(store):
    """A successor that read a dead process's intent twice records the run twice (taking
    the task over, then from its last_run): the second is the same run, not a late end."""
    held = written(store, record(rules.INTERRUPTED), record(rules.INTERRUPTED))
    assert held == {ID: rules.INTERRUPTED}


def test_an_interrupted_verdict_over_the_runs_own_end_is_kept_beside(store):
    """Chaos seed 1520737144: the run's process, thawed, ended it done before the verdict of
    the process that took it over (and ran it again) was written: the verdict is kept, and
    stands for the run (after.audit.one_per_run)."""
    held = written(store, record(rules.OK), record(rules.INTERRUPTED))
    assert held == {ID: rules.OK, ID + rules.LATE_SUFFIX: rules.INTERRUPTED}
