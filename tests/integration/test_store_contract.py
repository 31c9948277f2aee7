"""The store contract: what the worker relies on from its database, held against the
in-memory fake (:mod:`after.couch.memstore`, ``[memory]``), pouchdb-server and CouchDB alike, in the
way huey's storage tests run one suite against every backend. A behaviour the fake gets wrong
shows here first, not as a worker test that passes on the fake and fails on a server."""

from __future__ import annotations

import threading
import time

import pytest

from after.config import Settings
from after.couch.store import Conflict, NotFound
from after.rules.dates import parse_date
from after.worker.polling import query_due

BRANCH_A, BRANCH_B = "1-" + "a" * 32, "1-" + "b" * 32


@pytest.fixture
def runs(contract_store):
    """The runs database: it takes any document (the tasks database validates them)."""
    return f"{contract_store.db}_runs"


def task(docid: str, *, worker: str = "w", status: str = "waiting",
         date: str = "2026-12-01T09:00:00Z") -> dict:
    return {"_id": docid, "worker": worker, "date": date, "status": status,
            "job": {"name": "hello", "arguments": []}}


class TestDocuments:
    def test_put_sets_the_revision_and_get_reads_it_back(self, contract_store, runs):
        doc = {"_id": "a/b?c", "n": 1}
        answer = contract_store.put(doc, db=runs)
        assert doc["_rev"] == answer["rev"] and doc["_rev"].startswith("1-")
        assert answer["status"] in (201, 202)
        assert contract_store.get("a/b?c", db=runs) == doc

    def test_a_document_is_kept_as_json_and_a_value_json_cannot_carry_is_refused(
            self, contract_store, runs):
        """What a server keeps is what JSON carries: a tuple comes back a list, and a set
        (say, one put in a heartbeat's status by mistake) is refused before anything is
        written, on the fake as on a server."""
        contract_store.put({"_id": "shape", "pair": (1, 2)}, db=runs)
        assert contract_store.get("shape", db=runs)["pair"] == [1, 2]
        with pytest.raises(TypeError):
            contract_store.put({"_id": "set", "dead": frozenset({"p"})}, db=runs)
        with pytest.raises(NotFound):
            contract_store.get("set", db=runs)

    def test_a_stale_or_missing_revision_is_a_conflict(self, contract_store, runs):
        doc = {"_id": "x", "n": 1}
        contract_store.put(doc, db=runs)
        stale = dict(doc)
        contract_store.put(doc, db=runs)
        assert doc["_rev"].startswith("2-")
        with pytest.raises(Conflict):
            contract_store.put(stale, db=runs)
        with pytest.raises(Conflict):
            contract_store.put({"_id": "x", "n": 3}, db=runs)
        assert contract_store.get("x", db=runs)["_rev"] == doc["_rev"]

    def test_missing_documents(self, contract_store, runs):
        with pytest.raises(NotFound, match="missing"):
            contract_store.get("nothing", db=runs)
        assert contract_store.get_or_none("nothing", db=runs) is None
        assert contract_store.bulk_get(["nothing"], db=runs) == {}

    def test_a_deleted_document_is_gone_and_can_be_created_again(self, contract_store, runs):
        doc = {"_id": "d"}
        contract_store.put(doc, db=runs)
        contract_store.delete("d", doc["_rev"], db=runs)
        assert contract_store.get_or_none("d", db=runs) is None
        # its versions, read alone, end in a tombstone; a document that never was has none
        # (after.worker.reads tells them apart: a task just written may not be on the
        # copies a cluster's read of many documents asks yet)
        assert [leaf.get("_deleted") for leaf in contract_store.leaves("d", db=runs)] == [True]
        with pytest.raises(NotFound):
            contract_store.leaves("nothing", db=runs)
        again = {"_id": "d", "n": 2}
        contract_store.put(again, db=runs)
        assert contract_store.get("d", db=runs)["n"] == 2

    def test_prefixed_lists_by_id(self, contract_store, runs):
        contract_store.bulk_docs([{"_id": i} for i in ("w@b", "w@a", "v@a", "w@c")], db=runs)
        assert [d["_id"] for d in contract_store.prefixed("w@", db=runs)] == \
            ["w@a", "w@b", "w@c"]


