"""Tests for after.timer: the pure TimerQueue, then the Timer thread with real time."""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest

from after.worker.timer import Timer, TimerQueue

#: How late a timer may fire here: far below its 1 s safety wake (so a prompt firing proves
#: the wake-up, not a periodic check), far above what a loaded 2-core machine adds (30 ms
#: failed at load 12). How late a task runs is measured by bench/, not asserted here.
PROMPT_MS = 250

# -- TimerQueue: pure, time passed in -------------------------------------------------


def test_pop_due_returns_due_entries_in_due_order() -> None:
    q: TimerQueue[str] = TimerQueue()
    q.add("c", 300, "C")
    q.add("a", 100, "A")
    q.add("b", 200, "B")
    assert q.next_due() == 100
    assert q.pop_due(99) == []
    assert q.pop_due(200) == [("a", 100, "A"), ("b", 200, "B")]
    assert len(q) == 1
    assert q.next_due() == 300
    assert q.pop_due(10_000) == [("c", 300, "C")]
    assert q.next_due() is None
    assert len(q) == 0


def test_ties_pop_in_insertion_order() -> None:
    q: TimerQueue[int] = TimerQueue()
    for i, key in enumerate(["z", "m", "a", "q"]):
        q.add(key, 500, i)
    assert [k for k, _, _ in q.pop_due(500)] == ["z", "m", "a", "q"]


def test_pop_due_limit_leaves_the_rest() -> None:
    q: TimerQueue[None] = TimerQueue()
    for key, due in [("a", 1), ("b", 2), ("c", 3)]:
        q.add(key, due, None)
    assert q.pop_due(10, limit=1) == [("a", 1, None)]
    assert [k for k, _, _ in q.items()] == ["b", "c"]


def test_add_existing_key_reschedules() -> None:
    q: TimerQueue[str] = TimerQueue()
    q.add("t", 100, "old")
    q.add("other", 150, "o")
    q.add("t", 200, "new")
    assert len(q) == 2
    assert q.due_of("t") == 200
    assert q.pop_due(100) == []  # the old due time is gone
    assert q.next_due() == 150
    assert q.pop_due(200) == [("other", 150, "o"), ("t", 200, "new")]
    assert q.pop_due(10_000) == []


def test_reschedule_earlier() -> None:
    q: TimerQueue[str] = TimerQueue()
    q.add("t", 500, "late")
    q.add("t", 50, "early")
    assert q.next_due() == 50
    assert q.pop_due(60) == [("t", 50, "early")]
    assert q.pop_due(1_000) == []


def test_remove_returns_item_and_entry_never_fires() -> None:
    q: TimerQueue[dict[str, int]] = TimerQueue()
    q.add("a", 100, {"n": 1})
    q.add("b", 200, {"n": 2})
    assert q.remove("a") == {"n": 1}
    assert q.remove("a") is None
    assert q.remove("missing") is None
    assert "a" not in q
    assert "b" in q
    assert q.due_of("a") is None
    assert q.next_due() == 200
    assert q.pop_due(1_000) == [("b", 200, {"n": 2})]


def test_remove_then_readd_fires_once_at_new_time() -> None:
    q: TimerQueue[str] = TimerQueue()
    q.add("a", 100, "x")
    q.remove("a")
    q.add("a", 300, "y")
    assert q.pop_due(200) == []
    assert q.pop_due(300) == [("a", 300, "y")]
    assert q.pop_due(1_000) == []


def test_past_entries_are_due_at_once() -> None:
    q: TimerQueue[str] = TimerQueue()
    now = 1_700_000_000_000
    q.add("late", now - 3_600_000, "L")
    q.add("later", now - 10, "M")
    q.add("future", now + 1, "F")
    assert q.pop_due(now) == [("late", now - 3_600_000, "L"), ("later", now - 10, "M")]
    assert len(q) == 1


def test_items_is_a_snapshot_in_due_order() -> None:
    q: TimerQueue[str] = TimerQueue()
    q.add("b", 20, "B")
    q.add("a", 10, "A")
    q.add("c", 20, "C")
    snap = q.items()
    assert snap == [("a", 10, "A"), ("b", 20, "B"), ("c", 20, "C")]
    q.remove("a")
    assert snap[0] == ("a", 10, "A")
    assert len(q) == 2


def test_compaction_keeps_len_and_bounds_heap() -> None:
    q: TimerQueue[int] = TimerQueue()
    for i in range(1_000):
        q.add(f"k{i}", 1_000 + i, i)
    for i in range(999):
        q.remove(f"k{i}")
    assert len(q) == 1
    assert len(q._heap) <= 3  # stale records never outnumber live ones for long
    for _ in range(1_000):  # repeated reschedule of one key
        q.add("k999", 5, 0)
    assert len(q) == 1
    assert len(q._heap) <= 3
    assert q.pop_due(5) == [("k999", 5, 0)]
    assert len(q) == 0
    assert q.next_due() is None


