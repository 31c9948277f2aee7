"""Leaves read with their histories (``open_revs=all`` or ``_bulk_get?revs=true``): a copy of
a cluster that lags answers with an ancestor of another copy's leaf, which is not a branch
(after.couch.store.tips); the winner is then CouchDB's among the tips."""

from __future__ import annotations

from after.couch.store import tips, winner


def leaf(rev: str, history: list[str], **fields) -> dict:
    position = int(rev.split("-")[0])
    return {"_id": "t", "_rev": rev, **fields,
            "_revisions": {"start": position, "ids": history}}


def test_an_ancestor_from_a_copy_that_lags_is_no_branch_and_a_deletion_beats_it():
    lagging = leaf("2-b", ["b", "a"], status="waiting")
    deleted = leaf("3-c", ["c", "b", "a"], _deleted=True)
    found = tips([lagging, deleted])
    assert [doc["_rev"] for doc in found] == ["3-c"]
    assert all("_revisions" not in doc for doc in found)
    assert winner(found)["_deleted"]  # gone; the ancestor alone would have read as live


def test_branches_stay_and_the_winner_is_couchdbs():
    one = leaf("2-x", ["x", "a"], branch="x")
    other = leaf("2-y", ["y", "a"], branch="y")
    found = tips([one, other])
    assert sorted(doc["_rev"] for doc in found) == ["2-x", "2-y"]
    best = winner(found)
    assert best["branch"] == "y" and best["_conflicts"] == ["2-x"]


def test_leaves_without_histories_are_kept_as_they_are():
    docs = [{"_id": "t", "_rev": "1-a"}, {"_id": "t", "_rev": "1-b", "_deleted": True}]
    assert tips([dict(d) for d in docs]) == docs