class TestBulk:
    def test_each_document_succeeds_or_conflicts_on_its_own(self, contract_store, runs):
        old, other = {"_id": "old"}, {"_id": "other"}
        contract_store.bulk_docs([old, other], db=runs)
        stale = {"_id": "other", "_rev": "1-" + "0" * 32}
        fresh = {"_id": "new"}
        results = contract_store.bulk_docs([stale, fresh, dict(old)], db=runs)
        assert [r.get("error") for r in results] == ["conflict", None, None]
        assert fresh["_rev"].startswith("1-")
        assert contract_store.get("old", db=runs)["_rev"].startswith("2-")
        found = contract_store.bulk_get(["new", "old", "gone"], db=runs)
        assert sorted(found) == ["new", "old"] and found["new"]["_rev"] == fresh["_rev"]

    def test_reads_by_id_give_the_winner_of_branches_and_leave_deleted_ones_out(
            self, contract_store, runs, server_kind):
        """What the worker's read back relies on (``revisions``, ``bulk_get``): the revision
        every reader by id is served, a live branch before a deleted one, deleted and missing
        documents alike left out, an id asked twice read once, and more ids than a page."""
        contract_store.bulk_docs([{"_id": "split", "_rev": rev, "branch": rev[2]}
                                  for rev in (BRANCH_A, BRANCH_B)], db=runs, new_edits=False)
        # the winning branch deleted: the other, live, is what a read by id is served
        contract_store.bulk_docs([{"_id": "half", "_rev": rev, "branch": rev[2]}
                                  for rev in (BRANCH_A, BRANCH_B)], db=runs, new_edits=False)
        contract_store.bulk_docs([{"_id": "half", "_rev": BRANCH_B, "_deleted": True}],
                                 db=runs)
        gone = {"_id": "gone"}
        contract_store.put(gone, db=runs)
        contract_store.delete("gone", gone["_rev"], db=runs)
        many = [{"_id": f"m{i:04d}", "n": i} for i in range(2100)]
        contract_store.bulk_docs(many, db=runs)
        ids = ["split", "half", "gone", "never", "split"] + [d["_id"] for d in many]
        found = contract_store.bulk_get(ids, db=runs)
        assert found["split"]["_rev"] == BRANCH_B and found["split"]["branch"] == "b"
        assert found["half"]["_rev"] == BRANCH_A and found["half"]["branch"] == "a"
        assert "gone" not in found and "never" not in found
        assert all("_conflicts" not in doc and "_revisions" not in doc
                   for doc in found.values())
        assert [found[d["_id"]]["n"] for d in many] == list(range(2100))
        with_conflicts = contract_store.bulk_get(["split", "half", "m0000"], db=runs,
                                                 conflicts=True)
        assert with_conflicts["split"]["_rev"] == BRANCH_B
        assert "_conflicts" not in with_conflicts["half"]  # (its other leaf is deleted)
        assert "_conflicts" not in with_conflicts["m0000"]
        if server_kind != "pouchdb":  # (its _bulk_get answers the winner alone)
            assert with_conflicts["split"]["_conflicts"] == [BRANCH_A]
        revisions = contract_store.revisions(ids, db=runs)
        assert revisions["split"] == BRANCH_B and revisions["half"] == BRANCH_A
        assert revisions["gone"] is None and revisions["never"] is None
        assert [revisions[d["_id"]] for d in many] == [d["_rev"] for d in many]

    def test_the_same_document_twice_in_one_request_is_refused(self, contract_store, runs):
        with pytest.raises(ValueError, match="the same document twice"):
            contract_store.bulk_docs([{"_id": "x"}, {"_id": "x"}], db=runs)
        assert contract_store.get_or_none("x", db=runs) is None

    def test_conflicting_branches_are_reported_and_resolved(self, contract_store, runs):
        branches = [{"_id": "split", "_rev": rev, "branch": rev[2]}
                    for rev in (BRANCH_A, BRANCH_B)]
        contract_store.bulk_docs(branches, db=runs, new_edits=False)
        current = contract_store.get("split", db=runs, conflicts=True)
        assert current["branch"] == "b" and current["_conflicts"] == [BRANCH_A]
        contract_store.bulk_docs([{"_id": "split", "_rev": BRANCH_A, "_deleted": True}],
                                 db=runs)
        assert "_conflicts" not in contract_store.get("split", db=runs, conflicts=True)

    def test_leaves_are_every_branch_deleted_ones_included(self, contract_store, runs):
        branches = [{"_id": "leafy", "_rev": rev, "branch": rev[2]}
                    for rev in (BRANCH_A, BRANCH_B)]
        contract_store.bulk_docs(branches, db=runs, new_edits=False)
        contract_store.bulk_docs([{"_id": "leafy", "_rev": BRANCH_A, "_deleted": True}],
                                 db=runs)
        leaves = sorted(contract_store.leaves("leafy", db=runs),
                        key=lambda d: d.get("_deleted", False))
        assert [d.get("_deleted", False) for d in leaves] == [False, True]
        assert leaves[0]["_rev"] == BRANCH_B and leaves[0]["branch"] == "b"
        assert leaves[1]["_rev"].startswith("2-")
        with pytest.raises(NotFound):
            contract_store.leaves("no-such-document", db=runs)