def test_ten_thousand_adds_and_removes() -> None:
    rng = random.Random(1234)
    q: TimerQueue[int] = TimerQueue()
    dues = {f"t{i}": rng.randrange(0, 100_000) for i in range(10_000)}
    for key, due in dues.items():
        q.add(key, due, due)
    removed = set(rng.sample(sorted(dues), 5_000))
    for key in removed:
        assert q.remove(key) == dues[key]
    assert len(q) == 5_000
    assert len(q._heap) <= 2 * len(q) + 1
    first = q.pop_due(50_000)
    rest = q.pop_due(100_000)
    popped = first + rest
    assert len(popped) == 5_000
    assert all(due <= 50_000 for _, due, _ in first)
    assert all(due > 50_000 for _, due, _ in rest)
    assert [due for _, due, _ in popped] == sorted(due for _, due, _ in popped)
    assert {key for key, _, _ in popped} == set(dues) - removed
    assert all(item == dues[key] for key, _, item in popped)
    assert len(q) == 0


# -- Timer: a real thread, real short delays ---------------------------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


class Recorder:
    """Callback that records (key, due_ms, item, lateness_ms) and signals when done."""

    def __init__(self, expect: int) -> None:
        self.fired: list[tuple[str, int, object, float]] = []
        self.expect = expect
        self.done = threading.Event()

    def __call__(self, key: str, due_ms: int, item: object) -> None:
        self.fired.append((key, due_ms, item, time.time() * 1000 - due_ms))
        if len(self.fired) >= self.expect:
            self.done.set()

    def keys(self) -> list[str]:
        return [k for k, _, _, _ in self.fired]


@pytest.fixture
def make_timer():
    timers: list[Timer] = []

    def factory(callback, **kwargs) -> Timer:
        t = Timer(callback, **kwargs)
        timers.append(t)
        t.start()
        return t

    yield factory
    for t in timers:
        t.stop(timeout=2)


def test_fires_at_the_due_instant(make_timer) -> None:
    rec = Recorder(expect=1)
    timer = make_timer(rec)
    due = now_ms() + 50
    timer.add("task-1", due, {"id": "task-1"})
    assert rec.done.wait(2)
    key, fired_due, item, lateness = rec.fired[0]
    assert (key, fired_due, item) == ("task-1", due, {"id": "task-1"})
    assert 0 <= lateness < PROMPT_MS
    assert len(timer) == 0


def test_fires_in_due_order(make_timer) -> None:
    rec = Recorder(expect=4)
    timer = make_timer(rec)
    base = now_ms()
    timer.add("d", base + 80, 4)
    timer.add("b", base + 40, 2)
    timer.add("c", base + 60, 3)
    timer.add("a", base + 20, 1)
    assert rec.done.wait(2)
    assert rec.keys() == ["a", "b", "c", "d"]
    assert all(0 <= late < PROMPT_MS for _, _, _, late in rec.fired)


def test_removed_entry_never_fires(make_timer) -> None:
    rec = Recorder(expect=1)
    timer = make_timer(rec)
    base = now_ms()
    timer.add("cancelled", base + 30, "x")
    timer.add("kept", base + 60, "y")
    assert timer.remove("cancelled") == "x"
    assert "cancelled" not in timer
    assert rec.done.wait(2)
    time.sleep(0.02)
    assert rec.keys() == ["kept"]


def test_readd_fires_once_at_new_time(make_timer) -> None:
    rec = Recorder(expect=2)
    timer = make_timer(rec)
    base = now_ms()
    timer.add("t", base + 30, "old")
    timer.add("t", base + 70, "new")
    timer.add("sentinel", base + 90, None)
    assert len(timer) == 2
    assert rec.done.wait(2)
    assert [(k, d, i) for k, d, i, _ in rec.fired] == [
        ("t", base + 70, "new"),
        ("sentinel", base + 90, None),
    ]
    assert 0 <= rec.fired[0][3] < PROMPT_MS


def test_earlier_add_wakes_a_sleeping_timer(make_timer) -> None:
    rec = Recorder(expect=1)
    timer = make_timer(rec)
    timer.add("far", now_ms() + 60_000, None)
    time.sleep(0.02)  # the thread is now asleep until its 1 s safety wake
    due = now_ms() + 30
    timer.add("near", due, None)
    assert rec.done.wait(2)
    assert rec.keys() == ["near"]
    assert 0 <= rec.fired[0][3] < PROMPT_MS
    assert timer.snapshot()[0][0] == "far"


