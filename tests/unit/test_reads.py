"""after.worker.reads: the read-back of held tasks, against a store whose reads of many
documents miss some (a cluster copy that lags; no server)."""

from __future__ import annotations

from after.couch.memstore import MemStore
from after.worker.reads import Reads


class Lagging:
    """Reads of many documents leave ``hidden`` out, as a cluster's copy that has not got
    them yet does; a read of one document's versions, from every copy, has them."""

    def __init__(self, store: MemStore, hidden: set[str]):
        self.store, self.hidden = store, hidden

    def revisions(self, ids, **kw):
        return {i: (None if i in self.hidden else rev)
                for i, rev in self.store.revisions(ids, **kw).items()}

    def bulk_get(self, ids, **kw):
        return {i: d for i, d in self.store.bulk_get(ids, **kw).items() if i not in self.hidden}

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_task_missing_from_a_lagging_read_is_not_taken_for_deleted():
    memory = MemStore("t")
    memory.create_database()
    held = {}
    for docid in ("written", "deleted", "edited"):
        doc = {"_id": docid, "worker": "w"}
        memory.put(doc)
        held[docid] = doc["_rev"]
    memory.delete("deleted", held["deleted"])
    memory.put({"_id": "edited", "_rev": held["edited"], "worker": "w", "note": "moved"})
    posted = []
    reads = Reads(Lagging(memory, {"written", "deleted", "edited"}), posted.append)
    reads._check({**held, "never": "1-x"})
    # the one written is read alone and found as held (not deleted: confirmed); the deleted
    # one ends in a tombstone; the edited one is decided again; one on no copy yet is left
    # held, to be read again
    assert [(kind, value if kind in ("deleted", "confirmed") else (value["_id"], value["_rev"]))
            for kind, value in posted] == [
        ("deleted", "deleted"), ("recheck", ("edited", memory.get("edited")["_rev"])),
        ("confirmed", ({"written": held["written"]}, ["never"]))]


class StaleBeats(Lagging):
    """Reads of many documents answer from a copy that has an older heartbeat (``old``)."""

    def __init__(self, store: MemStore, old: dict):
        super().__init__(store, set())
        self.old = old

    def bulk_get(self, ids, **kw):
        found = self.store.bulk_get(ids, **kw)
        return {**found, self.old["_id"]: self.old} if self.old["_id"] in found else found


def test_a_dead_process_lease_is_read_from_every_copy_not_from_one_that_lags():
    """A taker withdraws a dead process's intent whose run was due after that process's
    lease ended (it never began it). Read from a copy that lags, the lease ends earlier,
    and the intent of a run it did begin would go as never begun: a second run with no
    record of the first (a chaos seed, once, on a loaded cluster)."""
    memory = MemStore("t")
    for db in ("t", "t_runs", "t_workers"):
        memory.create_database(db)
    beat = {"_id": "w@h:1:a", "type": "worker", "expires": "2026-12-06T07:30:35.000Z"}
    memory.put(beat, db="t_workers")
    old = dict(beat)
    memory.put({**beat, "expires": "2026-12-06T07:30:39.000Z"}, db="t_workers")
    memory.put({"_id": "short-035", "worker": "w", "status": "waiting"})
    memory.put({"_id": "short-035#00000001#x", "task": "short-035", "process": "w@h:1:a",
                "outcome": "intended", "scheduled": "2026-12-06T07:30:37.228Z"}, db="t_runs")
    reads = Reads(StaleBeats(memory, old), [].append, runs="t_runs")
    [(intent, task, expires)] = reads.find_orphans(["w@h:1:a"])
    assert intent["_id"] == "short-035#00000001#x" and task["_id"] == "short-035"
    assert expires == "2026-12-06T07:30:39.000Z"  # the last heartbeat that landed
    memory.delete("w@h:1:a", memory.get("w@h:1:a", db="t_workers")["_rev"], db="t_workers")
    assert reads.find_orphans(["w@h:1:a"])[0][2] is None  # it left: no lease to weigh


