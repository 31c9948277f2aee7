"""Whether a live process serves a worker name: a task addressed to a name no process runs
(``--worker bilIing``, a typo) waits for ever, silently. ``after add`` and
:meth:`after.client.Client.schedule` warn when they write one; ``after show`` and the
dashboard say so of a waiting task.

Pure: the heartbeat documents of ``<db>_workers`` (:mod:`after.couch.registry`) and the paused names
(:mod:`after.couch.pausing`) in, ``now`` in milliseconds. The dashboard's ``model.js`` has the
twin of :func:`serving`, kept equal by ``tests/cases/serving.json``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from after.couch.registry import state
from after.rules import task as rules
from after.rules.calendar import calendar_name

SERVED, PAUSED, NONE = None, "paused", "none"

#: The statuses of a task that waits for a process of its name to claim it.
UNCLAIMED = (rules.WAITING, rules.RESCHEDULE)


def live_names(docs: Iterable[dict], now_ms: int) -> set[str]:
    """The worker names with at least one live process (a heartbeat within its lease, not
    stopping)."""
    return {doc["name"] for doc in docs if doc.get("type") == "worker"
            and isinstance(doc.get("name"), str) and state(doc, now_ms) == "live"}


def serving(name: str, docs: Iterable[dict], paused: Iterable[str], now_ms: int) -> str | None:
    """``None`` when a live process serves ``name``; ``"paused"`` when the name is paused
    (its processes start nothing); ``"none"`` when no live process has that name."""
    if name in set(paused):
        return PAUSED
    return SERVED if name in live_names(docs, now_ms) else NONE


def message(name: str, kind: str | None, docs: Iterable[dict], now_ms: int) -> str | None:
    """The sentence for :func:`serving`'s answer (None when served): names a live name
    close to ``name`` when there is one (a typo)."""
    if kind is SERVED:
        return None
    if kind == PAUSED:
        return (f"the worker name {name} is paused: its processes start nothing until "
                f"`after resume {name}`")
    names = sorted(live_names(docs, now_ms))
    close = difflib.get_close_matches(name, names, 1, 0.6)
    if close:
        hint = f" (did you mean {close[0]}?)"
    elif names:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        hint = f" (live names: {shown})"
    else:
        hint = " (no worker process is live at all)"
    return (f"no live process serves the worker name {name}{hint}: its tasks wait until one "
            f"starts (`after start {name}`)")


def unserved(doc: dict, docs: list[dict], paused: Iterable[str], now_ms: int) -> str | None:
    """:func:`serving` for a task that waits to be claimed (``waiting``, ``reschedule``);
    None for any other (held, running, finished; a shared calendar)."""
    name = doc.get("worker")
    if doc.get("status") not in UNCLAIMED or not isinstance(name, str) \
            or calendar_name(doc.get("_id")) is not None:
        return None
    return serving(name, docs, paused, now_ms)


def waits_unserved(doc: dict, docs: list[dict], paused: Iterable[str],
                   now_ms: int) -> str | None:
    """The sentence for a task that waits for a process of its name that none serves; None
    for a task held, running or finished, or one whose name is served."""
    kind = unserved(doc, docs, paused, now_ms)
    return None if kind is None else message(doc["worker"], kind, docs, now_ms)
