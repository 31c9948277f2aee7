"""The revision CouchDB serves among a document's leaves (pure)."""

from __future__ import annotations

from after.couch.store import winner


def test_the_longest_history_wins_then_the_highest_revision_id():
    leaves = [{"_rev": "3-aa"}, {"_rev": "4-00"}, {"_rev": "4-ff"}, {"_rev": "10-01"}]
    best = winner(leaves)
    assert best["_rev"] == "10-01"  # 10 > 4, compared as numbers
    assert best["_conflicts"] == ["4-ff", "4-00", "3-aa"]
    assert winner([{"_rev": "2-ab"}, {"_rev": "2-ac"}])["_rev"] == "2-ac"


def test_a_live_leaf_beats_a_deleted_one_and_deleted_ones_are_no_conflict():
    best = winner([{"_rev": "5-ff", "_deleted": True}, {"_rev": "2-00"}])
    assert best["_rev"] == "2-00" and "_conflicts" not in best
    assert winner([{"_rev": "5-ff", "_deleted": True}])["_deleted"] is True
    assert winner([]) is None


def test_the_leaves_are_not_changed():
    leaves = [{"_rev": "1-a"}, {"_rev": "1-b"}]
    winner(leaves)
    assert leaves == [{"_rev": "1-a"}, {"_rev": "1-b"}]
