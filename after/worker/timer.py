"""A timer of timestamp-keyed listeners, fired at the due instant.

Two layers:

- :class:`TimerQueue` is a pure data structure: no threads, no clock reads, time is
  passed in. Entries are keyed by a listener key (a task id); adding a key again
  replaces it (reschedule) and removing it means it never fires (cancel).
- :class:`Timer` runs a thread that sleeps until the next due entry and calls a callback
  for it as soon as ``clock() * 1000 >= due_ms``.

Due times are epoch milliseconds (``int``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Entry", "Timer", "TimerQueue"]

log = logging.getLogger("after.timer")

T = TypeVar("T")

#: ``(key, due_ms, item)`` as handed out by :meth:`TimerQueue.pop_due` and friends.
Entry = tuple[str, int, T]

#: Longest single sleep of the timer thread, in seconds, so a wall-clock step is noticed.
MAX_WAIT = 1.0


class TimerQueue(Generic[T]):
    """Entries ``key -> (due_ms, item)`` ordered by due time, ties in insertion order.

    A binary heap with lazy deletion: :meth:`add` and :meth:`remove` are O(log n) and
    O(1); a replaced or removed entry stays in the heap as a stale record until it
    reaches the top or the heap is compacted (when stale records outnumber live ones).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []  # (due_ms, seq, key)
        self._live: dict[str, tuple[int, int, T]] = {}  # key -> (due_ms, seq, item)
        self._seq = itertools.count()

    def add(self, key: str, due_ms: int, item: T) -> None:
        """Hold ``item`` under ``key`` until ``due_ms``; replace any entry for ``key``."""
        seq = next(self._seq)
        replaced = key in self._live
        self._live[key] = (due_ms, seq, item)
        heapq.heappush(self._heap, (due_ms, seq, key))
        if replaced:
            self._maybe_compact()

    def remove(self, key: str) -> T | None:
        """Drop the entry for ``key`` and return its item, or None if there is none."""
        entry = self._live.pop(key, None)
        if entry is None:
            return None
        self._maybe_compact()
        return entry[2]

    def pop_due(self, now_ms: int, limit: int | None = None) -> list[Entry[T]]:
        """Remove and return entries with ``due_ms <= now_ms``, earliest first.

        ``limit`` caps how many are returned; the rest stay queued.
        """
        out: list[Entry[T]] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms and (limit is None or len(out) < limit):
            due_ms, seq, key = heapq.heappop(heap)
            entry = self._live.get(key)
            if entry is not None and entry[1] == seq:
                del self._live[key]
                out.append((key, due_ms, entry[2]))
        return out

    def next_due(self) -> int | None:
        """The earliest due time held, or None when empty."""
        self._purge_top()
        return self._heap[0][0] if self._heap else None

    def due_of(self, key: str) -> int | None:
        """The due time of ``key``, or None if it is not held."""
        entry = self._live.get(key)
        return None if entry is None else entry[0]

    def items(self) -> list[Entry[T]]:
        """A snapshot of all entries in due order (ties in insertion order)."""
        ordered = sorted(self._live.items(), key=lambda kv: (kv[1][0], kv[1][1]))
        return [(key, due_ms, item) for key, (due_ms, _seq, item) in ordered]

    def clear(self) -> list[Entry[T]]:
        """Remove everything and return it in due order."""
        entries = self.items()
        self._heap.clear()
        self._live.clear()
        return entries

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def _is_stale(self, record: tuple[int, int, str]) -> bool:
        entry = self._live.get(record[2])
        return entry is None or entry[1] != record[1]

    def _purge_top(self) -> None:
        while self._heap and self._is_stale(self._heap[0]):
            heapq.heappop(self._heap)

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._live):
            self._heap = [(due, seq, key) for key, (due, seq, _item) in self._live.items()]
            heapq.heapify(self._heap)


class Timer(Generic[T]):
    """A thread that calls ``callback(key, due_ms, item)`` when each entry falls due.

    The callback runs on the timer thread and must be quick (hand work to a pool). An
    exception in it is logged and the timer carries on. Entries are fired one at a
    time, so after :meth:`stop` every entry has either been fired or been returned.
    """

    def __init__(
        self,
        callback: Callable[[str, int, T], object],
        clock: Callable[[], float] = time.time,
        max_wait: float = MAX_WAIT,
    ) -> None:
        self._callback = callback
        self._clock = clock
        self._max_wait = max_wait
        self._queue: TimerQueue[T] = TimerQueue()
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the timer thread; a timer starts once and cannot restart after stop."""
        with self._cond:
            if self._thread is not None or self._stopping:
                raise RuntimeError("timer already started or stopped")
            self._thread = threading.Thread(target=self._run, name="after-timer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> list[Entry[T]]:
        """Stop the thread, wait up to ``timeout`` for it, and return the unfired entries.

        The returned entries are removed from the timer, in due order.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._cond:
            return self._queue.clear()

    def is_alive(self) -> bool:
        """Whether the timer thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def add(self, key: str, due_ms: int, item: T) -> None:
        """Fire ``item`` at ``due_ms``; re-adding a key reschedules it."""
        with self._cond:
            earliest = self._queue.next_due()
            self._queue.add(key, due_ms, item)
            if earliest is None or due_ms < earliest:
                self._cond.notify_all()

    def remove(self, key: str) -> T | None:
        """Cancel ``key``; return its item, or None if it is not held (or already fired)."""
        with self._cond:
            return self._queue.remove(key)

    def fire_due(self, now_ms: int) -> int:
        """Fire, on the calling thread, every entry due at ``now_ms``; returns how many. For a
        timer whose thread is not started, driven by hand (a test passes the instant in)."""
        with self._cond:
            due = self._queue.pop_due(now_ms)
        for key, due_ms, item in due:
            self._callback(key, due_ms, item)
        return len(due)

    def snapshot(self) -> list[Entry[T]]:
        """The entries held, in due order."""
        with self._cond:
            return self._queue.items()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def __contains__(self, key: object) -> bool:
        with self._cond:
            return key in self._queue

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    try:
                        now_ms = self._clock() * 1000
                    except Exception:  # (a bug) the thread must live: every entry waits on it
                        log.exception("the timer could not read its clock; trying again")
                        self._cond.wait(0.05)
                        continue
                    due = self._queue.pop_due(int(now_ms))  # all that are due: one lock
                    if due:
                        break
                    next_due = self._queue.next_due()
                    wait = self._max_wait
                    if next_due is not None:
                        wait = min(wait, (next_due - now_ms) / 1000)
                    self._cond.wait(wait)
            for key, due_ms, item in due:
                try:
                    self._callback(key, due_ms, item)
                except Exception:
                    log.exception("timer callback failed for %s (due %d)", key, due_ms)
