"""Job threads and the queue in front of them (after.slots): pure, no clock."""

from __future__ import annotations

from after.slots import Slots


def starts(slots: Slots) -> int:
    """How many starts one turn may decide."""
    n = 0
    while slots.take():
        n += 1
    slots.end_turn()
    return n


def test_before_any_run_has_ended_only_the_threads_count():
    slots = Slots(4, grace=2.0, most=500)
    slots.count(set())
    assert starts(slots) == 4


def test_short_runs_let_a_turn_start_a_queue_the_pool_works_through_in_half_the_grace():
    slots = Slots(4, grace=2.0, most=500)
    for _ in range(20):
        slots.ran(0.125)
    slots.count(set())
    assert starts(slots) == 4 + 32  # 4 threads x 1 s / 0.125 s
    for _ in range(50):
        slots.ran(0.0001)
    slots.count(set())
    assert starts(slots) == 4 + 500  # at most a write batch


def test_no_queue_while_a_run_has_gone_on_for_half_the_grace_a_thread_may_be_hung():
    slots = Slots(4, grace=2.0, most=500)
    slots.ran(0.001)
    slots.count({"a", "b"}, longest=0.9)
    assert starts(slots) == 2 + 500  # 2 of 4 threads busy, and a queue of 500
    slots.count({"a", "b"}, longest=1.0)
    assert starts(slots) == 2


def test_long_runs_leave_no_queue():
    slots = Slots(2, grace=2.0)
    slots.ran(5.0)
    slots.count(set())
    assert starts(slots) == 2


def test_a_start_written_ahead_only_needs_a_thread_free_now():
    slots = Slots(2)
    slots.count({"a"})
    assert all(slots.take(ahead=True) for _ in range(10)) and slots.reserved == 0
    slots.count({"a", "b"})
    assert not slots.take(ahead=True)


def test_waiting_tasks_leave_in_order_while_there_is_room():
    slots = Slots(1)
    slots.count(set())
    for docid in ("x", "y"):
        slots.wait(docid)
    assert slots.next_waiting() == "x" and slots.take()
    assert slots.next_waiting() is None and list(slots.waiting) == ["y"]
