"""An in-memory :class:`~after.couch.store.Store`, for tests of the worker without a server.

It keeps the contract the worker relies on, the one ``tests/integration/test_store_contract.py``
holds against CouchDB and pouchdb-server as well: revisions checked on every write (a stale
``_rev`` is a :class:`~after.couch.store.Conflict`, or a ``conflict`` result in ``_bulk_docs``), the
same document twice in one ``_bulk_docs`` refused, conflicting branches (written with
``new_edits=False``) reported by ``conflicts=True`` with CouchDB's winner, the ``due`` view of
:mod:`after.couch.schema`, simple Mango selectors, and a changes feed (:meth:`MemStore.follow`) that
delivers every change after ``since`` with its document.

What it leaves out: validation functions (the fake takes any document), attachments, design
documents other than as plain documents, and clusters (every write is confirmed, 201).
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable

from after.config import databases
from after.couch.store import BadRequest, Conflict, NotFound, Store, encode
from after.rules.dates import DateError, parse_date, to_ms

__all__ = ["MemStore", "MemFollower", "matches"]


def _rev_key(rev: str) -> tuple[int, str]:
    number, _, digest = rev.partition("-")
    return int(number), digest


class _Doc:
    """A document's branches: rev -> body (deleted branches kept as ``_deleted``)."""

    def __init__(self) -> None:
        self.branches: dict[str, dict] = {}

    def live(self) -> list[str]:
        return sorted((r for r, d in self.branches.items() if not d.get("_deleted")),
                      key=_rev_key, reverse=True)

    def winner(self) -> str | None:
        live = self.live()
        if live:
            return live[0]
        return max(self.branches, key=_rev_key) if self.branches else None



def as_sent(doc: dict) -> dict:
    """A document as a server keeps it: through JSON, as :class:`~after.couch.store.Store`
    sends it, so that a value no server takes (a set, ``inf``) fails here as it fails there,
    and tuples come back lists."""
    return json.loads(encode(doc))

