"""The registry of worker processes in ``<db>_workers``, as ``after list`` and ``after clean``
see it: one heartbeat document per live process (``NAME@host:pid:token``, written by
:mod:`after.worker.peers`), which says until when it is valid (``expires``)."""

from __future__ import annotations

from after.couch.store import NotFound, Store
from after.rules.dates import parse_date, to_ms


def expiry(doc: dict) -> int:
    """A heartbeat's ``expires`` in epoch ms (0 when unreadable: treated as expired)."""
    try:
        return to_ms(parse_date(doc.get("expires"), "expires"))
    except ValueError:
        return 0


def dead_entries(docs: list[dict], now_ms: int, *, grace: float = 0.0,
                 keep: tuple[str, ...] = ()) -> list[dict]:
    """The deletions that prune the heartbeats of ``docs`` expired more than ``grace``
    seconds before ``now_ms`` (never those in ``keep``). The one pruning rule: a worker
    prunes its name's entries after a long grace, ``after clean`` at once."""
    before = now_ms - int(grace * 1000)
    return [{"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True} for doc in docs
            if expiry(doc) < before and doc["_id"] not in keep]


def registry(store: Store, db: str, name: str | None = None) -> list[dict]:
    """The heartbeat documents of the processes named ``name`` (of every name by default);
    an empty list when the registry does not exist yet."""
    try:
        docs = store.prefixed(f"{name}@" if name else "", db=db)
    except NotFound:
        return []
    return [doc for doc in docs if doc.get("type") == "worker"]


def prune(store: Store, db: str, name: str | None, now_ms: int, grace: float = 0.0) -> int:
    """Delete the expired heartbeats of ``name`` (every name by default); how many went."""
    dead = dead_entries(registry(store, db, name), now_ms, grace=grace)
    if not dead:
        return 0
    return sum(1 for result in store.bulk_docs(dead, db=db) if "error" not in result)


def state(doc: dict, now_ms: int) -> str:
    """``live``, ``stopping`` or ``stale`` (expired: dead, or too slow to beat)."""
    if expiry(doc) < now_ms:
        return "stale"
    return "stopping" if doc.get("stopping") else "live"
