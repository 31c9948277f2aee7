"""The one module that speaks HTTP to CouchDB.

Everything else in ``after`` talks to the database through :class:`Store` (documents,
``_bulk_docs``, ``_find``, views, indexes, design documents) and :class:`ChangesFollower`
(the ``_changes`` feed). Failures come out as the typed errors below, never as raw HTTP
errors, and nothing here logs a URL with its password.

couchdb3 serves ``_find`` and Mango index creation. Everything else goes through the same
httpx session directly, because couchdb3 does not percent-encode document ids in paths
(``a/b`` or ``x?y`` would address another resource), hides the 201/202 distinction a
cluster-aware claim needs (on ``_bulk_docs`` too), and its ``get`` turns every failure, an
unreachable server included, into ``None``.

Failover: the URL may name several nodes of one CouchDB cluster, comma separated
(``http://admin:pw@db1:5984,http://db2:5984``). Requests go to one node at a time: the first
that answers. When a request cannot reach its node (refused, reset, closed mid-answer, timed
out) or the node answers with a 5xx, the store moves to the next node at once and sends the
request there; only after every node failed does it back off and try the round again. The
changes feed follows the store to the new node and resumes from its last sequence (on a
cluster, sequences are valid on every node). Nodes are never tried back while the current one
answers. A request sent again after a failure may have been applied the first time: every
write carries ``_rev``, so a second application is a 409, which callers already re-read and
decide on.

The headers follow what both CouchDB 3 and pouchdb-server do right: ``Accept-Encoding:
identity`` (pouchdb-server delivers nothing on a gzip-encoded continuous feed) and JSON
``Accept``/``Content-Type``.
"""

# Longer than 500 lines on purpose: DESIGN.md wants one module, and one only, to speak HTTP
# to CouchDB, with the differences between servers written down beside the calls.
from __future__ import annotations

import copy
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import couchdb3
import couchdb3.exceptions
import httpx

from after.config import mask_url, split_urls
from after.couch import tls
from after.rules.jsonsafe import loads

log = logging.getLogger("after.store")
#: View parameters CouchDB reads as plain strings, not JSON.
RAW_VIEW_PARAMS = frozenset({"stale", "update", "startkey_docid", "endkey_docid"})

HEADERS = {
    "Accept": "application/json",
    "Content-Type": "application/json",
    "Accept-Encoding": "identity",
}


class StoreError(Exception):
    """A request to the database failed."""

    status: int | None = None

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class Conflict(StoreError):
    """409: the document changed since the ``_rev`` we wrote against."""

    status = 409


class NotFound(StoreError):
    status = 404


class Unauthorized(StoreError):
    status = 401


class Forbidden(StoreError):
    """403: refused, e.g. by the ``validate_doc_update`` function; the message says why."""

    status = 403


class BadRequest(StoreError):
    status = 400


class Unavailable(StoreError):
    """The server could not be reached, or answered with a 5xx, after the retries."""


class NotCouchDB(StoreError):
    """The server that answers is not CouchDB (nor a CouchDB-compatible server): a URL that
    names another service. See :meth:`Store.check_couchdb`."""


#: Keys of the welcome (``GET /``) of CouchDB and of pouchdb-server.
WELCOME_KEYS = ("couchdb", "express-pouchdb")


_BY_STATUS = {409: Conflict, 404: NotFound, 401: Unauthorized, 403: Forbidden, 400: BadRequest}
_COUCHDB3_ERRORS = {
    couchdb3.exceptions.ConflictError: Conflict,
    couchdb3.exceptions.NotFoundError: NotFound,
    couchdb3.exceptions.UnauthorizedError: Unauthorized,
    couchdb3.exceptions.ForbiddenError: Forbidden,
    couchdb3.exceptions.BadRequestError: BadRequest,
}
_RETRYABLE = (httpx.TransportError,)
#: Seconds between looks, while a hedged request waits, at the node the store uses now.
HEDGE_CHECK = 0.1


def encode(body) -> str:
    """JSON for a request body; a value JSON cannot carry (``inf``, nesting too deep for
    Python) raises :class:`BadRequest` before anything is sent."""
    try:
        return json.dumps(body, allow_nan=False)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"cannot send as JSON: {type(exc).__name__}: {exc}") from None


def error_for(status: int, body: str) -> StoreError:
    try:
        data = json.loads(body)
        message = data.get("reason") or data.get("error") or body
    except (ValueError, AttributeError):
        message = body.strip() or f"HTTP {status}"
    if status >= 500:
        return Unavailable(f"server error {status}: {message}", status)
    return _BY_STATUS.get(status, StoreError)(str(message), status)


def _not_couchdb(node: Node, answer: str, body: str) -> str:
    return (f"{node.safe_url} is not a CouchDB server (GET / answered {answer}: "
            f"{_clip(body)}); check the URL and port (AFTER_COUCHDB_URL, --url, or host and "
            "port in config.json)")


