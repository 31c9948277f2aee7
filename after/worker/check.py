"""The self-check: what this process holds with nothing behind it. Pure.

A task held with no timer entry (and not waiting in line for room, nor for a gate) would
never run until the process stops; a run that no job thread is on (and whose end is not on
its way) would stay for ever. :func:`stuck` finds them; only what two checks in a row find
counts (a timer entry that has just fired, a run whose end is in the inbox, are on their way
through the loop).
"""

from __future__ import annotations

from collections.abc import Callable, Collection


def stuck(held: Collection[str], runs: dict, timed: Callable[[str], bool],
          waiting: Collection[str], active: Collection[str], writing: Collection[str],
          suspects: set) -> tuple[list[str], list[str], set]:
    """(held task ids, run tokens) found stuck twice in a row, and the suspects for the next
    check. ``runs``: token -> task id of the runs; ``timed(docid)``: has a timer entry;
    ``waiting``: tasks in line or at a gate; ``active``: tokens a job thread is on or has
    queued; ``writing``: tasks with a write in flight or decided."""
    now = {("held", docid) for docid in held
           if not timed(docid) and docid not in waiting}
    now |= {("run", token) for token, docid in runs.items()
            if token not in active and docid not in writing}
    found = now & suspects
    return ([ident for kind, ident in sorted(found) if kind == "held"],
            [ident for kind, ident in sorted(found) if kind == "run"], now - found)