class MemStore:
    """Databases in a dict, behind one lock; the same method surface the worker uses."""

    url = "memory://"
    safe_url = "memory://"

    def __init__(self, db: str = "tasks"):
        self.db = db
        self._dbs: dict[str, dict[str, _Doc]] = {}
        self._seqs: dict[str, dict[str, int]] = {}  # db -> id -> its last change's seq
        self._total: dict[str, int] = {}  # db -> its update sequence
        self._lock = threading.RLock()
        self._followers: list[MemFollower] = []
        for name in databases(db):
            self.create_database(name)

    # -- databases --------------------------------------------------------------------------

    def close(self) -> None:
        pass

    def with_timeout(self, timeout: float, retries: int = 1, hedge: bool = False) -> MemStore:
        return self

    def clock_sample(self) -> tuple[float, float, str | None]:
        """No server clock to sample: the same clock (no ``Date``)."""
        now = time.time()
        return now, now, None

    def cluster_size(self) -> int:
        return 1

    def one_copy(self) -> bool:
        """False: the fake plays a cluster's branches (its takes are read back as there)."""
        return False

    def __enter__(self) -> MemStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ping(self) -> bool:
        return True

    def database_exists(self, db: str | None = None) -> bool:
        return (db or self.db) in self._dbs

    def create_database(self, db: str | None = None) -> bool:
        with self._lock:
            if (db or self.db) in self._dbs:
                return False
            self._dbs[db or self.db] = {}
            self._seqs[db or self.db] = {}
            return True

    def delete_database(self, db: str | None = None) -> None:
        with self._lock:
            if self._dbs.pop(db or self.db, None) is None:
                raise NotFound("not_found: Database does not exist.", 404)
            self._seqs.pop(db or self.db, None)

    def _db(self, db: str | None) -> dict[str, _Doc]:
        try:
            return self._dbs[db or self.db]
        except KeyError:
            raise NotFound("not_found: Database does not exist.", 404) from None

    # -- documents --------------------------------------------------------------------------

    def _current(self, docs: dict[str, _Doc], docid: str, conflicts: bool = False
                 ) -> dict | None:
        entry = docs.get(docid)
        rev = entry.winner() if entry else None
        if rev is None or entry.branches[rev].get("_deleted"):
            return None
        doc = copy.deepcopy(entry.branches[rev])
        losers = entry.live()[1:]
        if conflicts and losers:
            doc["_conflicts"] = losers
        return doc

    def get(self, docid: str, *, db: str | None = None, conflicts: bool = False,
            **params) -> dict:
        with self._lock:
            doc = self._current(self._db(db), docid, conflicts)
        if doc is None:
            raise NotFound("not_found: missing", 404)
        return doc

    def leaves(self, docid: str, *, db: str | None = None, r: int = 3) -> list[dict]:
        """Every leaf revision of the document, deleted ones included (``open_revs=all``)."""
        with self._lock:
            entry = self._db(db).get(docid)
            if entry is None:
                raise NotFound("not_found: missing", 404)
            return [copy.deepcopy(body) for body in entry.branches.values()]

    get_or_none = Store.get_or_none  # the one definition, over this class's get

    def put(self, doc: dict, *, db: str | None = None) -> dict:
        [result] = self.bulk_docs([doc], db=db)
        if result.get("error") == "conflict":
            raise Conflict("conflict: Document update conflict.", 409)
        return {"ok": True, "id": doc["_id"], "rev": result["rev"], "status": 201}

    def post(self, doc: dict, *, db: str | None = None) -> dict:
        doc["_id"] = uuid.uuid4().hex
        return self.put(doc, db=db)

    def delete(self, docid: str, rev: str, *, db: str | None = None) -> None:
        self.put({"_id": docid, "_rev": rev, "_deleted": True}, db=db)

    def bulk_docs(self, docs: list[dict], *, db: str | None = None,
                  new_edits: bool = True) -> list[dict]:
        if not docs:
            return []
        ids = [doc["_id"] for doc in docs if "_id" in doc]
        if new_edits and len(ids) != len(set(ids)):
            raise ValueError("bulk_docs: the same document twice in one request")
        encode(docs)  # a request JSON cannot carry fails whole, before anything is written
        results, changed = [], []
        with self._lock:
            store = self._db(db)
            for doc in docs:
                doc.setdefault("_id", uuid.uuid4().hex)
                result = (self._write(store, doc) if new_edits
                          else self._replicate(store, doc))
                results.append(result)
                if "error" not in result:
                    changed.append(doc["_id"])
            seqs = self._seqs[db or self.db]
            for docid in changed:
                seqs.pop(docid, None)
                seqs[docid] = self._total[db or self.db] = self._counter(db or self.db) + 1
        for docid in changed:
            self._notify(db or self.db, docid)
        return results

    def _write(self, store: dict[str, _Doc], doc: dict) -> dict:
        docid = doc["_id"]
        entry = store.get(docid)
        winner = entry.winner() if entry else None
        rev = doc.get("_rev")
        live = winner is not None and not entry.branches[winner].get("_deleted")
        if rev is None:
            if live:
                return {"id": docid, "error": "conflict", "reason": "Document update conflict."}
            parent = winner  # a new document, or one written again after its deletion
        elif entry is None or rev not in entry.live():
            return {"id": docid, "error": "conflict", "reason": "Document update conflict."}
        else:
            parent = rev
        number = _rev_key(parent)[0] + 1 if parent else 1
        new_rev = f"{number}-{uuid.uuid4().hex}"
        body = as_sent({k: v for k, v in doc.items() if k != "_conflicts"})
        body["_rev"] = new_rev
        entry = store.setdefault(docid, _Doc())
        entry.branches.pop(parent, None)
        entry.branches[new_rev] = body
        doc["_rev"] = new_rev
        return {"ok": True, "id": docid, "rev": new_rev}

    def _replicate(self, store: dict[str, _Doc], doc: dict) -> dict:
        """``new_edits=False``: store the revision as given, beside the others (a branch)."""
        entry = store.setdefault(doc["_id"], _Doc())
        history = doc.get("_revisions") or {}
        ids, start = history.get("ids") or [], history.get("start", 0)
        if len(ids) > 1:  # a child of a leaf: that leaf is one no more
            entry.branches.pop(f"{start - 1}-{ids[1]}", None)
        body = as_sent(doc)
        body.pop("_revisions", None)
        entry.branches[doc["_rev"]] = body
        return {"ok": True, "id": doc["_id"], "rev": doc["_rev"]}

    def bulk_get(self, ids: Iterable[str], *, db: str | None = None,
                 conflicts: bool = False) -> dict[str, dict]:
        with self._lock:
            store = self._db(db)
            found = {docid: self._current(store, docid, conflicts) for docid in ids}
        return {docid: doc for docid, doc in found.items() if doc is not None}

    def revisions(self, ids: Iterable[str], *, db: str | None = None) -> dict[str, str | None]:
        with self._lock:
            store = self._db(db)
            found = {docid: self._current(store, docid) for docid in ids}
        return {docid: doc["_rev"] if doc is not None else None for docid, doc in found.items()}

    def prefixed(self, prefix: str, *, db: str | None = None,
                 conflicts: bool = False) -> list[dict]:
        with self._lock:
            store = self._db(db)
            docs = [self._current(store, docid, conflicts) for docid in sorted(store)
                    if docid.startswith(prefix)]
        return [doc for doc in docs if doc is not None]

    def _all(self, db: str | None) -> list[dict]:
        with self._lock:
            store = self._db(db)
            docs = [self._current(store, docid, conflicts=True) for docid in sorted(store)]
        return [doc for doc in docs if doc is not None]

    # -- queries ----------------------------------------------------------------------------

    def find(self, selector: dict, *, db: str | None = None, limit: int = 100,
             sort: list | None = None, fields: list[str] | None = None,
             bookmark: str | None = None, skip: int = 0, use_index=None
             ) -> tuple[list[dict], str | None]:
        docs = [d for d in self._all(db) if not d["_id"].startswith("_design/")
                and matches(d, selector)]
        for doc in docs:
            doc.pop("_conflicts", None)
        for field in reversed(sort or []):
            name, order = next(iter(field.items())) if isinstance(field, dict) \
                else (field, "asc")
            docs.sort(key=lambda d: _collate(d.get(name)), reverse=order == "desc")
        start = int(bookmark) if bookmark else skip
        page = docs[start:start + limit]
        if fields:
            page = [{k: d[k] for k in fields if k in d} for d in page]
        return page, str(start + len(page))

    def find_all(self, selector: dict, *, db: str | None = None, page: int = 500,
                 sort: list | None = None):
        docs, _ = self.find(selector, db=db, limit=10 ** 9, sort=sort)
        yield from docs

    def view(self, ddoc: str, view: str, *, db: str | None = None, startkey=None,
             endkey=None, include_docs: bool = False, conflicts: bool = False,
             limit: int | None = None, **params) -> list[dict]:
        if (ddoc, view) != ("after", "due"):
            raise NotFound(f"not_found: no view {ddoc}/{view} in the memory store", 404)
        rows = []
        for doc in self._all(db):
            key = due_key(doc)
            if key is None:
                continue
            if startkey is not None and _collate(key) < _collate(startkey):
                continue
            if endkey is not None and _collate(key) > _collate(endkey):
                continue
            if not conflicts:
                doc.pop("_conflicts", None)
            row = {"id": doc["_id"], "key": key, "value": None}
            if include_docs:
                row["doc"] = doc
            rows.append(row)
        rows.sort(key=lambda r: (_collate(r["key"]), r["id"]))
        return rows[:limit] if limit is not None else rows

    def save_index(self, fields: list[str], name: str, *, ddoc: str = "after-indexes",
                   db: str | None = None, partial: dict | None = None) -> str:
        """Indexes only speed a server up: the fake scans, and keeps nothing."""
        return "exists"

    def update_seq(self, db: str | None = None) -> str:
        with self._lock:
            return str(self._counter(db or self.db))

    def _counter(self, db: str) -> int:
        return self._total.get(db, 0)

    # -- the changes feed -------------------------------------------------------------------

    def follow(self, on_change: Callable[[dict], None], *, since="now",
               selector: dict | None = None, db: str | None = None,
               on_state: Callable[[bool], None] | None = None, **ignored) -> MemFollower:
        """A follower of this store's changes; :meth:`MemFollower.start` delivers them."""
        return MemFollower(self, on_change, since=since, selector=selector, db=db or self.db,
                           on_state=on_state)

    def recent_ids(self, limit: int, *, db: str | None = None) -> tuple[list[str], bool]:
        """The ids of the newest ``limit`` changes, newest first (deleted left out), and
        whether that was every change."""
        with self._lock:
            order = sorted(self._seqs[db or self.db].items(), key=lambda item: -item[1])
            return [docid for docid, _ in order[:limit]
                    if self._current(self._db(db), docid) is not None], len(order) < limit

    def changes(self, db: str | None = None, since: int = 0) -> list[dict]:
        """The changes after sequence ``since``, each with its document (the newest change
        of each document only, as CouchDB gives)."""
        with self._lock:
            store = self._db(db)
            out = []
            for docid, seq in self._seqs[db or self.db].items():
                if seq <= since:
                    continue
                doc = self._current(store, docid, conflicts=True)
                change = {"seq": str(seq), "id": docid}
                if doc is None:
                    change["deleted"] = True
                else:
                    change["doc"] = doc
                out.append(change)
            return out

    def _notify(self, db: str, docid: str) -> None:
        with self._lock:
            followers = [f for f in self._followers if f.db == db]
        for follower in followers:
            follower.wake()


