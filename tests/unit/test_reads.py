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
    # the one written is read alone and found as held (not deleted); the deleted one ends
    # in a tombstone; the edited one is decided again; one on no copy yet is left held
    assert [(kind, value if kind == "deleted" else (value["_id"], value["_rev"]))
            for kind, value in posted] == [
        ("recheck", ("written", held["written"])), ("deleted", "deleted"),
        ("recheck", ("edited", memory.get("edited")["_rev"]))]
