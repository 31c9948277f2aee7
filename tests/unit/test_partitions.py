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
    assert plan(A, docs, [A], [B], ()).take == tuple(range(PARTITIONS))  # B is dead
    given = plan(B, docs, [A, B], [], range(PARTITIONS)).give
    assert sorted(given) == mine
    free = {k: part_doc("w", k, None, "x") for k in range(PARTITIONS)}
    assert sorted(plan(A, free, [A, B], [], ()).take) == mine


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
