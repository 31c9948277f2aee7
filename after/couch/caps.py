"""Concurrency caps as the database holds them: ``"concurrency": {"key": K, "limit": N}``
allows at most N runs with the key K at once, across every process of every machine. A run
holds one of N slot documents, ``slot:K#0`` .. ``slot:K#<N-1>``, in ``<db>_workers`` (taken
and freed by the worker: :mod:`after.worker.gates`). This module is what the Client, the
command line and the dashboard read of them."""

from __future__ import annotations

from after.couch.store import NotFound

SLOT_PREFIX = "slot:"
#: Rate limits (``"rate": {"key": K, "limit": N, "per": S}``): N token documents,
#: ``rate:K#0`` .. ``rate:K#<N-1>``, each usable again ``per`` seconds after the run that
#: took it began (:class:`after.worker.gates.Rates`).
RATE_PREFIX = "rate:"


def slot_id(key: str, n: int) -> str:
    return f"{SLOT_PREFIX}{key}#{n}"


def token_id(key: str, n: int) -> str:
    return f"{RATE_PREFIX}{key}#{n}"


def in_use(store, db: str) -> list[dict]:
    """Every slot document (``after caps``, the dashboard): key, n, holder, task, since."""
    try:
        docs = store.prefixed(SLOT_PREFIX, db=db)
    except NotFound:
        return []
    out = []
    for doc in docs:
        key, _, n = doc["_id"][len(SLOT_PREFIX):].rpartition("#")
        out.append({"key": key, "n": int(n) if n.isdigit() else n, "holder": doc.get("holder"),
                    "task": doc.get("task"), "since": doc.get("since")})
    return out