class TestQueries:
    def test_the_due_view_ranges_by_worker_status_and_date(self, contract_store):
        contract_store.bulk_docs([
            task("early", date="2026-12-01T09:00:00Z"),
            task("late", date="2026-12-01T10:00:00Z"),
            task("held", status="scheduled"),
            task("other", worker="v"),
        ])
        low = 1796115600000  # 2026-12-01T09:00:00Z
        rows = contract_store.view("after", "due", startkey=["w", "waiting", 0],
                                   endkey=["w", "waiting", low + 1000], include_docs=True)
        assert [(r["id"], r["key"]) for r in rows] == [("early", ["w", "waiting", low, "early"])]
        assert rows[0]["doc"]["worker"] == "w"
        rows = contract_store.view("after", "due", startkey=["w", "scheduled", 0],
                                   endkey=["w", "scheduled", {}])
        assert [r["id"] for r in rows] == ["held"]
        rows = contract_store.view("after", "due", startkey=["w", "waiting", 0],
                                   endkey=["w", "waiting", {}], limit=1)
        assert [r["id"] for r in rows] == ["early"]

    def test_recent_reads_the_newest_changes_backwards(self, contract_store):
        contract_store.bulk_docs([task(f"old-{n}") for n in range(3)])
        contract_store.bulk_docs([task("gone"), task("new")])
        gone = contract_store.get("gone")
        contract_store.delete("gone", gone["_rev"])
        old = contract_store.get("old-0")
        contract_store.put(old)  # changed again: now the newest change
        ids, complete = contract_store.recent_ids(3)
        assert "gone" not in ids and 1 <= len(ids) <= 3  # the deletion is left out
        assert not complete  # 7 changes (the design documents' too), 3 read
        docs = contract_store.bulk_get(ids)
        assert all(docs[i]["_rev"] == contract_store.get(i)["_rev"] for i in ids)
        sharded = hasattr(contract_store, "info") and "vendor" in contract_store.info()
        if not sharded:  # one sequence: strictly the newest first (CouchDB merges its
            assert ids == ["old-0", "new"]  # shards' feeds, q=2: the newest per shard)
        ids, complete = contract_store.recent_ids(100)
        assert {docid for docid in ids if docid[0] != "_"} == {"old-0", "old-1", "old-2", "new"}
        assert complete

    def test_find_with_a_range_fields_and_a_limit(self, contract_store, runs):
        contract_store.bulk_docs([{"_id": f"t#{n}", "task": "t", "number": n}
                                  for n in range(1, 6)] + [{"_id": "u#1", "task": "u",
                                                            "number": 1}], db=runs)
        docs, _ = contract_store.find({"task": "t", "number": {"$lte": 3}}, db=runs,
                                      fields=["_id", "_rev"], limit=100)
        assert sorted(d["_id"] for d in docs) == ["t#1", "t#2", "t#3"]
        assert all(set(d) == {"_id", "_rev"} for d in docs)
        docs, _ = contract_store.find({"task": "t"}, db=runs, limit=2)
        assert len(docs) == 2


    def test_a_backlog_due_at_one_instant_is_paged_by_key_as_it_leaves_the_index(
            self, contract_store):
        """20 tasks of one date, pages of 8: each page starts after the last key read, so the
        tasks of a page that finish before the next (their rows gone from an index brought up
        to date meanwhile, as CouchDB 3 does in the background) make the next skip none."""
        docs = [task(f"t{n:02d}") for n in range(20)]
        contract_store.bulk_docs(docs)
        settings, now = Settings(batch=2), parse_date("2026-12-01T09:00:01Z")
        seen, pages = [], 0
        found, cursor = query_due(contract_store, "w", settings, now)
        while True:
            pages += 1
            seen += [doc["_id"] for doc in found]
            contract_store.bulk_docs([{"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True}
                                      for doc in found])
            contract_store.view("after", "due", startkey=["w"], endkey=["w", {}])  # up to date
            if not cursor or pages > 5:
                break
            found, cursor = query_due(contract_store, "w", settings, now, cursor)
        assert sorted(seen) == [doc["_id"] for doc in docs]
        assert len(seen) == len(set(seen)) and pages == 3


class TestChanges:
    def test_a_follower_gets_each_later_change_with_its_document(self, contract_store):
        contract_store.put(task("before"))
        since = contract_store.update_seq()
        seen: list[dict] = []
        arrived = threading.Event()

        def on_change(change):
            seen.append(change)
            if change["id"] == "last":
                arrived.set()

        follower = contract_store.follow(on_change, since=since, selector={"worker": "w"},
                                         heartbeat=0.5).start()
        try:
            mine = task("mine")
            contract_store.put(mine)
            contract_store.put(task("theirs", worker="v"))
            mine["status"] = "scheduled"
            contract_store.put(mine)
            contract_store.put(task("last"))
            assert arrived.wait(10), seen
        finally:
            follower.stop()
        ids = [c["id"] for c in seen]
        assert "before" not in ids and "theirs" not in ids
        assert ids[-1] == "last"
        latest = [c for c in seen if c["id"] == "mine"][-1]
        assert latest["doc"]["status"] == "scheduled" and latest["doc"]["_rev"] == mine["_rev"]

    def test_update_seq_moves_on_with_each_write(self, contract_store, runs):
        first = contract_store.update_seq()
        contract_store.put(task("x"))
        deadline = time.monotonic() + 5
        while contract_store.update_seq() == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert contract_store.update_seq() != first
