"""The self-check: what a worker process claims in the database with nothing behind it.

A task ``scheduled`` under this process with no timer entry, or ``running`` under it with no
job thread (and no timer entry to launch it: a start written ahead of its due instant is
``running`` on the timer until then), would stay stuck until the process dies.
:func:`stuck` finds such tasks; only what two checks in a row find counts (a timer entry
that has just fired, or a start being confirmed, is on its way through the loop's inbox).
Pure: the worker passes what it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping


def stuck(owned: Mapping[str, str], held: Mapping, timed: Callable[[str], bool],
          active: Collection[str], writing: Collection[str], suspects: dict
          ) -> tuple[list[tuple[str, str, str]], dict]:
    """``(docid, status, why)`` of each stuck task, and the suspects for the next check.

    ``owned``: id -> status written or seen under this process; ``held``: id -> its
    :class:`~after.runner.Held`; ``timed(id)``: is it on the timer; ``active``: tokens of
    the runs job threads are on; ``writing``: ids with a write on its way; ``suspects``:
    what the previous check returned."""
    broken, found_now = [], {}
    for docid in (set(owned) | set(held)) - set(writing):
        entry = held.get(docid)
        if entry is None:
            found = (owned[docid], "nothing in memory")
        elif not entry.running and not timed(docid):
            found = ("scheduled", "no timer entry")
        elif entry.running and entry.token not in active and not (
                getattr(entry, "waiting_to_launch", False) and timed(docid)):
            found = ("running", "no job thread")
        else:
            continue
        if suspects.get(docid) == (found, id(entry)):
            broken.append((docid, *found))
        else:
            found_now[docid] = (found, id(entry))
    return broken, found_now