class MemFollower:
    """Delivers a :class:`MemStore`'s changes on a thread of its own, in order, like
    :class:`~after.couch.store.ChangesFollower` (``start``, ``stop``, ``connected``)."""

    def __init__(self, store: MemStore, on_change, *, since, selector, db, on_state=None):
        self.store = store
        self.on_change = on_change
        self.on_state = on_state or (lambda connected: None)
        self.db = db
        self.selector = selector
        self.since = int(store.update_seq(db) if since == "now" else since or 0)
        self.connected = False
        self._event = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MemFollower:
        with self.store._lock:
            self.store._followers.append(self)
        self._thread = threading.Thread(target=self._run, name="after-memfeed", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._event.set()
        with self.store._lock:
            if self in self.store._followers:
                self.store._followers.remove(self)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wake(self) -> None:
        self._event.set()

    def deliver(self) -> int:
        """Deliver what changed since the last call; returns how many changes."""
        changes = self.store.changes(self.db, self.since)
        for change in changes:
            self.since = int(change["seq"])
            doc = change.get("doc")
            if self.selector and (doc is None or not matches(doc, self.selector)):
                continue
            self.on_change(change)
        return len(changes)

    def _run(self) -> None:
        self.connected = True
        self.on_state(True)
        while not self._stopping.is_set():
            self._event.wait(1.0)
            self._event.clear()
            if not self._stopping.is_set():
                self.deliver()
        self.connected = False
        self.on_state(False)


def due_key(doc: dict) -> list | None:
    """The key of :mod:`after.couch.schema`'s ``due`` view for ``doc`` (None: not in the view)."""
    if doc["_id"].startswith("_design/"):
        return None
    if not isinstance(doc.get("worker"), str) or not isinstance(doc.get("status"), str):
        return None
    try:
        due = to_ms(parse_date(doc.get("date"), "date"))
    except (DateError, ValueError, TypeError):
        due = 0
    return [doc["worker"], doc["status"], due, doc["_id"]]


def _collate(value):
    """A sort key in CouchDB's view collation order: null, false, true, numbers, strings,
    arrays, objects."""
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, list):
        return (4, tuple(_collate(v) for v in value))
    return (5,)


