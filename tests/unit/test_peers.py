"""The processes of a worker name (after.worker.peers): liveness judged on this process's
own monotonic clock, the registry as the loop takes it in, this process's own lease; the
server's clock."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from datetime import UTC, datetime

import pytest

from after.couch.clock import Offset
from after.couch.registry import expiry
from after.rules.dates import to_ms
from after.worker import partitions as parts
from after.worker.peers import REREAD, Peers

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ALIVE = to_ms(NOW) + 30_000


def test_expiry_reads_the_heartbeat_or_treats_it_as_expired():
    assert expiry({"expires": "2026-12-01T09:00:30.000Z"}) == ALIVE
    assert expiry({"expires": "soon"}) == 0
    assert expiry({}) == 0


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def watcher(lease=6.0):
    clock = Clock()
    peers = Peers(store=None, name="w", lease=lease, db="w_workers", monotonic=clock)
    return peers, clock


def test_a_peer_is_dead_when_its_heartbeat_has_not_changed_for_a_lease_on_our_clock():
    peers, clock = watcher()
    beat = {"_id": "w@b:2:y", "_rev": "1-a", "expires": "1970-01-01T00:00:00Z"}
    assert "w@b:2:y" not in peers.live and "w@b:2:y" not in peers.dead  # never read
    # first sight: a full lease from now, whatever its ``expires`` (another machine's clock)
    assert not peers.observe(beat, "w@b:2:y", clock())
    assert peers.live["w@b:2:y"] == clock() + 6.0
    for _ in range(10):  # it beats: alive however long, whatever the clocks say
        clock.t += 2.0
        beat = {**beat, "_rev": f"{int(beat['_rev'][0]) + 1}-a"}
        assert not peers.observe(beat, "w@b:2:y", clock())
        assert peers.live["w@b:2:y"] > clock() and "w@b:2:y" not in peers.dead
    clock.t += 5.9
    assert not peers.observe(beat, "w@b:2:y", clock())  # unchanged, but for less than a lease
    clock.t += 0.2
    assert peers.observe(beat, "w@b:2:y", clock())  # the read: dead, newly
    assert not peers.observe(beat, "w@b:2:y", clock())  # (said once)
    assert "w@b:2:y" in peers.dead and "w@b:2:y" not in peers.live
    clock.t += 30  # it comes back (it was frozen): alive again at its next beat
    assert not peers.observe({**beat, "_rev": "99-b"}, "w@b:2:y", clock())
    assert "w@b:2:y" in peers.live and "w@b:2:y" not in peers.dead


def test_a_missing_heartbeat_is_a_dead_process():
    peers, clock = watcher()
    assert peers.observe(None, "w@gone:1:q", clock())
    assert "w@gone:1:q" in peers.dead


def test_the_offset_narrows_to_the_round_trip_and_never_corrects_a_clock_ahead():
    offset = Offset()
    assert offset.correction() == 0.0 and offset.estimate() is None
    server_minus_local = -5.2371  # this machine is 5.237 s ahead
    local = 2_000_000.0
    for i in range(16):  # samples 70 ms apart, 4 ms round trips
        sent = local + i * 0.07
        server = sent + 0.002 + server_minus_local
        offset.add(sent, sent + 0.004, float(int(server)))
    lo, hi = offset.bounds()
    assert lo <= server_minus_local <= hi and server_minus_local - lo < 0.08
    assert offset.correction() == lo <= server_minus_local  # never ahead of the server
    assert abs(offset.estimate() - server_minus_local) < 0.08


class _Unreadable(deque):
    """Samples that may not be walked: a reader's pass over them, on another thread than
    the one that adds, may meet a sample being added."""

    def __iter__(self):
        raise RuntimeError("deque mutated during iteration")


def test_the_clock_is_read_without_walking_the_samples_being_added():
    """The peers' thread adds samples while the loop, the timer and the job threads read
    the clock: a reader that walked them raised "deque mutated during iteration" (on a job
    thread: a run never begun nor reported, its task held for ever)."""
    offset = Offset()
    for i in range(3):
        sent = 2_000_000.0 + i * 0.07
        offset.add(sent, sent + 0.004, float(int(sent + 0.002 - 5.2)))
    expected = (offset.bounds(), offset.correction(), offset.estimate(), offset.beyond(1.0))
    offset.samples = _Unreadable(offset.samples)
    assert (offset.bounds(), offset.correction(), offset.estimate(),
            offset.beyond(1.0)) == expected
    assert expected[1] < -5  # (a clock ahead: a correction, read from the bounds)


def test_the_clock_read_on_other_threads_while_samples_come_never_raises():
    offset, errors, stop = Offset(), [], threading.Event()

    def sample():
        i = 0
        while not stop.is_set():
            offset.add(1000.0 + i, 1000.01 + i, 1000.0 + i)
            i += 1

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            try:
                offset.correction()
            except RuntimeError as exc:
                errors.append(exc)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:1]


def test_a_clock_in_sync_is_not_corrected_and_a_step_starts_again():
    offset = Offset()
    for i in range(16):
        sent = 3_000_000.0 + i * 0.07
        offset.add(sent, sent + 0.004, float(int(sent + 0.002)))
    assert offset.correction() == 0.0
    lagging = Offset()  # a server whose Date header lags up to a second (CouchDB's cache)
    for i in range(16):
        sent = 3_000_000.0 + i * 0.07
        lagging.add(sent, sent + 0.004, float(int(sent + 0.002 - 0.9)))
    assert lagging.correction() == 0.0
    offset.add(4_000_000.0, 4_000_000.004, 4_000_010.0)  # the clock stepped 10 s back
    assert len(offset.samples) == 1 and offset.correction() > 9


def test_a_paused_name_is_read_with_the_heartbeats_and_is_no_peer():
    """after.couch.pausing's NAME@paused lives among the name's heartbeats: read with them, never
    taken for a process (no liveness, never pruned), and gone once resumed."""
    from after.couch import pausing
    from after.couch.memstore import MemStore

    store = MemStore()
    store.create_database("t_workers")
    ticks = iter(range(0, 10**6, 1000))  # each read 1000 s after the last: far past pruning
    peers = Peers(store=store, name="w", lease=3, db="t_workers", monotonic=lambda: next(ticks))
    pausing.pause(store, "t_workers", "w", NOW)
    pausing.pause(store, "t_workers", "other", NOW)
    for _ in range(3):
        registry = peers.refresh()
        assert registry.paused is True and registry.dead == frozenset()
    assert "w@paused" not in peers.observed and "w@paused" not in peers.dead
    assert set(pausing.paused(store, "t_workers")) == {"w", "other"}
    assert pausing.resume(store, "t_workers", "w") is True
    assert peers.refresh().paused is False
    assert pausing.resume(store, "t_workers", "w") is False


def test_only_an_offset_surely_past_a_second_counts_as_off():
    """A server on this machine whose Date header lagged 1.2 s (the header is renewed once a
    second): its samples still allow 0, so the clock is not called off (it was warned about
    as "+1.2 s" before); a clock 5 s ahead is."""
    local = 2_000_000.0
    in_sync = Offset()
    for i in range(3):  # the server's second began 1.2 s before each answer was read
        sent = local + 100 + i * 0.07
        in_sync.add(sent, sent + 0.004, sent + 0.004 - 1.2)
    assert in_sync.estimate() <= -1.0  # the loose bound alone looked 1.2 s off
    assert not in_sync.beyond(1.0) and in_sync.correction() == 0.0
    ahead = Offset()
    for i in range(3):
        sent = local + i * 0.07
        ahead.add(sent, sent + 0.004, float(int(sent - 5.0)))
    assert ahead.beyond(1.0) and ahead.beyond(2.5) and not ahead.beyond(6.0)


def test_a_process_trusts_its_own_lease_from_the_sending_of_its_last_heartbeat_that_landed():
    """Peers.sure_until: a lease, less a margin, from when the last heartbeat that landed
    was sent (another process counts from when it reads it changed, later); none before
    the first; a heartbeat that fails extends nothing; one that lands past it counts a
    lapse (the loop's lease check)."""
    from after.couch.memstore import MemStore
    from after.couch.store import Unavailable

    store = MemStore("t")
    store.create_database("t_workers")
    clock = Clock()
    peers = Peers(store=store, name="w", lease=6.0, db="t_workers", monotonic=clock)
    assert peers.sure_until(1.0) == float("-inf")
    peers.beat({})
    assert peers.sure_until(1.0) == 1005.0
    clock.t += 3
    down = store.put

    def failing(*args, **kwargs):
        clock.t += 0.5  # the request takes a while, then fails
        raise Unavailable("down")

    store.put = failing
    peers.beat({})
    assert peers.sure_until(1.0) == 1005.0  # still from the last one that landed
    store.put = down
    peers.beat({})
    assert peers.sure_until(1.0) == 1008.5 and peers.lapses == 0
    clock.t += 5  # frozen, or its heartbeats failing, this long: its lease may have lapsed
    peers.beat({})
    assert peers.lapses == 1 and peers.sure_until(1.0) == 1013.5


def test_the_registry_gives_the_partitions_and_finds_their_owners_that_never_beat_dead():
    from after.couch.memstore import MemStore

    store = MemStore("t")
    store.create_database("t_workers")
    clock = Clock()
    peers = Peers(store=store, name="w", lease=6.0, db="t_workers", monotonic=clock)
    other = Peers(store=store, name="w", lease=6.0, db="t_workers", monotonic=clock)
    other.beat({})
    store.bulk_docs([parts.part_doc("w", 0, other.id, "x"), parts.part_doc("w", 1, "w@gone:1:a",
                                                                          "x"),
                     parts.part_doc("other", 2, other.id, "x")], db="t_workers")
    registry = peers.beat({})
    assert registry.live == {peers.id, other.id}
    assert registry.dead == {"w@gone:1:a"}  # a partition's owner with no heartbeat at all
    assert sorted(registry.parts) == [0, 1] and registry.parts[0]["owner"] == other.id
    assert registry.beat_sent == clock.t and registry.lapses == 0
    clock.t += 6.0  # the other stops beating: dead after a lease, on this process's clock
    assert peers.beat({}).dead == {"w@gone:1:a", other.id}


class Lagging:
    """A store whose reads of many documents leave some out, as a cluster's copy that lags
    does (a node just restarted); a read of one document, from every copy, has them."""

    def __init__(self, store, hidden: set[str]):
        self.store, self.hidden = store, hidden

    def prefixed(self, prefix, **kwargs):
        return [d for d in self.store.prefixed(prefix, **kwargs) if d["_id"] not in self.hidden]

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_heartbeat_left_out_of_a_read_is_not_a_dead_process_but_one_deleted_is():
    from after.couch.memstore import MemStore

    memory = MemStore("t")
    memory.create_database("t_workers")
    clock = Clock()
    store = Lagging(memory, set())
    peers = Peers(store=store, name="w", lease=6.0, db="t_workers", monotonic=clock)
    other = Peers(store=memory, name="w", lease=6.0, db="t_workers", monotonic=clock)
    other.beat({})
    memory.bulk_docs([parts.part_doc("w", 0, other.id, "x")], db="t_workers")
    assert other.id in peers.beat({}).live
    store.hidden.add(other.id)  # left out of a read: read alone, it is there and beating
    for _ in range(5):
        clock.t += 2.0
        other.beat({})
        registry = peers.beat({})
        assert other.id in registry.live and other.id not in registry.dead
        assert not parts.free_for(registry.parts[0], peers.id, registry.dead)
    clock.t += 6.0  # left out, and no longer beating: dead after a lease, as any other
    assert other.id in peers.beat({}).dead
    other.beat({})  # back
    assert other.id in peers.beat({}).live
    other.leave()  # a graceful stop, its "stopping" never read: deleted on every copy
    assert other.id in peers.beat({}).dead
    third = Peers(store=memory, name="w", lease=6.0, db="t_workers", monotonic=clock)
    third.beat({"stopping": True})
    assert third.id in peers.beat({}).live
    memory.get = memory.leaves = None  # seen stopping: gone when its heartbeat is, no read
    third.leave()
    assert third.id in peers.beat({}).dead


def _two_versions(store, owners, rev="1-base"):
    """The lease document of partition 5 with a version per owner, side by side (as two
    nodes of a cluster can leave it), each a child of ``rev``."""
    base = {**parts.part_doc("w", 5, None, "x"), "_rev": rev}
    store.bulk_docs([base], db="t_workers", new_edits=False)
    for i, owner in enumerate(owners):
        child = f"{i}{'0' * 31}"
        store.bulk_docs([{**parts.part_doc("w", 5, owner, "x"), "_rev": f"2-{child}",
                          "_revisions": {"start": 2, "ids": [child, rev.split("-")[1]]}}],
                        db="t_workers", new_edits=False)


def test_a_lease_in_two_versions_keeps_the_live_owners_and_buries_the_dead_ones():
    from after.couch.memstore import MemStore

    store = MemStore("t")
    store.create_database("t_workers")
    clock = Clock()
    peers = Peers(store=store, name="w", lease=6.0, db="t_workers", monotonic=clock)
    other = Peers(store=store, name="w", lease=6.0, db="t_workers", monotonic=clock)
    other.beat({})
    _two_versions(store, [other.id, "w@gone:1:a"])
    assert len([v for v in store.leaves("w@part:05", db="t_workers")
                if not v.get("_deleted")]) == 2
    registry = peers.beat({})
    assert registry.parts[5]["owner"] == other.id and "_contested" not in registry.parts[5]
    live = [v for v in store.leaves("w@part:05", db="t_workers") if not v.get("_deleted")]
    assert [v["owner"] for v in live] == [other.id]  # the dead one's version buried
    assert not parts.free_for(registry.parts[5], peers.id, registry.dead)


def test_two_live_owners_side_by_side_leave_the_partition_to_neither_third():
    from after.couch.memstore import MemStore

    store = MemStore("t")
    store.create_database("t_workers")
    clock = Clock()
    a, b, c = (Peers(store=store, name="w", lease=6.0, db="t_workers", monotonic=clock)
               for _ in range(3))
    a.beat({})
    b.beat({})
    _two_versions(store, [a.id, b.id])
    a.mine[5] = "2-0" + "0" * 31  # a's take was confirmed; b's was not
    seen = c.beat({}).parts[5]
    assert seen["_contested"] == tuple(sorted([a.id, b.id]))
    assert not parts.free_for(seen, c.id, dead=())
    b.beat({})  # b finds a version naming it that it never confirmed: buried
    assert [v["owner"] for v in store.leaves("w@part:05", db="t_workers")
            if not v.get("_deleted")] == [a.id]
    assert a.beat({}).parts[5]["owner"] == a.id


class Accepting:
    """A store whose writes are stored but answered 202, as a cluster with too few copies
    up answers them (the rest of the store as is)."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def bulk_docs(self, docs, *, db=None, new_edits=True):
        answers = self._store.bulk_docs(docs, db=db, new_edits=new_edits)
        return [{**a, "accepted": True} if "error" not in a else a for a in answers]

    def put(self, doc, *, db=None):
        return {**self._store.put(doc, db=db), "status": 202}


def test_a_take_answered_202_is_not_the_process_and_its_version_is_buried():
    from after.couch.memstore import MemStore

    store = MemStore("t")
    store.create_database("t_workers")
    peers = Peers(store=Accepting(store), name="w", lease=6.0, db="t_workers",
                  monotonic=Clock())
    [answer] = peers.write_parts([parts.part_doc("w", 3, peers.id, "x")])
    assert answer["error"] == "accepted" and 3 not in peers.mine
    assert store.get_or_none("w@part:03", db="t_workers") is None  # buried: free again
    [answer] = peers.write_parts([parts.part_doc("w", 4, None, "x")])  # a give-up: as is
    assert answer.get("accepted") and "error" not in answer


def test_a_take_answered_201_is_read_back_and_yielded_to_a_live_version_beside_it():
    from after.couch.memstore import MemStore

    store = MemStore("t")
    store.create_database("t_workers")
    clock = Clock()
    a, b = (Peers(store=store, name="w", lease=6.0, db="t_workers", monotonic=clock)
            for _ in range(2))
    a.beat({})
    b.beat({})
    _two_versions(store, [a.id, None])
    current = {"_rev": "2-1" + "0" * 31}  # b read the free version only (a lagging copy)
    [answer] = b.write_parts([parts.part_doc("w", 5, b.id, "x", current)])
    assert answer["error"] == "contested" and 5 not in b.mine
    assert [v["owner"] for v in store.leaves("w@part:05", db="t_workers")
            if not v.get("_deleted")] == [a.id]
    # and with nobody else's version beside it, the take is confirmed
    [answer] = b.write_parts([parts.part_doc("w", 6, b.id, "x")])
    assert answer.get("ok") and b.mine[6] == answer["rev"]


class OneCopy(Accepting):
    """A server of one copy (pouchdb-server): its writes answered as they are, and a read of
    a document's versions a failure of the test."""

    def bulk_docs(self, docs, *, db=None, new_edits=True):
        return self._store.bulk_docs(docs, db=db, new_edits=new_edits)

    def one_copy(self):
        return True

    def leaves(self, docid, *, db=None, r=3):
        raise AssertionError(f"{docid} read back on a server of one copy")


def test_a_take_answered_201_by_a_server_of_one_copy_is_the_process_without_a_read_back():
    from after.couch.memstore import MemStore

    store = MemStore("t")
    store.create_database("t_workers")
    peers = Peers(store=OneCopy(store), name="w", lease=6.0, db="t_workers", monotonic=Clock())
    answers = peers.write_parts([parts.part_doc("w", k, peers.id, "x") for k in (1, 2)])
    assert all(answer.get("ok") for answer in answers)
    assert peers.mine == {1: answers[0]["rev"], 2: answers[1]["rev"]}
    stale = parts.part_doc("w", 1, peers.id, "x")  # written over a version it did not read
    [answer] = peers.write_parts([stale])
    assert answer["error"] == "conflict" and peers.mine[1] == answers[0]["rev"]


def test_a_heartbeat_answered_202_says_the_cluster_cannot_confirm_writes():
    from after.couch.memstore import MemStore

    store = MemStore("t")
    store.create_database("t_workers")
    clock = Clock()
    assert Peers(store=store, name="w", lease=6.0, db="t_workers",
                 monotonic=clock).beat({}).degraded is False
    degraded = Peers(store=Accepting(store), name="w", lease=6.0, db="t_workers",
                     monotonic=clock)
    assert degraded.beat({}).degraded is True


def test_a_read_asked_between_beats_comes_within_reread_and_never_more_often():
    """A process waiting for partitions handed over (or joining) asks for the registry
    between beats: it comes REREAD after the last read, with no heartbeat written, and asks
    made meanwhile are one read."""
    from after.couch.memstore import MemStore

    store = MemStore("t")
    store.create_database("t_workers")
    peers = Peers(store=store, name="w", lease=6.0, db="t_workers")
    posted: queue.SimpleQueue = queue.SimpleQueue()
    peers.start(30.0, lambda: {}, lambda event: posted.put((peers.mono(), event)))
    try:
        first = next(at for at, (kind, _) in iter(posted.get, None) if kind == "registry")
        rev = store.get(peers.id, db="t_workers")["_rev"]
        for _ in range(5):
            peers.ask(("read", None))
        at, (kind, registry) = posted.get(timeout=2)
        assert kind == "registry" and peers.id in registry.live
        assert REREAD - 0.05 <= at - first < REREAD + 0.5
        with pytest.raises(queue.Empty):  # the five asks were one read
            posted.get(timeout=REREAD + 0.2)
        assert store.get(peers.id, db="t_workers")["_rev"] == rev  # no beat
    finally:
        peers.stop()
