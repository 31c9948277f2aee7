"""Concurrency slots (after.worker.gates.Caps) on the in-memory store, with a monotonic clock
passed in; the concurrency field (after.rules.task.parse_concurrency); the dashboard's caps."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from after.client import concurrency_field, rate_field
from after.couch.caps import in_use, slot_id
from after.couch.memstore import MemStore
from after.rules import task as rules
from after.worker.gates import SLOT_RETRY, Calendars, Caps, Rates

from ..js import model_url, node

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
WORKERS = "tasks_workers"
LEASE = 3.0


class Clock:
    def __init__(self):
        self.at = 100.0

    def __call__(self) -> float:
        return self.at


def slots_for(store, me, clock):
    return Caps(store, WORKERS, me, LEASE, monotonic=clock)


def beat(store, process):
    doc = store.get_or_none(process, db=WORKERS) or {"_id": process, "type": "worker"}
    doc["n"] = doc.get("n", 0) + 1
    store.put(doc, db=WORKERS)


def test_at_most_limit_slots_are_taken_across_processes():
    store, clock = MemStore(), Clock()
    a, b = slots_for(store, "a@h:1:x", clock), slots_for(store, "b@h:2:y", clock)
    beat(store, "a@h:1:x")
    beat(store, "b@h:2:y")
    assert a.take("t1", "k", 2, 1, NOW) and b.take("t2", "k", 2, 2, NOW)
    assert not a.take("t3", "k", 2, 3, NOW) and not b.take("t4", "k", 2, 4, NOW)
    assert sorted(s["task"] for s in in_use(store, WORKERS)) == ["t1", "t2"]
    assert a.waiting == {"t3": (3, "k")} and b.waiting == {"t4": (4, "k")}
    assert a.take("t1", "k", 2, 1, NOW)  # held already: no second slot
    assert len(in_use(store, WORKERS)) == 2


def test_a_freed_slot_goes_to_the_earliest_waiting_occurrence():
    store, clock = MemStore(), Clock()
    a = slots_for(store, "a@h:1:x", clock)
    assert a.take("first", "k", 1, 10, NOW)
    for due, docid in ((30, "late"), (20, "early")):
        assert not a.take(docid, "k", 1, due, NOW)
    assert a.due(lambda t: True) == []  # not before the retry time
    a.release("first")
    assert a.due(lambda t: True) == ["early", "late"]
    assert a.take("early", "k", 1, 20, NOW) and not a.take("late", "k", 1, 30, NOW)
    clock.at += SLOT_RETRY
    assert a.due(lambda t: t != "late") == [] and a.waiting == {}  # no longer held: forgotten


def test_a_dead_holders_slot_comes_back_after_a_lease_on_the_takers_clock():
    store, clock = MemStore(), Clock()
    dead, taker = slots_for(store, "a@h:1:x", clock), slots_for(store, "b@h:2:y", clock)
    beat(store, "a@h:1:x")
    assert dead.take("t1", "k", 1, 1, NOW)
    assert not taker.take("t2", "k", 1, 2, NOW)  # first sight of the holder's heartbeat
    clock.at += LEASE - 0.1
    assert not taker.take("t2", "k", 1, 2, NOW)  # unchanged, but not for a lease yet
    beat(store, "a@h:1:x")  # alive after all: its lease starts again
    clock.at += 1.0
    assert not taker.take("t2", "k", 1, 2, NOW)
    clock.at += LEASE  # no beat for a lease: dead
    assert taker.take("t2", "k", 1, 2, NOW)
    [slot] = in_use(store, WORKERS)
    assert slot["holder"] == "b@h:2:y" and slot["task"] == "t2"
    dead.release("t1")  # the holder thought dead frees nothing it no longer holds
    assert in_use(store, WORKERS)[0]["holder"] == "b@h:2:y"


def test_a_holder_without_a_heartbeat_is_dead_at_once():
    store, clock = MemStore(), Clock()
    gone, taker = slots_for(store, "a@h:1:x", clock), slots_for(store, "b@h:2:y", clock)
    assert gone.take("t1", "k", 1, 1, NOW)  # (its heartbeat was removed: a graceful stop)
    assert taker.take("t2", "k", 1, 2, NOW)


def test_settle_frees_the_slots_of_runs_that_are_over_and_release_all_frees_every_one():
    store, clock = MemStore(), Clock()
    a = slots_for(store, "a@h:1:x", clock)
    assert a.take("t1", "k", 3, 1, NOW) and a.take("t2", "k", 3, 2, NOW)
    assert a.take("t3", "j", 1, 3, NOW)
    a.settle(lambda docid: docid == "t2")
    assert sorted(s["task"] for s in in_use(store, WORKERS) if s["holder"]) == ["t2"]
    a.release_all()
    assert [s["holder"] for s in in_use(store, WORKERS)] == [None, None, None]


def test_a_slot_left_ours_by_a_lost_write_is_freed_at_the_next_try():
    store, clock = MemStore(), Clock()
    store.put({"_id": slot_id("k", 0), "type": "slot", "key": "k", "holder": "a@h:1:x",
               "task": "old"}, db=WORKERS)
    a = slots_for(store, "a@h:1:x", clock)
    assert a.take("new", "k", 1, 1, NOW)
    assert [s["task"] for s in in_use(store, WORKERS)] == ["new"]


def test_calendars_are_read_again_after_their_ttl():
    store, clock = MemStore(), Clock()
    calendars = Calendars(store, ttl=2.0, monotonic=clock)
    assert calendars.get(("fr",)) == {}
    store.put({"_id": "calendar:fr", "dates": ["2026-12-25"]})
    assert calendars.get(("fr",)) == {}  # cached: not found
    clock.at += 2.0
    [fr] = calendars.get(("fr",)).values()
    assert fr.covers(datetime(2026, 12, 25).date())


@pytest.mark.parametrize("value, wanted", [
    (None, None),
    ({"key": "reports", "limit": 2}, rules.Cap("reports", 2)),
    ({"key": "a.b:c-d_e", "limit": 1000}, rules.Cap("a.b:c-d_e", 1000)),
])
def test_the_concurrency_field(value, wanted):
    assert rules.parse_concurrency(value) == wanted


def test_the_clients_concurrency_shorthands():
    assert concurrency_field("reports:2") == {"key": "reports", "limit": 2}
    assert concurrency_field(("reports", 2)) == {"key": "reports", "limit": 2}
    with pytest.raises(rules.TaskError, match=r"^concurrency: 'reports' is not KEY:LIMIT"):
        concurrency_field("reports")


def test_the_dashboard_counts_caps_in_use_and_lists_no_calendar_as_a_task():
    slots = [{"_id": "slot:k#0", "type": "slot", "key": "k", "holder": "p", "task": "t1"},
             {"_id": "slot:k#1", "type": "slot", "key": "k", "holder": None, "task": None},
             {"_id": "slot:a#0", "type": "slot", "key": "a", "holder": "p", "task": "t2"},
             {"_id": "w@h:1:x", "type": "worker"}]
    got = node(f"import * as m from '{model_url()}';\n"
               f"const slots = {json.dumps(slots)};\n"
               "console.log(JSON.stringify({caps: m.capsInUse(slots.filter(m.isSlot)),\n"
               "  tasks: [{_id: 'calendar:fr', dates: []}, {_id: 't', status: 'waiting'}]\n"
               "    .map(m.isTask)}));")
    assert got == {"caps": [{"key": "a", "used": 1, "slots": 1, "tasks": ["t2"]},
                            {"key": "k", "used": 1, "slots": 2, "tasks": ["t1"]}],
                   "tasks": [False, True]}


def test_a_holder_the_peers_know_dead_gives_its_slot_back_at_once():
    store, clock = MemStore(), Clock()
    dead = slots_for(store, "w@h:1:x", clock)
    beat(store, "w@h:1:x")  # its heartbeat still there, unchanged: only a lease tells
    assert dead.take("t1", "k", 1, 1, NOW)
    taker = Caps(store, WORKERS, "w@h:2:y", LEASE, monotonic=clock,
                 known_dead=lambda holder: holder == "w@h:1:x")
    assert taker.take("t2", "k", 1, 2, NOW)


class Accepted(MemStore):
    """A cluster without quorum: every slot write answers 202, and the first one also meets a
    concurrent take of the same slot by ``rival`` through another node (a second branch)."""

    def __init__(self, rival_rev: str):
        super().__init__()
        self.rival_rev, self.split = rival_rev, False

    def put(self, doc, *, db=None):
        answer = super().put(doc, db=db)
        if doc["_id"].startswith("slot:") and doc.get("holder") and not self.split:
            self.split = True
            rival = {**doc, "holder": "r@h:9:z", "task": "theirs", "_rev": self.rival_rev}
            self.bulk_docs([rival], db=db, new_edits=False)
        return {**answer, "status": 202}


@pytest.mark.parametrize("rival_rev", ["1-" + "f" * 32, "1-" + "0" * 32])
def test_a_202_slot_beside_another_branch_is_left_to_the_other_process(rival_rev):
    """Whichever branch CouchDB serves: the rival may have had a 201 and be running."""
    store, clock = Accepted(rival_rev), Clock()
    beat(store, "r@h:9:z")
    a = slots_for(store, "a@h:1:x", clock)
    assert not a.take("mine", "k", 1, 1, NOW)
    live = [leaf for leaf in store.leaves(slot_id("k", 0), db=WORKERS)
            if not leaf.get("_deleted")]
    assert [leaf["task"] for leaf in live] == ["theirs"]  # our branch given up
    assert "mine" in a.waiting and not a.held


def test_a_202_slot_alone_on_every_copy_is_ours():
    class Slow(MemStore):  # a node too slow to answer: 202, and no other branch
        def put(self, doc, *, db=None):
            return {**super().put(doc, db=db), "status": 202}

    store, clock = Slow(), Clock()
    a = slots_for(store, "a@h:1:x", clock)
    assert a.take("mine", "k", 1, 1, NOW)
    assert store.get(slot_id("k", 0), db=WORKERS)["holder"] == "a@h:1:x"


def test_a_free_slot_is_left_to_an_earlier_occurrence_of_another_process_for_a_while():
    """Who holds a task is who owns its partition (``holder_of``)."""
    store, clock = MemStore(), Clock()
    beat(store, "b@h:2:y")
    store.put({"_id": "early", "worker": "w", "status": "waiting",
               "date": "2026-12-01T08:59:00.000Z", "concurrency": {"key": "k", "limit": 1},
               "job": {"name": "hello"}})
    a = Caps(store, WORKERS, "a@h:1:x", LEASE, monotonic=clock,
             holder_of=lambda docid: "b@h:2:y" if docid == "early" else "a@h:1:x")
    late = int(NOW.timestamp() * 1000)
    assert not a.take("late", "k", 1, late, NOW)  # b's earlier occurrence goes first
    clock.at += 1.0
    assert not a.take("late", "k", 1, late, NOW)
    clock.at += 1.0  # YIELD_MAX: b does not take it (no thread free, say): a takes it
    assert a.take("late", "k", 1, late, NOW)
    a.release("late")
    assert not a.take("again", "k", 1, late, NOW)  # a new occurrence yields anew


def test_an_earlier_occurrence_of_this_process_goes_first():
    store, clock = MemStore(), Clock()
    a = slots_for(store, "a@h:1:x", clock)
    assert a.take("running", "k", 1, 1, NOW)
    assert not a.take("first", "k", 1, 10, NOW)
    a.release("running")
    assert not a.take("second", "k", 1, 20, NOW)  # its timer fired as the slot freed
    assert a.take("first", "k", 1, 10, NOW)


# -- rate limits (issue 25, item 5) ---------------------------------------------------------

def test_at_most_limit_runs_begin_in_any_period_across_processes():
    """Two processes share a rate of 2 runs per 10 s: two begin, the others wait, each
    told when a token frees (no read before); a token frees 10 s after its run began."""
    from datetime import timedelta

    store, clock = MemStore(), Clock()
    rate = rules.Rate("mail", 2, 10.0)
    a, b = Rates(store, WORKERS, "a@h:1:x", clock), Rates(store, WORKERS, "b@h:2:y", clock)
    assert a.take("t1", rate, 1, NOW)
    a.begun("t1", rate, NOW)
    later = NOW + timedelta(seconds=3)
    assert b.take("t2", rate, 2, later)
    b.begun("t2", rate, later)
    assert not a.take("t3", rate, 3, later) and not b.take("t4", rate, 4, later)
    assert a.next_try["mail"] == clock.at + 7.0  # the first token frees at NOW + 10 s
    assert b.waiting == {"t4": (4, "mail")}
    tokens = {d["_id"]: d for d in store.prefixed("rate:mail#", db=WORKERS)}
    assert sorted(d["task"] for d in tokens.values()) == ["t1", "t2"]
    clock.at += 7.0
    at_ten = NOW + timedelta(seconds=10)
    assert a.due(lambda t: True) == ["t3"]
    assert a.take("t3", rate, 3, at_ten)  # t1's token, free again
    assert not b.take("t4", rate, 4, at_ten)  # t2's frees at +13
    clock.at += 3.0
    assert b.take("t4", rate, 4, NOW + timedelta(seconds=13))
    starts = sorted(d["taken"] for d in store.prefixed("rate:mail#", db=WORKERS))
    assert starts == ["2026-12-01T09:00:10.000Z", "2026-12-01T09:00:13.000Z"]


def test_a_tokens_period_counts_from_the_launch_when_that_is_later():
    """Between the take and the launch the run's intent is written (on a cluster, up to
    hundreds of milliseconds): the token's next free instant moves to a period from the
    launch, so that no N + 1 runs begin in a period."""
    from datetime import timedelta

    store, clock = MemStore(), Clock()
    rate = rules.Rate("api", 1, 2.0)
    a, b = Rates(store, WORKERS, "a@h:1:x", clock), Rates(store, WORKERS, "b@h:2:y", clock)
    assert a.take("t1", rate, 1, NOW)
    a.begun("t1", rate, NOW + timedelta(seconds=0.3))  # launched 0.3 s after the take
    [token] = store.prefixed("rate:api#", db=WORKERS)
    assert token["next"] == "2026-12-01T09:00:02.300Z" and token["task"] == "t1"
    assert not b.take("t2", rate, 2, NOW + timedelta(seconds=2.1))
    assert b.next_try["api"] == clock.at + SLOT_RETRY  # (0.2 s to go: tried in 0.25)
    clock.at += SLOT_RETRY
    assert b.take("t2", rate, 2, NOW + timedelta(seconds=2.35))
    assert a.taken == {} and b.taken == {"t2": b.taken["t2"]}


def test_an_earlier_waiting_occurrence_takes_the_next_token_first():
    from datetime import timedelta

    store, clock = MemStore(), Clock()
    rate = rules.Rate("api", 1, 5.0)
    a = Rates(store, WORKERS, "a@h:1:x", clock)
    assert a.take("first", rate, 1, NOW)
    a.begun("first", rate, NOW)
    assert not a.take("early", rate, 2, NOW) and not a.take("late", rate, 3, NOW)
    clock.at += 5.0
    then = NOW + timedelta(seconds=5)
    assert not a.take("late", rate, 3, then)  # "early" waits for the same key: it goes first
    assert a.take("early", rate, 2, then)


@pytest.mark.parametrize("value, wanted", [
    ("mail:100/1h", {"key": "mail", "limit": 100, "per": 3600}),
    ("mail:5/60", {"key": "mail", "limit": 5, "per": 60}),
    ("a.b:1/0.5", {"key": "a.b", "limit": 1, "per": 0.5}),
    ("x:2/1h30m", {"key": "x", "limit": 2, "per": 5400}),
    (("k", 3, 9), {"key": "k", "limit": 3, "per": 9}),
    ({"key": "k", "limit": 1, "per": 1}, {"key": "k", "limit": 1, "per": 1}),
])
def test_the_clients_rate_shorthands(value, wanted):
    assert rate_field(value) == wanted
    rules.parse_rate(wanted)  # and the field they make is one the worker takes


@pytest.mark.parametrize("value, message", [
    ("mail:5/1M", "has no fixed length"), ("mail:5/", "is not KEY:LIMIT/PER"),
    ("mail/5", "is not KEY:LIMIT/PER"), (5, "is not KEY:LIMIT/PER"),
])
def test_the_clients_rate_shorthands_refused(value, message):
    with pytest.raises(rules.TaskError, match=message):
        rate_field(value)
