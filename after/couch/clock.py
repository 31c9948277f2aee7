"""This process's clock against the server's: an offset estimated from HTTP ``Date`` headers.

A pool's machines may disagree on the time (a member 5 s ahead ran tasks 5 s early). The
database server is the one clock every process talks to, so each process estimates its
offset from it, ``server - local``, and fires tasks on the corrected clock.

A ``Date`` header has whole seconds, and a server may cache it for up to a second (CouchDB's
web server renews it once a second): a response dated ``H`` was made at a server instant in
``[H, H + 2)``, and on our clock somewhere between sending the request (``sent``) and reading
the answer (``received``). So the offset lies in ``[H - received, H + 2 - sent]``. Each
sample gives such an interval; their intersection's lower bound, the one that matters, rises
to within the round trip (plus the cache's lag) when samples fall at different phases of the
server's second: the first few are taken 70 ms apart. :class:`Offset` is that intersection,
pure, with the samples passed in.

One thread adds samples (the peers'); every thread reads the clock (the loop, the timer, the
job threads): the interval is computed as a sample is added and kept as one tuple, which a
reader reads whole. (Computed on read, from the samples, a reader's pass over them while a
sample was added raised "deque mutated during iteration": on a job thread, about to begin
a run, the run never began nor was reported, and its task stayed held for ever: one task in
about 65 drains of 2,000 by three processes, the first second of each being when the samples
are taken 70 ms apart.)

The correction applied is the smallest one consistent with every sample, and never one that
makes the corrected clock run ahead of the server's: 0 while the interval holds 0 (a clock
in sync, as far as the samples can tell), else its lower bound: a clock 5 s ahead is held
back by 5 s and a little more, so a task may start a little late (under a second), never
early; a clock behind is moved forward by a little less than it lags.
"""

from __future__ import annotations

from collections import deque
from email.utils import parsedate_to_datetime

#: Offsets beyond this many seconds are logged and shown by ``after list``.
WARN_OFFSET = 1.0


class Offset:
    """``server - local`` in seconds, as the interval the samples allow."""

    def __init__(self, window: int = 64):
        self.samples: deque[tuple[float, float]] = deque(maxlen=window)
        self._bounds: tuple[float, float] | None = None  # (replaced whole: see above)

    def add(self, sent: float, received: float, server_second: float) -> None:
        """One answer dated ``server_second`` (whole epoch seconds), to a request sent at
        local ``sent`` and read at local ``received`` (epoch seconds). One thread adds."""
        sample = (server_second - received, server_second + 2 - sent)
        self.samples.append(sample)
        lo, hi = self._intersection()
        if lo > hi:  # a clock was stepped (or the server's): start again from this sample
            self.samples.clear()
            self.samples.append(sample)
            lo, hi = sample
        self._bounds = (lo, hi)

    def _intersection(self) -> tuple[float, float]:
        return (max(lo for lo, _ in self.samples), min(hi for _, hi in self.samples))

    def bounds(self) -> tuple[float, float] | None:
        """The interval the samples allow (None before any): safe from any thread."""
        return self._bounds

    def estimate(self) -> float | None:
        """The lower bound (the tight one: the server's clock is at least this far ahead),
        None before any sample."""
        bounds = self.bounds()
        return None if bounds is None else round(bounds[0], 3)

    def beyond(self, limit: float) -> bool:
        """Is the offset surely more than ``limit`` seconds either way: every offset the
        samples allow? (A clock in sync whose samples still allow -1.2 s is not off.)"""
        bounds = self.bounds()
        return bounds is not None and (bounds[0] > limit or bounds[1] < -limit)

    def correction(self) -> float:
        """Seconds to add to the local clock: 0 when in sync as far as can be told, else
        the lower bound (the corrected clock is never ahead of the server's)."""
        bounds = self.bounds()
        if bounds is None or bounds[0] <= 0 <= bounds[1]:
            return 0.0
        return bounds[0]


def date_header(value: str | None) -> float | None:
    """An HTTP ``Date`` header in epoch seconds, None when missing or unreadable."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
