"""A whole worker name paused (``after pause NAME``, ``after resume NAME``).

The pause is one document in ``<db>_workers``, ``NAME@paused``, beside the heartbeats of the
name's processes (``NAME@host:pid:token``): each process reads it with its heartbeats, every
``--heartbeat`` second (:meth:`after.worker.peers.Peers.refresh`), so a pause or a resume takes
effect within about a second on every running process, on every machine, and holds across
restarts (a process that starts while its name is paused starts nothing). Resuming deletes
the document. ``after pause`` returns once every live process of the name acknowledged the
pause in its heartbeat (:func:`acknowledgements`), or says which did not.

While its name is paused, a process starts nothing (the worker's loop drops what it held on
its timer, with nothing to write: a held task was never claimed), and the runs going finish
and are recorded. On resume, the tasks are found again by the poll, as after a worker
restart: a task whose date passed meanwhile is caught up by its ``catchup`` policy
(:mod:`after.rules.catchup`: by default its latest occurrence due runs once, not once per missed
period, and the others are recorded missed).
"""

from __future__ import annotations

from datetime import datetime

from after.couch import registry
from after.couch.store import Conflict, NotFound, Store
from after.rules.dates import format_date

PAUSE = "pause"  # the document's type
SUFFIX = "@paused"


def pause_id(name: str) -> str:
    return f"{name}{SUFFIX}"


def is_pause(doc: dict | None, name: str | None = None) -> bool:
    """``doc`` is the pause document of a name (of ``name``, when given)."""
    if not isinstance(doc, dict) or doc.get("_deleted") or doc.get("type") != PAUSE:
        return False
    who = doc.get("name")
    return isinstance(who, str) and doc.get("_id") == pause_id(who) and (
        name is None or who == name)


def pause(store: Store, db: str, name: str, now: datetime, by: str | None = None) -> dict:
    """Pause ``name``; returns its pause document (the one there already, if paused)."""
    doc = {"_id": pause_id(name), "type": PAUSE, "name": name, "since": format_date(now)}
    if by:
        doc["by"] = by
    try:
        store.put(doc, db=db)
        return doc
    except Conflict:
        current = store.get_or_none(pause_id(name), db=db)
        if is_pause(current, name):
            return current
        raise


def beats(store: Store, db: str, name: str) -> dict[str, str]:
    """The revision of each heartbeat of ``name`` now (read before a pause is written)."""
    return {doc["_id"]: doc["_rev"] for doc in registry.registry(store, db, name)}


def acknowledgements(store: Store, db: str, name: str, before: dict[str, str],
                     now_ms: int) -> tuple[list[str], list[str]]:
    """The live processes of ``name`` that acknowledged its pause, and those that have not
    yet: a process
    acknowledges with a heartbeat written since ``before`` (:func:`beats`) that says
    ``paused``, which it publishes once its loop applied the pause (it starts nothing from
    then on). A process whose heartbeat expired is not waited for (its partitions go to the
    others, which are paused too)."""
    done, waiting = [], []
    for doc in registry.registry(store, db, name):
        if registry.state(doc, now_ms) == "stale":
            continue
        if doc.get("paused") and doc.get("_rev") != before.get(doc["_id"]):
            done.append(doc["_id"])
        else:
            waiting.append(doc["_id"])
    return sorted(done), sorted(waiting)


def resume(store: Store, db: str, name: str, attempts: int = 5) -> bool:
    """Resume ``name``; False when it was not paused."""
    for _ in range(attempts):
        current = store.get_or_none(pause_id(name), db=db)
        if current is None:
            return False
        try:
            store.delete(current["_id"], current["_rev"], db=db)
            return True
        except (Conflict, NotFound):
            continue
    raise Conflict(f"{pause_id(name)}: changed {attempts} times while being removed")


def paused(store: Store, db: str) -> dict[str, dict]:
    """The names paused: name -> its pause document (empty when the registry does not
    exist yet)."""
    try:
        docs = store.prefixed("", db=db)
    except NotFound:
        return {}
    return {doc["name"]: doc for doc in docs if is_pause(doc)}