def test_a_read_back_older_than_the_version_held_is_read_again_not_decided():
    """A task held at a revision this process wrote (answered 202 on a cluster: one copy
    has it): a read back that finds the older revision on the copies that answered asks to
    be read again; it is neither confirmed nor decided again."""
    memory = MemStore("t")
    memory.create_database()
    doc = {"_id": "t", "worker": "w"}
    memory.put(doc)
    older = doc["_rev"]
    memory.put({**doc, "note": "ours"})
    newer = memory.get("t")["_rev"]
    posted = []

    class Behind(Lagging):
        def revisions(self, ids, **kw):
            return {i: older for i in ids}

        def bulk_get(self, ids, **kw):
            return {i: {**doc, "_rev": older} for i in ids}

    Reads(Behind(memory, set()), posted.append)._check({"t": newer})
    assert posted == [("confirmed", ({}, ["t"]))]
    posted.clear()
    Reads(memory, posted.append)._check({"t": newer})
    assert posted == [("confirmed", ({"t": newer}, []))]


def test_checks_queued_one_after_another_are_read_at_once():
    """Each turn of the loop asks for what it made ready; queued while a read is out, the
    asks are one read (one at a time, they fell behind a burst on a busy cluster), in
    their place among the other requests, the newest revision asked for each task."""
    memory = MemStore("t")
    memory.create_database()
    reads = Reads(memory, [].append)
    reads.check({"a": "1-x"})
    reads.check({"b": "1-x", "a": "2-y"})
    reads.orphans(["gone"])
    reads.check({"c": "1-x"})
    reads.stop()
    waiting: list = []
    requests = []
    while (request := reads._next(waiting)) is not None:
        requests.append(request)
    assert requests == [("check", ({"a": "2-y", "b": "1-x"}, {})), ("orphans", ["gone"]),
                        ("check", ({"c": "1-x"}, {}))]


class Broken(Lagging):
    """A query of open intents that fails with what no store should raise (a bug)."""

    def find_all(self, selector, **kw):
        raise AttributeError("'NoneType' object has no attribute 'get'")


def test_a_read_of_orphans_that_fails_unexpectedly_still_answers_the_loop():
    """Found by the pouchdb chaos test in CI (seed 180023): pouchdb-server's ``_find`` sent
    ``null`` for an intent deleted as it was read, the reads thread failed on it and never
    answered, and the partitions taken from the frozen process waited for that answer for
    ever (40 of 200 tasks never ran). Whatever the failure, the loop hears back."""
    import queue

    memory = MemStore("t")
    memory.create_database()
    posted: queue.SimpleQueue = queue.SimpleQueue()
    reads = Reads(Broken(memory, set()), posted.put).start()
    try:
        reads.orphans(["dead"])
        assert posted.get(timeout=5) == ("orphans", (["dead"], []))
    finally:
        reads.stop()


class StaleQuery(Lagging):
    """The query of open intents answers from a copy that lags: it still shows ``stale``
    (withdrawn, or recorded, since); a read by id has the current versions."""

    def __init__(self, store: MemStore, stale: list[dict]):
        super().__init__(store, set())
        self.stale = stale

    def find_all(self, selector, **kw):
        return iter(self.stale)


def test_open_intents_found_by_the_query_are_read_back_by_id_and_decided_as_they_are_now():
    """Chaos seed 1934192822: a successor's query read a lagging copy that still showed a
    live process's intent open, withdrawn since on the other copies; it recorded the run of
    that number (run later by its process) over it there, beside the withdrawal: the run
    was recorded twice. The intents the query finds are read back by id first."""
    memory = MemStore("t")
    memory.create_database()
    runs = "t_runs"
    memory.create_database(runs)
    base = {"type": "run", "task": "t", "number": 1, "process": "p", "outcome": "intended",
            "scheduled": "2026-12-06T10:00:00.000Z"}
    withdrawn, recorded, still = ({**base, "_id": f"t#{n}"} for n in (1, 2, 3))
    for doc in (withdrawn, recorded, still):
        memory.put(doc, db=runs)
    stale = [dict(withdrawn), dict(recorded), dict(still)]
    memory.delete(withdrawn["_id"], withdrawn["_rev"], db=runs)
    memory.put({**recorded, "outcome": "done"}, db=runs)
    posted = []
    reads = Reads(StaleQuery(memory, stale), posted.append, runs=runs)
    found = reads.find_orphans(["p"])
    assert [(doc["_id"], doc["outcome"]) for doc, _task, _expires in found] == \
        [("t#3", "intended")]