OPERATORS = {
    "$eq": lambda v, a: v == a, "$ne": lambda v, a: v != a,
    "$lt": lambda v, a: v is not None and _collate(v) < _collate(a),
    "$lte": lambda v, a: v is not None and _collate(v) <= _collate(a),
    "$gt": lambda v, a: v is not None and _collate(v) > _collate(a),
    "$gte": lambda v, a: v is not None and _collate(v) >= _collate(a),
    "$in": lambda v, a: v in a, "$nin": lambda v, a: v not in a,
    "$exists": lambda v, a: (v is not None) == a,
}


def matches(doc: dict, selector: dict) -> bool:
    """Whether ``doc`` matches a Mango selector (fields with values or ``$eq $ne $lt $lte
    $gt $gte $in $nin $exists``; ``$and``/``$or`` of those)."""
    for field, condition in selector.items():
        if field == "$and":
            if not all(matches(doc, s) for s in condition):
                return False
            continue
        if field == "$or":
            if not any(matches(doc, s) for s in condition):
                return False
            continue
        value = doc
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(condition, dict) and condition and all(k.startswith("$")
                                                             for k in condition):
            for op, argument in condition.items():
                if op not in OPERATORS:
                    raise BadRequest(f"invalid_operator: {op} in the memory store", 400)
                if not OPERATORS[op](value, argument):
                    return False
        elif value != condition:
            return False
    return True
