"""after.worker.partitions: which process owns which partition of a worker name; pure."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from after.worker import partitions as parts
from after.worker.partitions import PARTITIONS, assign, free_for, part_doc, plan

A, B, C, D = "w@a:1:x", "w@b:2:y", "w@c:3:z", "w@d:4:q"


def test_a_task_falls_in_one_partition_the_same_everywhere():
    assert parts.partition_of("weekly-billing") == parts.partition_of("weekly-billing")
    spread = Counter(parts.partition_of(f"task-{i}") for i in range(64_000))
    assert set(spread) == set(range(PARTITIONS))
    assert min(spread.values()) > 800  # about 1,000 each
    assert 0 <= parts.partition_of("\ud800 odd ids") < PARTITIONS  # any string, surrogates too


def test_every_partition_has_one_owner_and_no_process_more_than_its_share():
    for live in ([A], [A, B], [A, B, C], [A, B, C, D]):
        owners = assign(live)
        assert sorted(owners) == list(range(PARTITIONS))
        load = Counter(owners.values())
        assert set(load) == set(live)
        assert max(load.values()) - min(load.values()) <= 1


def test_every_process_computes_the_same_assignment_whatever_the_order():
    live = [A, B, C]
    assert assign(live) == assign(list(reversed(live))) == assign(set(live))


def test_a_process_joining_or_leaving_moves_few_partitions():
    for before, after in ((assign([A, B]), assign([A, B, C])),
                          (assign([A, B, C, D]), assign([A, B, D]))):
        moved = [k for k in range(PARTITIONS) if before[k] != after[k]]
        assert len(moved) <= PARTITIONS // 3 + 6, len(moved)  # about a share, not all


def test_a_free_partition_is_one_with_no_owner_a_dead_owner_or_this_process():
    assert free_for(None, A, ())
    assert free_for({"owner": None}, A, ())
    assert free_for({"owner": A}, A, ())  # its own, after a lapse: written again
    assert free_for({"owner": B}, A, {B})
    assert not free_for({"owner": B}, A, ())
    assert free_for({"owner": B, "_deleted": True}, A, ())


def test_a_process_takes_its_free_partitions_and_gives_up_those_of_another_live_one():
    docs = {k: part_doc("w", k, B, "x") for k in range(PARTITIONS)}  # B owned everything
    owners = assign([A, B])
    mine = sorted(k for k, p in owners.items() if p == A)
    assert plan(A, docs, [A, B], [], ()).take == ()  # B is alive: it gives them up first
    assert sorted(plan(A, docs, [A, B], [], ()).wait) == mine  # (A reads them again soon)
    assert plan(A, docs, [A], [B], ()).take == tuple(range(PARTITIONS))  # B is dead
    given = plan(B, docs, [A, B], [], range(PARTITIONS)).give
    assert sorted(given) == mine
    free = {k: part_doc("w", k, None, "x") for k in range(PARTITIONS)}
    assert sorted(plan(A, free, [A, B], [], ()).take) == mine
    assert plan(A, free, [A, B], [], ()).wait == ()


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.randoms(use_true_random=False))
def test_whatever_the_views_no_partition_is_taken_by_two_processes(count, rng: random.Random):
    """Processes that all see one another take disjoint sets; a plan only takes what the
    documents say is free, so a partition owned by a live process is never taken."""
    processes = [f"w@h{i}:{i}:p" for i in range(count)]
    docs = {k: part_doc("w", k, rng.choice([None, *processes]), "x")
            for k in range(PARTITIONS) if rng.random() < 0.7}
    owned = {p: {k for k, doc in docs.items() if doc["owner"] == p} for p in processes}
    taken = Counter()
    for p in processes:
        for k in plan(p, docs, processes, [], owned[p]).take:
            assert free_for(docs.get(k), p, ())
            taken[k] += 1
    assert all(n == 1 for n in taken.values())


def test_a_process_back_from_a_lapse_gives_up_the_leases_that_still_name_it():
    """Found by the chaos checker (seed 2, scenario lapse-rejoin): after a lapse a process
    owns nothing in memory, but the leases it held still name it; the process that should
    own them cannot take them from a live owner, so it must give them up itself."""
    docs = {k: part_doc("w", k, A, "x") for k in range(PARTITIONS)}  # A held everything
    owners = assign([A, B])
    theirs = sorted(k for k, p in owners.items() if p == B)
    back = plan(A, docs, [A, B], [], ())  # A, back from a lapse: owned is empty
    assert sorted(back.give) == theirs
    assert sorted(back.take) == sorted(k for k, p in owners.items() if p == A)


# -- conflicts on a cluster ------------------------------------------------------------------

def _leaf(rev: str, owner: str | None, deleted: bool = False) -> dict:
    doc = {"_id": "w@part:07", "_rev": rev, "type": "part", "name": "w", "partition": 7,
           "owner": owner}
    if deleted:
        doc["_deleted"] = True
    return doc


def test_a_tombstone_is_a_deleted_child_the_same_from_every_process():
    stone = parts.tombstone(_leaf("3-abc", A))
    assert stone["_deleted"] and stone["_rev"].startswith("4-")
    assert stone["_revisions"] == {"start": 4, "ids": [stone["_rev"][2:], "abc"]}
    assert parts.tombstone(_leaf("3-abc", B)) == stone  # by revision, not by content
    assert parts.tombstone(_leaf("3-abd", A))["_rev"] != stone["_rev"]


def test_the_winner_is_couchdbs_longest_history_then_highest_id():
    assert parts.winner([_leaf("2-a", A), _leaf("3-0", B), _leaf("3-f", C, True)])["_rev"] \
        == "3-0"
    assert parts.winner([_leaf("2-a", A), _leaf("2-b", B)])["_rev"] == "2-b"
    assert parts.winner([_leaf("2-a", A, True)]) is None


def test_settling_keeps_the_versions_a_live_process_may_use_and_buries_the_rest():
    leaves = [_leaf("2-a", A), _leaf("2-b", B), _leaf("2-c", None), _leaf("3-d", C, True)]
    settled = parts.settle(leaves, me=D, mine=(), dead={B})
    assert settled.doc["_rev"] == "2-a" and settled.owners == (A,)
    assert "_contested" not in settled.doc
    assert sorted(s["_revisions"]["ids"][1] for s in settled.buried) == ["b", "c"]
    # nobody may use any: CouchDB's winner stays, the others are buried
    settled = parts.settle([_leaf("2-a", None), _leaf("2-b", B)], me=D, mine=(), dead={B})
    assert settled.doc["_rev"] == "2-b" and len(settled.buried) == 1
    # a version naming this process that it never confirmed is buried; one it did, kept
    assert parts.settle([_leaf("2-a", A), _leaf("2-b", D)], D, (), ()).doc["_rev"] == "2-a"
    kept = parts.settle([_leaf("2-a", A), _leaf("2-b", D)], D, ("2-b",), ())
    assert kept.doc["_contested"] == (A, D) and kept.buried == ()
    assert not free_for(kept.doc, C, dead=()) and not free_for(kept.doc, D, dead=())
    assert free_for(kept.doc, C, dead={A, D})
    assert parts.settle([_leaf("2-a", A, True)], D, (), ()).doc is None


def test_a_take_is_yielded_when_another_live_process_may_use_a_version_beside_it():
    mine = _leaf("3-m", D)
    ours, buried = parts.taken(mine, [mine, _leaf("2-x", A)], D, dead=())
    assert not ours and buried == (parts.tombstone(mine),)
    ours, buried = parts.taken(mine, [mine, _leaf("2-x", A), _leaf("2-y", None)], D, dead={A})
    assert ours and sorted(s["_revisions"]["ids"][1] for s in buried) == ["x", "y"]
    assert parts.taken(mine, [mine, _leaf("2-z", B, True)], D, dead=()) == (True, ())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.sampled_from("abcdef"),
                          st.sampled_from([A, B, C, D, None]), st.booleans()),
                min_size=1, max_size=6, unique_by=lambda t: (t[0], t[1])),
       st.sets(st.sampled_from([A, B, C, D])), st.sets(st.sampled_from(["1-a", "2-b", "3-c"])))
def test_settling_never_buries_a_claim_and_leaves_one_version_unless_two_claim(
        versions, dead, mine):
    leaves = [_leaf(f"{n}-{h}", owner, deleted) for n, h, owner, deleted in versions]
    settled = parts.settle(leaves, D, mine, dead)
    buried = {f'{s["_revisions"]["start"] - 1}-{s["_revisions"]["ids"][1]}'
              for s in settled.buried}
    live = [leaf for leaf in leaves if not leaf.get("_deleted")]
    assert buried <= {leaf["_rev"] for leaf in live}
    for leaf in live:
        if parts.claims(leaf, D, mine, dead):
            assert leaf["_rev"] not in buried
    kept = len(live) - len(settled.buried)
    assert kept == (0 if not live else max(1, sum(parts.claims(x, D, mine, dead)
                                                   for x in live)))
    assert (settled.doc is None) == (not live)
