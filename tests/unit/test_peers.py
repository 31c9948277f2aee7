"""Which process claims a task first: the same answer everywhere, spread evenly."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from after.dates import to_ms
from after.peers import Peers, expiry

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ALIVE = to_ms(NOW) + 30_000


def pool(names, dead=()):
    peers = [Peers(store=None, name="w", lease=30, db="w_workers") for _ in names]
    for p, name in zip(peers, names):
        p.id = name
    for p in peers:
        p.live = {q.id: ALIVE for q in peers}
        p.live.update({d: to_ms(NOW) - 1 for d in dead})
    return peers


def test_every_process_agrees_on_one_claimant_and_the_work_spreads():
    peers = pool(["w@a:1:x", "w@b:2:y", "w@c:3:z"])
    owners = Counter()
    for i in range(3000):
        claimants = [p.id for p in peers if p.preferred(f"task-{i}", NOW)]
        assert len(claimants) == 1
        owners[claimants[0]] += 1
    assert set(owners) == {"w@a:1:x", "w@b:2:y", "w@c:3:z"}
    assert min(owners.values()) > 800  # about 1,000 each


def test_expired_processes_are_not_preferred():
    [alone] = pool(["w@a:1:x"], dead=["w@gone:9:q"])
    assert all(alone.preferred(f"task-{i}", NOW) for i in range(200))


def test_a_process_alone_claims_everything():
    [alone] = pool(["w@a:1:x"])
    assert alone.preferred("anything", NOW)


def test_expiry_reads_the_heartbeat_or_treats_it_as_expired():
    assert expiry({"expires": "2026-12-01T09:00:30.000Z"}) == ALIVE
    assert expiry({"expires": "soon"}) == 0
    assert expiry({}) == 0