def test_past_entry_fires_immediately(make_timer) -> None:
    rec = Recorder(expect=1)
    timer = make_timer(rec)
    added = time.time()
    timer.add("overdue", now_ms() - 3_600_000, "late")
    assert rec.done.wait(2)
    assert rec.keys() == ["overdue"]
    assert (time.time() - added) * 1000 < PROMPT_MS


def test_callback_exception_is_logged_and_timer_carries_on(make_timer, caplog) -> None:
    fired: list[str] = []
    done = threading.Event()

    def callback(key: str, due_ms: int, item: object) -> None:
        fired.append(key)
        if key == "bad":
            raise ValueError("boom")
        done.set()

    caplog.set_level(logging.ERROR, logger="after.timer")
    timer = make_timer(callback)
    base = now_ms()
    timer.add("bad", base + 10, None)
    timer.add("good", base + 40, None)
    assert done.wait(2)
    assert fired == ["bad", "good"]
    assert timer.is_alive()
    records = [r for r in caplog.records if r.name == "after.timer"]
    assert len(records) == 1
    assert "bad" in records[0].getMessage()
    assert records[0].exc_info[0] is ValueError


def test_stop_returns_what_was_left_and_ends_thread(make_timer) -> None:
    rec = Recorder(expect=1)
    timer = make_timer(rec)
    base = now_ms()
    timer.add("soon", base + 10, "s")
    timer.add("later", base + 60_000, "l")
    timer.add("latest", base + 120_000, "m")
    assert rec.done.wait(2)
    started = time.monotonic()
    left = timer.stop(timeout=2)
    assert time.monotonic() - started < 0.1  # woken, not waiting out a sleep
    assert left == [("later", base + 60_000, "l"), ("latest", base + 120_000, "m")]
    assert not timer.is_alive()
    assert len(timer) == 0
    assert rec.keys() == ["soon"]


def test_idle_timer_does_not_poll(make_timer) -> None:
    calls: list[float] = []

    def clock() -> float:
        calls.append(time.time())
        return calls[-1]

    timer = make_timer(lambda *a: None, clock=clock)
    time.sleep(0.2)
    assert len(calls) == 1  # one look at the clock, then asleep for up to 1 s
    assert timer.stop(timeout=2) == []
    assert not timer.is_alive()


def test_wall_clock_step_is_noticed(make_timer) -> None:
    offset = [0.0]
    rec = Recorder(expect=1)
    timer = make_timer(rec, clock=lambda: time.time() + offset[0], max_wait=0.05)
    timer.add("x", now_ms() + 3_600_000, None)  # an hour away
    time.sleep(0.02)
    offset[0] = 3_600.0  # the wall clock steps forward an hour
    assert rec.done.wait(1)
    assert rec.keys() == ["x"]


def test_start_twice_is_an_error(make_timer) -> None:
    timer = make_timer(lambda *a: None)
    with pytest.raises(RuntimeError):
        timer.start()


def test_stopped_timer_cannot_restart() -> None:
    timer: Timer[None] = Timer(lambda *a: None)
    timer.add("k", 1, None)
    assert timer.stop() == [("k", 1, None)]
    with pytest.raises(RuntimeError):
        timer.start()
    assert not timer.is_alive()


def test_fire_due_fires_what_is_due_on_the_calling_thread() -> None:
    """A timer driven by hand (its thread never started), as tests/unit/test_loop.py does."""
    fired: list[tuple[str, int, object, threading.Thread]] = []
    timer: Timer[str] = Timer(lambda key, due, item: fired.append(
        (key, due, item, threading.current_thread())))
    timer.add("b", 200, "B")
    timer.add("a", 100, "A")
    timer.add("c", 300, "C")
    assert timer.fire_due(99) == 0 and fired == []
    assert timer.fire_due(200) == 2
    assert [(k, d, i) for k, d, i, _ in fired] == [("a", 100, "A"), ("b", 200, "B")]
    assert {t for *_, t in fired} == {threading.current_thread()}
    assert "c" in timer and "a" not in timer and not timer.is_alive()


def test_a_clock_that_fails_once_does_not_end_the_timer(make_timer) -> None:
    """Every entry waits on the timer's thread: a clock read that raised (a bug) must not
    end it."""
    rec = Recorder(expect=1)
    failures = [RuntimeError("deque mutated during iteration")]

    def clock() -> float:
        if failures:
            raise failures.pop()
        return time.time()

    timer = make_timer(rec, clock=clock)
    timer.add("task-1", now_ms() + 20, None)
    assert rec.done.wait(2) and rec.keys() == ["task-1"] and not failures