def _clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def split_credentials(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """The URL without userinfo, and basic auth built from it."""
    parts = urlsplit(url)
    if parts.username is None:
        return url.rstrip("/"), None
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    auth = httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))
    return bare.rstrip("/"), auth


def doc_path(db: str, docid: str) -> str:
    """``db/id`` with the id percent-encoded; ``_design/x`` and ``_local/x`` keep their slash.
    The ids ``.`` and ``..`` are encoded too (``%2E``): as they are, the URL would name the
    database or the server itself."""
    for prefix in ("_design/", "_local/"):
        if docid.startswith(prefix):
            return f"{quote(db, safe='')}/{prefix}{segment(docid[len(prefix):])}"
    return f"{quote(db, safe='')}/{segment(docid)}"


def segment(text: str) -> str:
    """``text`` as one path segment."""
    quoted = quote(text, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


class Node:
    """One server (a cluster node) the store can talk to: its URL, credentials and client."""

    def __init__(self, url: str, index: int, timeout: float):
        self.url, self.auth = split_credentials(url)
        self.safe_url = mask_url(url)
        self.index = index
        self.client = httpx.Client(
            base_url=self.url + "/",
            auth=self.auth,
            headers=HEADERS,
            timeout=timeout,
            verify=tls.context(),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        self.databases: dict[str, couchdb3.Database] = {}

    def __repr__(self) -> str:
        return f"<Node {self.safe_url}>"


class _Failover:
    """Which node a store and its copies use now, and how often they moved."""

    def __init__(self):
        self.current = 0
        self.count = 0
        self.lock = threading.Lock()


class Store:
    """A CouchDB server (or the nodes of one cluster) and one default database on it.

    Requests that fail to reach the server are sent to the next node at once, then, once every
    node failed, retried ``retries`` times with exponential backoff and jitter, and finally
    raise :class:`Unavailable`.
    """

    def __init__(self, url: str, db: str = "tasks", *, timeout: float = 30.0, retries: int = 4):
        urls = split_urls(url)
        if not urls:
            raise ValueError("no CouchDB URL given")
        self.nodes = [Node(u, i, timeout) for i, u in enumerate(urls)]
        self.safe_url = mask_url(",".join(urls))
        self.db = db
        self.retries = retries
        self.timeout = timeout
        self._failover = _Failover()  # shared with the copies with_timeout makes
        self.hedge = False  # bulk writes hedged (see _hedged; with_timeout(hedge=True))

    @property
    def node(self) -> Node:
        """The node requests go to now."""
        return self.nodes[self._failover.current]

    @property
    def url(self) -> str:
        """The current node's URL, without credentials."""
        return self.node.url

    @property
    def auth(self) -> httpx.BasicAuth | None:
        return self.node.auth

    @property
    def client(self) -> httpx.Client:
        return self.node.client

    def failed(self, node: Node, why: str) -> Node:
        """``node`` did not answer: move to the next node (unless another thread already
        moved away from it); returns the node to use now."""
        state = self._failover
        with state.lock:
            if len(self.nodes) > 1 and state.current == node.index:
                state.current = (node.index + 1) % len(self.nodes)
                state.count += 1
                log.warning("%s does not answer (%s): moving to %s", node.safe_url, why,
                            self.nodes[state.current].safe_url)
            return self.nodes[state.current]

    @property
    def failovers(self) -> int:
        """How many times requests moved to another node."""
        return self._failover.count

    def close(self) -> None:
        for node in self.nodes:
            node.client.close()

    def with_timeout(self, timeout: float, retries: int = 1, hedge: bool = False) -> Store:
        """This store, on the same connections, with a shorter ``timeout`` and fewer
        ``retries`` per request: for the worker's loop, which must never wait long.
        ``hedge``: its bulk writes are hedged (:meth:`_hedged`): for the worker's writers."""
        quick = copy.copy(self)
        quick.timeout, quick.retries, quick.hedge = timeout, retries, hedge
        return quick

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.safe_url}/{self.db}>"

    # -- the two ways requests go out ------------------------------------------------------

    def _retrying(self, call: Callable[[Node], object]) -> object:
        delay = 0.1
        for attempt in range(self.retries + 1):
            for _ in self.nodes:  # one round: each node once, starting with the current one
                node = self.node
                try:
                    return call(node)
                except _RETRYABLE as exc:
                    failure = exc
                except Unavailable as exc:
                    failure = exc
                self.failed(node, describe_error(failure))
            if attempt < self.retries:
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
        if isinstance(failure, StoreError):
            raise failure
        raise Unavailable(f"cannot reach {self.safe_url}: {type(failure).__name__}") from None

    def _hedged(self, call: Callable[[Node], object]) -> object:
        """:meth:`_retrying`, sent again on the node used now if the store moves away from
        the node it is in flight to (another request, a heartbeat, found that node not
        answering); the first answer of the two is taken. A frozen node keeps a request
        until its timeout (a sync client cannot abort it), and the worker's writes must
        land before then: a run's end stuck 30 s on a SIGSTOPped node is a run that a kill
        meanwhile would have run again. Only for requests that may land twice: writes of
        documents that carry their ids, which a second landing answers as a conflict (read
        as the task now, as after a lost answer)."""
        if len(self.nodes) < 2:
            return self._retrying(call)
        answers: queue.SimpleQueue = queue.SimpleQueue()

        def send() -> None:
            try:
                answers.put((True, self._retrying(call)))
            except BaseException as exc:  # (given to the caller, raised there)
                answers.put((False, exc))

        sent_to, copies, failure = self._failover.current, 1, None
        threading.Thread(target=send, name="after-request", daemon=True).start()
        while copies:
            try:
                ok, value = answers.get(timeout=HEDGE_CHECK)
            except queue.Empty:
                if copies == 1 and failure is None and self._failover.current != sent_to:
                    log.info("a request in flight to %s, which does not answer: sent again "
                             "to %s", self.nodes[sent_to].safe_url, self.node.safe_url)
                    copies = 2
                    threading.Thread(target=send, name="after-request", daemon=True).start()
                continue
            if ok:
                return value
            copies, failure = copies - 1, value
        raise failure

    def request(self, method: str, path: str, *, body=None, params=None,
                hedge: bool = False) -> httpx.Response:
        """One HTTP request, retried while the server is unreachable; raises typed errors.
        ``hedge``: see :meth:`_hedged` (only for requests that may land twice)."""
        content = None if body is None else encode(body)

        def call(node: Node) -> httpx.Response:
            response = node.client.request(method, path, content=content, params=params,
                                           timeout=self.timeout)
            if response.status_code >= 400:
                raise error_for(response.status_code, response.text)
            return response

        return self._hedged(call) if hedge else self._retrying(call)

    def _couchdb3(self, call: Callable[[couchdb3.Database], object],
                  db: str | None) -> object:
        def translated(node: Node) -> object:
            try:
                return call(self._database(node, db))
            except couchdb3.exceptions.CouchDBError as exc:
                kind = _COUCHDB3_ERRORS.get(type(exc))
                if kind is None:
                    text = str(exc)
                    if isinstance(exc, couchdb3.exceptions.InternalServerError):
                        raise Unavailable(f"server error: {text}") from None
                    raise StoreError(text) from None
                raise error_for(kind.status, str(exc)) from None

        return self._retrying(translated)

    def _database(self, node: Node, db: str | None) -> couchdb3.Database:
        name = db or self.db
        database = node.databases.get(name)
        if database is None:
            database = couchdb3.Database(
                name, url=node.url, session=node.client, auth_method="basic",
                timeout=self.timeout,
            )
            # couchdb3 passes its own auth on each request: give it ours (None means none).
            database._auth = node.auth
            node.databases[name] = database
        return database

    # -- server and databases --------------------------------------------------------------

    def info(self) -> dict:
        return self.request("GET", "").json()

    def clock_sample(self) -> tuple[float, float, str | None]:
        """(local epoch seconds when sent, when answered, the answer's ``Date`` header): a
        sample of the server's clock for :class:`after.couch.clock.Offset`."""
        sent = time.time()
        response = self.request("GET", "")
        return sent, time.time(), response.headers.get("date")

    def check_couchdb(self) -> None:
        """Raise :class:`NotCouchDB` when the server's welcome (``GET /``) is not CouchDB's
        (``{"couchdb": "Welcome", ...}``) nor pouchdb-server's: another service answers at
        that URL, and its answers would make no sense to the rest of this module. A server
        that asks for credentials even there (401) may be CouchDB: no error."""
        node = self.node
        try:
            response = self.request("GET", "")
        except (Unauthorized, Forbidden):
            return
        except Unavailable:
            raise  # nothing answered, or a 5xx (a proxy before a CouchDB down): not ours
        except StoreError as exc:
            raise NotCouchDB(_not_couchdb(node, f"{exc.status or 'an error'}",
                                          str(exc))) from None
        try:
            welcome = response.json()
        except ValueError:
            welcome = None
        if isinstance(welcome, dict) and any(key in welcome for key in WELCOME_KEYS):
            return
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise NotCouchDB(_not_couchdb(node, f"{response.status_code} {kind}", response.text))

    def one_copy(self) -> bool:
        """True when the server keeps one copy of each document, so that a write it answered
        201 has no concurrent branch beside it: pouchdb-server, as its welcome says (no
        shards, no cluster). CouchDB is False, a single node too: a cluster may answer
        behind one address, and ``_membership`` is not every user's to read. False when the
        welcome cannot be read."""
        try:
            welcome = self.request("GET", "").json()
        except (StoreError, ValueError):
            return False
        return isinstance(welcome, dict) and "express-pouchdb" in welcome \
            and "couchdb" not in welcome

    def cluster_size(self) -> int:
        """How many nodes serve this database's server (1 for a single node, and for a
        server with no ``_membership``, such as pouchdb-server)."""
        try:
            nodes = self.request("GET", "_membership").json().get("cluster_nodes")
        except (StoreError, ValueError, AttributeError):
            return 1
        return len(nodes) if isinstance(nodes, list) and nodes else 1

    def ping(self) -> bool:
        """True when some node answers (the current one first)."""
        for node in self.nodes:
            try:
                node.client.get("", timeout=2.0)
                return True
            except httpx.TransportError:
                continue
        return False

    def database_exists(self, db: str | None = None) -> bool:
        try:
            self.request("HEAD", quote(db or self.db, safe=""))
            return True
        except NotFound:
            return False

    def create_database(self, db: str | None = None) -> bool:
        """Create the database; False when it already existed."""
        try:
            self.request("PUT", quote(db or self.db, safe=""))
            return True
        except StoreError as exc:
            if exc.status == 412:
                return False
            raise

    def replicates(self) -> bool:
        """Does the server run the replications of its ``_replicator`` database? Apache
        CouchDB does (its scheduler answers); pouchdb-server stores such documents and never
        runs them."""
        try:
            self.request("GET", "_scheduler/jobs", params={"limit": "0"})
            return True
        except StoreError as exc:
            if isinstance(exc, NotFound) or exc.status in (400, 404, 405, 501):
                return False
            raise

    def replication_state(self, docid: str) -> dict | None:
        """What CouchDB's replication scheduler says of the ``_replicator`` document
        ``docid`` (``state``: running, pending, crashing, failed, completed; ``info``: its
        counts or error), or None when it knows of none (a server without a scheduler,
        pouchdb-server: read the document's ``_replication_state`` instead)."""
        try:
            return self.request("GET", f"_scheduler/docs/_replicator/{segment(docid)}").json()
        except StoreError as exc:
            if isinstance(exc, NotFound) or exc.status in (400, 404, 405, 501):
                return None
            raise

    def compact(self, db: str | None = None) -> None:
        """Ask the server to compact the database (old revisions and deleted documents'
        bodies go; CouchDB does it in the background) and to drop the index files of
        design documents that no longer exist. Needs a server admin on CouchDB."""
        name = quote(db or self.db, safe="")
        self.request("POST", f"{name}/_compact", body={})
        self.request("POST", f"{name}/_view_cleanup", body={})

    def sizes(self, db: str | None = None) -> dict:
        """``{"file", "active", "compacting"}``: the database's size on disk and of its live
        data in bytes (CouchDB's ``sizes``; pouchdb-server gives the file only: ``active``
        None), and whether a compaction runs."""
        info = self.request("GET", quote(db or self.db, safe="")).json()
        sizes = info.get("sizes") if isinstance(info.get("sizes"), dict) else {}
        return {"file": sizes.get("file", info.get("disk_size")),
                "active": sizes.get("active"),
                "compacting": bool(info.get("compact_running"))}

    def delete_database(self, db: str | None = None) -> None:
        self.request("DELETE", quote(db or self.db, safe=""))

    # -- documents -------------------------------------------------------------------------

    def get(self, docid: str, *, db: str | None = None, **params) -> dict:
        """The document; raises :class:`NotFound`."""
        query = {k: json.dumps(v) if isinstance(v, bool) else v for k, v in params.items()}
        return loads(self.request("GET", doc_path(db or self.db, docid),
                                  params=query or None).content)

    def leaves(self, docid: str, *, db: str | None = None, r: int = 3) -> list[dict]:
        """Every leaf revision of the document (``open_revs=all``), deleted ones included,
        from ``r`` copies on a cluster (3: every copy of the default n=3; a node that is down
        does not answer and is not waited for; a single server ignores ``r``).

        On a cluster this is the read that sees a concurrent branch: right after two writes
        through two nodes were both accepted, a plain ``GET ?conflicts=true`` still misses
        the other branch about one time in five (measured), ``open_revs=all`` did not."""
        response = self.request("GET", doc_path(db or self.db, docid),
                                params={"open_revs": "all", "revs": "true", "r": str(r)})
        return tips([row["ok"] for row in response.json() if "ok" in row])

    def get_or_none(self, docid: str, *, db: str | None = None) -> dict | None:
        """The document, or None where there is none (the MemStore has this same method)."""
        try:
            return self.get(docid, db=db)
        except NotFound:
            return None

    def put(self, doc: dict, *, db: str | None = None) -> dict:
        """Create or update ``doc`` (its ``_rev`` is checked by the server).

        Sets the new ``_rev`` on ``doc`` and returns the server's answer with ``status``
        (201 confirmed by a quorum, 202 accepted but not yet confirmed on a cluster).
        Raises :class:`Conflict` when ``_rev`` is stale.
        """
        response = self.request("PUT", doc_path(db or self.db, doc["_id"]), body=doc)
        answer = response.json()
        doc["_rev"] = answer["rev"]
        answer["status"] = response.status_code
        return answer

    def post(self, doc: dict, *, db: str | None = None) -> dict:
        """Create a document with a server-chosen id; sets ``_id`` and ``_rev`` on ``doc``."""
        response = self.request("POST", quote(db or self.db, safe=""), body=doc)
        answer = response.json()
        doc["_id"], doc["_rev"] = answer["id"], answer["rev"]
        answer["status"] = response.status_code
        return answer

    def delete(self, docid: str, rev: str, *, db: str | None = None) -> None:
        self.request("DELETE", doc_path(db or self.db, docid), params={"rev": rev})

    def bulk_docs(self, docs: list[dict], *, db: str | None = None,
                  new_edits: bool = True) -> list[dict]:
        """Write many documents in one request; one result per document, in order.

        A result with ``error`` (``conflict``, ``forbidden``) is a per-document failure;
        successful results carry the new ``rev``, which is also set on the document. When
        the server answered 202 (a CouchDB cluster that could not confirm the writes with a
        quorum), successful results carry ``"accepted": True``: such a write may still lose
        to a concurrent one, so check it before acting on it. (couchdb3's ``bulk_docs``
        hides that status, so this goes through the session directly.) From a store made
        with ``hedge`` (:meth:`with_timeout`), sent again to the next node if the store moves
        away from the one it waits on (:meth:`_hedged`), when every document carries its id.
        """
        if not docs:
            return []
        ids = [doc["_id"] for doc in docs if "_id" in doc]
        if new_edits and len(ids) != len(set(ids)):
            # pouchdb-server answers "conflict" for the second copy yet stores it as a
            # conflicting branch of the document: never send one.
            raise ValueError("bulk_docs: the same document twice in one request")
        body: dict = {"docs": docs}
        if not new_edits:
            body["new_edits"] = False
        response = self.request("POST", f"{quote(db or self.db, safe='')}/_bulk_docs",
                                body=body, hedge=self.hedge and new_edits and len(ids) == len(docs))
        results = response.json()
        if all("_id" in doc for doc in docs) and new_edits:
            # CouchDB answers in request order; pouchdb-server puts failures first. Match by id.
            by_id = {result.get("id"): result for result in results}
            results = [by_id.get(doc["_id"], {"id": doc["_id"], "error": "missing"})
                       for doc in docs]
        for doc, result in zip(docs, results, strict=False):
            if "rev" in result and "error" not in result:
                doc["_rev"] = result["rev"]
                doc.setdefault("_id", result["id"])
                if response.status_code == 202:
                    result["accepted"] = True
        return results

    def bulk_get(self, ids: Iterable[str], *, db: str | None = None,
                 conflicts: bool = False) -> dict[str, dict]:
        """The current documents for ``ids`` (deleted and missing ones left out), by id
        (``conflicts``: with their ``_conflicts``, the other live leaves the copies read
        have; pouchdb-server answers the winner only, without them)."""
        return {docid: doc for docid, doc in self._current(ids, db or self.db, conflicts)
                if doc is not None and not doc.get("_deleted")}

    def revisions(self, ids: Iterable[str], *, db: str | None = None) -> dict[str, str | None]:
        """The current revision of each of ``ids`` (None: deleted or missing)."""
        return {docid: None if doc is None or doc.get("_deleted") else doc["_rev"]
                for docid, doc in self._current(ids, db or self.db)}

    def _current(self, ids: Iterable[str], db: str, conflicts: bool = False,
                 page: int = 2000) -> Iterator[tuple[str, dict | None]]:
        """The winning revision of each of ``ids`` (None: missing), a deleted one included,
        read with ``_bulk_get``, ``page`` ids a request (a page's documents at a time in
        memory: a burst's read back of 17,000 tasks keeps their revisions only).

        ``_bulk_get`` rather than ``_all_docs?keys=``: CouchDB reads the keys of the latter one
        document at a time, ten at once (``[fabric] all_docs_concurrency``), and the former in
        one batch per shard copy: 2,000 ids took 330-430 ms against 100-140 on an idle node,
        1,200-1,500 against 135-245 on the cluster (measured). Both are quorum reads on a
        cluster. CouchDB answers every leaf of a document, pouchdb-server its winner only
        (``{}`` for a deleted or missing one): the winner is CouchDB's (:func:`winner`), and a
        document with more than one leaf is read again with their histories, so that a copy
        that lags (an ancestor of another leaf, which a deletion would not beat) is not taken
        for a branch."""
        ids = list(dict.fromkeys(ids))
        for start in range(0, len(ids), page):
            chunk = ids[start:start + page]
            leaves = self._leaves_of(chunk, db)
            branched = [docid for docid in chunk if len(leaves.get(docid, ())) > 1]
            if branched:
                leaves.update(self._leaves_of(branched, db, revs=True))
            for docid in chunk:
                best = winner(leaves.get(docid) or [])
                if best is not None and not conflicts:
                    best.pop("_conflicts", None)  # (as a read by id has them: not asked)
                yield docid, best

    def _leaves_of(self, ids: list[str], db: str, revs: bool = False) -> dict[str, list[dict]]:
        """``_bulk_get`` of ``ids``: the leaves each copy read has (with ``revs``, those that
        are not an ancestor of another); an error other than a missing document raises."""
        answer = loads(self.request(
            "POST", f"{quote(db, safe='')}/_bulk_get", body={"docs": [{"id": i} for i in ids]},
            params={"revs": "true"} if revs else None).content)
        leaves: dict[str, list[dict]] = {}
        for result in answer.get("results") or []:
            docs = leaves.setdefault(result.get("id"), [])
            for entry in result.get("docs") or []:
                if not isinstance(entry, dict):
                    continue
                if isinstance(entry.get("ok"), dict):
                    docs.append(entry["ok"])
                elif isinstance(entry.get("error"), dict) \
                        and entry["error"].get("error") != "not_found":
                    raise StoreError(f"cannot read {result.get('id')!r} in {db}: "
                                     f"{entry['error'].get('error')}: "
                                     f"{entry['error'].get('reason')}")
        return {docid: tips(docs) for docid, docs in leaves.items()} if revs else leaves

    def prefixed(self, prefix: str, *, db: str | None = None,
                 conflicts: bool = False) -> list[dict]:
        """The documents whose id starts with ``prefix``, in id order (``conflicts``: with
        their ``_conflicts``, as this node's copies know them)."""
        params = {"startkey": json.dumps(prefix), "endkey": json.dumps(prefix + "\ufff0"),
                  "include_docs": "true"}
        if conflicts:
            params["conflicts"] = "true"
        rows = self.request(
            "GET", f"{quote(db or self.db, safe='')}/_all_docs", params=params,
        ).json()["rows"]
        return [row["doc"] for row in rows if row.get("doc")]

    # -- queries ---------------------------------------------------------------------------

    def find(
        self,
        selector: dict,
        *,
        db: str | None = None,
        limit: int = 100,
        sort: list | None = None,
        fields: list[str] | None = None,
        bookmark: str | None = None,
        skip: int = 0,
        use_index: str | list[str] | None = None,
    ) -> tuple[list[dict], str | None]:
        """One page of a Mango query: (documents, bookmark for the next page or None)."""
        docs, bookmark, _ = self._find(selector, db=db, limit=limit, sort=sort, fields=fields,
                                       bookmark=bookmark, skip=skip, use_index=use_index)
        return docs, bookmark

    def _find(self, selector: dict, *, db: str | None, limit: int, skip: int = 0,
              **options) -> tuple[list[dict], str | None, int]:
        """A page of a Mango query, and how many rows the server sent (for paging):
        pouchdb-server sends ``null`` for a document deleted between its index and its read
        (an intent withdrawn as a successor queries the open ones), which is left out."""
        answer = self._couchdb3(
            lambda database: database.find(selector, limit=limit, skip=skip, **options), db)
        rows = answer["docs"]
        return [doc for doc in rows if isinstance(doc, dict)], answer.get("bookmark"), len(rows)

    def find_all(self, selector: dict, *, db: str | None = None, page: int = 500,
                 sort: list | None = None) -> Iterator[dict]:
        """Every document matching ``selector``, a page at a time (memory stays bounded)."""
        bookmark, skip = None, 0
        while True:
            docs, bookmark, rows = self._find(selector, db=db, limit=page, sort=sort,
                                              bookmark=bookmark, skip=0 if bookmark else skip)
            yield from docs
            if rows < page:
                return
            # CouchDB pages with bookmarks; pouchdb-server returns none, so page with skip.
            skip += rows

    def view(self, ddoc: str, view: str, *, db: str | None = None, **params) -> list[dict]:
        """Rows of a map/reduce view; ``params`` are JSON-encoded as CouchDB expects, but
        for those it takes as they are (``stale``, ``update``...)."""
        query = {k: v if k in RAW_VIEW_PARAMS else json.dumps(v) for k, v in params.items()
                 if v is not None}
        path = f"{quote(db or self.db, safe='')}/_design/{quote(ddoc, safe='')}/_view/{view}"
        return loads(self.request("GET", path, params=query).content)["rows"]

    def save_index(self, fields: list[str], name: str, *, ddoc: str = "after-indexes",
                   db: str | None = None, partial: dict | None = None) -> str:
        """Create a Mango index (no-op when it exists); returns ``created`` or ``exists``."""
        index: dict = {"fields": fields}
        if partial:
            index["partial_filter_selector"] = partial
        result, _, _ = self._couchdb3(
            lambda database: database.save_index(index, ddoc=ddoc, name=name), db
        )
        return result

    def passthrough(self, method: str, path: str, *, body: bytes | None = None,
                    content_type: str | None = None, read_timeout: float | None = None
                    ) -> httpx.Response:
        """Send one request as given and return the response unread, for relaying.

        For the dashboard's proxy (:mod:`after.dashboard.server`), which decides what may
        pass: ``path`` is relative to the server and already percent-encoded (it may carry
        a query string), and is sent as it is. The store's credentials are added; the
        caller must ``close()`` the response, and reads it as it arrives
        (``iter_raw()``), so a ``_changes`` feed streams. Any status comes back as it is,
        not as a typed error: the page makes its own sense of CouchDB's answers. Nothing is
        retried (a write must not be sent twice); an unreachable server raises
        :class:`Unavailable`.
        """
        headers = {"Content-Type": content_type} if content_type else {}
        timeout = httpx.Timeout(self.timeout, read=read_timeout or self.timeout)
        node = self.node
        request = node.client.build_request(method, path.lstrip("/"), content=body,
                                            headers=headers, timeout=timeout)
        try:
            return node.client.send(request, stream=True)
        except httpx.TransportError as exc:
            self.failed(node, describe_error(exc))  # the next request goes to the next node
            raise Unavailable(f"cannot reach {node.safe_url}: {type(exc).__name__}") from None

    def follow(self, on_change: Callable[[dict], None], **options) -> ChangesFollower:
        """A follower of this database's ``_changes`` (see :class:`ChangesFollower`; not
        started). The in-memory store has the same method, so the worker asks for its feed
        here rather than naming the class."""
        return ChangesFollower(self, on_change, **options)

    def recent_ids(self, limit: int, *, db: str | None = None) -> tuple[list[str], bool]:
        """The ids of the documents of the newest ``limit`` changes, newest first (deleted
        ones left out), and whether that was every change of the database (fewer than
        ``limit``: then every document was seen): a bounded ``_changes`` scan backwards,
        which needs no index, so it answers at once on a database whose views were never
        queried. Without their documents: CouchDB reads a change's document one at a time;
        those wanted are read by id after (:meth:`bulk_get`, one batch). (Not filtered on
        the server: a ``_selector`` filter makes the server walk every change until
        ``limit`` match, measured 3.6 to 9.7 s on CouchDB 3 for 52,000 changes and no
        match.) On a sharded CouchDB database the shards' feeds are merged, so these are
        the newest per shard: nearly, not strictly, the newest of all."""
        answer = self.request("GET", f"{quote(db or self.db, safe='')}/_changes",
                              params={"descending": "true", "limit": str(limit)}).json()
        rows = answer.get("results", [])
        return [row["id"] for row in rows if not row.get("deleted")], len(rows) < limit

    def update_seq(self, db: str | None = None) -> str:
        """The database's current sequence (opaque): follow ``_changes`` from here."""
        answer = self.request(
            "GET", f"{quote(db or self.db, safe='')}/_changes",
            params={"since": "now", "limit": "0"},
        ).json()
        return answer["last_seq"]


def tips(leaves: list[dict]) -> list[dict]:
    """Of ``leaves`` read with their histories (``_revisions``, taken off), those that are
    no ancestor of another: a copy that lags may answer with an ancestor of another leaf,
    which is not a branch."""
    ancestors = set()
    for doc in leaves:
        history = doc.pop("_revisions", None) or {}
        start, hashes = history.get("start", 0), history.get("ids", [])
        ancestors.update(f"{start - n}-{rev}" for n, rev in enumerate(hashes) if n)
    return [doc for doc in leaves if doc.get("_rev") not in ancestors]


def winner(leaves: list[dict]) -> dict | None:
    """The revision CouchDB serves among ``leaves``, with ``_conflicts`` listing the other
    live ones: live before deleted, then the longest history, then the highest revision id
    (the same choice on every node)."""
    if not leaves:
        return None

    def order(doc: dict) -> tuple:
        position, _, digest = str(doc.get("_rev", "0-")).partition("-")
        return (not doc.get("_deleted"), int(position) if position.isdigit() else 0, digest)

    best = dict(max(leaves, key=order))
    others = [d["_rev"] for d in leaves if d["_rev"] != best["_rev"] and not d.get("_deleted")]
    if others:
        best["_conflicts"] = sorted(others, key=lambda rev: order({"_rev": rev}), reverse=True)
    return best


def changes_params(since, selector: dict | None, include_docs: bool) -> tuple[dict, dict]:
    params = {"since": str(since), "include_docs": "true" if include_docs else "false"}
    if include_docs:
        params["conflicts"] = "true"  # a replicated or clustered task may have several
    body: dict = {}
    if selector is not None:
        # pouchdb-server reads the selector from the query string, CouchDB from the body.
        params["filter"] = "_selector"
        params["selector"] = json.dumps(selector, separators=(",", ":"))
        body["selector"] = selector
    return params, body


class ChangesFollower:
    """Follows a continuous ``_changes`` feed in a thread of its own.

    Calls ``on_change(change)`` for each change, in order, on the follower thread, and
    remembers the last sequence it delivered; when the connection drops, the server stops
    answering, or nothing (not even a heartbeat) arrives for ``idle`` seconds, it reconnects
    with backoff and resumes from that sequence. With several nodes, a feed whose node fails
    tells the store (which moves to the next node) and reconnects at once to the store's
    current node, from the same sequence; it backs off only once every node failed in a row.
    ``on_state(connected: bool)`` is told when the feed connects and when it is lost.
    ``stop()`` ends it cleanly.
    """

    def __init__(
        self,
        store: Store,
        on_change: Callable[[dict], None],
        *,
        since="now",
        selector: dict | None = None,
        db: str | None = None,
        heartbeat: float = 5.0,
        idle: float | None = None,
        include_docs: bool = True,
        on_state: Callable[[bool], None] | None = None,
        max_backoff: float = 5.0,
    ):
        self.store = store
        self.on_change = on_change
        self.on_state = on_state or (lambda connected: None)
        self.since = since
        self.selector = selector
        self.db = db or store.db
        self.heartbeat = heartbeat
        self.idle = idle or heartbeat * 3
        self.include_docs = include_docs
        self.max_backoff = max_backoff
        self.connected = False
        self.reconnects = 0
        self._stopping = threading.Event()
        self._response: httpx.Response | None = None
        self._thread: threading.Thread | None = None
        self._connected_once = False  # the last attempt got as far as a 200
        # A client of its own: a long-lived stream must not hold one of the store's slots.
        self._node: Node | None = None
        self._client: httpx.Client | None = None

    def _client_for(self, node: Node) -> httpx.Client:
        if self._node is not node or self._client is None:
            if self._client is not None:
                self._client.close()
            self._client = httpx.Client(
                base_url=node.url + "/",
                auth=node.auth,
                headers=HEADERS,
                timeout=httpx.Timeout(10.0, read=self.idle),
                verify=tls.context(),
            )
            self._node = node
        return self._client

    def start(self) -> ChangesFollower:
        self._thread = threading.Thread(target=self.run, name="after-changes", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        response = self._response
        if response is not None:
            try:
                response.close()
            except Exception:  # closing from another thread may race the reader
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._client is not None:
            self._client.close()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            self.on_state(connected)

    def run(self) -> None:
        backoff = 0.1
        failed_in_a_row = 0
        while not self._stopping.is_set():
            try:
                self._follow_once()
                backoff, failed_in_a_row = 0.1, 0
            except Exception as exc:  # any failure: reconnect, never die
                if self._stopping.is_set():
                    break
                self._set_connected(False)
                if self._connected_once:
                    backoff, failed_in_a_row = 0.1, 0
                failed_in_a_row += 1
                node = self._node
                moved = False
                if node is not None and isinstance(exc, (httpx.TransportError, Unavailable)):
                    moved = self.store.failed(node, describe_error(exc)) is not node
                if moved and failed_in_a_row < len(self.store.nodes):
                    wait = 0.0  # another node: go there now
                else:
                    wait = backoff * (0.5 + random.random())
                    backoff = min(backoff * 2, self.max_backoff)
                log.warning("changes feed lost (%s); reconnecting to %s from %s in %.1fs",
                            describe_error(exc), self.store.node.safe_url,
                            short_seq(self.since), wait)
                self._stopping.wait(wait)
                self.reconnects += 1
        self._set_connected(False)

    def _follow_once(self) -> None:
        self._connected_once = False
        client = self._client_for(self.store.node)
        params, body = changes_params(self.since, self.selector, self.include_docs)
        params.update(feed="continuous", heartbeat=str(int(self.heartbeat * 1000)))
        path = f"{quote(self.db, safe='')}/_changes"
        request = client.build_request("POST", path, params=params, content=json.dumps(body))
        response = client.send(request, stream=True)
        self._response = response
        try:
            if response.status_code >= 400:
                response.read()
                raise error_for(response.status_code, response.text)
            self._connected_once = True
            self._set_connected(True)
            for line in feed_lines(response):
                if self._stopping.is_set():
                    return
                if not line.strip():
                    continue  # heartbeat
                try:
                    change = loads(line)  # a document too deep or odd for json: still read
                except ValueError as exc:  # skipped, not retried for ever: polls catch up
                    log.warning("unreadable line of the changes feed skipped (%s)",
                                type(exc).__name__)
                    continue
                if "last_seq" in change and "id" not in change:
                    self.since = change["last_seq"]
                    return  # the server ended the feed; reconnect from there
                self.on_change(change)
                self.since = change["seq"]
            if not self._stopping.is_set():
                raise Unavailable("feed closed by the server")
        finally:
            self._response = None
            response.close()


def feed_lines(response: httpx.Response) -> Iterator[bytes]:
    """The lines of a continuous feed, split on ``\n`` only. (httpx's ``iter_lines`` also
    splits on U+0085, U+2028 and other Unicode line breaks, which JSON carries unescaped
    inside strings: one task with such a character in a field would stop the feed.)"""
    buffer = b""
    for chunk in response.iter_bytes():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from lines
    if buffer:
        yield buffer


def short_seq(seq) -> str:
    """A sequence for a log line: a cluster's are long opaque strings."""
    text = str(seq)
    return text if len(text) <= 24 else text[:20] + "..."


def describe_error(exc: BaseException) -> str:
    """A short description of a failure, with no URL (and so no credentials) in it."""
    if isinstance(exc, StoreError):
        return str(exc)
    if isinstance(exc, httpx.ReadTimeout):
        return "no data or heartbeat in time"
    return type(exc).__name__
