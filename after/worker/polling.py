"""The feed's safety net: what the ``due`` view says a worker name should look at.

The feed brings changes; polling is how tasks created long ago come into the horizon, and
how a worker finds the tasks of a holder that may be gone.

At start, before its first view query, a worker reads the newest changes (a bounded scan,
:func:`scan_recent`) for its tasks: that needs no index, so the tasks written last (a bulk
import, a backlog, the tasks of a first start) run while the server builds the view, which
on a large database never queried takes seconds (CouchDB 3) to minutes (pouchdb-server,
which indexes on query). The view query that follows is complete.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

from after.couch.store import describe_error
from after.rules import task as rules
from after.rules.dates import to_ms, utcnow
from after.worker import partitions as parts

log = logging.getLogger("after.worker")


def query_due(store, name: str, settings, now: datetime, cursor: dict | None = None
              ) -> tuple[list[dict], dict]:
    """``name``'s tasks due within the horizon, and those whose holder may be gone (raises
    StoreError), a page of each status at most; and the cursor of a backlog: for each status
    whose page came back full, the last row's key.

    Given a ``cursor``, only those statuses are read, from where their pages ended, on the
    index as it is (``stale=ok``: no wait while the server indexes the revisions written since
    the last query; what changed since comes by the feed, and the next full query sees it).
    A key ends with the task's id, so no two are alike and a page starts at the last key read,
    never at a count of rows: CouchDB 3 indexes in the background (ken), and a backlog's first
    page, run meanwhile, leaves the index; counted rows then skipped tasks never read (a drain
    of 10,000 due at one instant: those skipped left to the next poll, 30 s later)."""
    horizon_ms = to_ms(now) + int(settings.horizon * 1000)
    ranges = [
        (rules.WAITING, 0, horizon_ms),
        (rules.RESCHEDULE, 0, {}),
        (rules.CANCEL, 0, {}),
        (rules.SCHEDULED, 0, {}),
        (rules.RUNNING, 0, {}),
    ]
    page = settings.batch * 4
    docs, more = [], {}
    for status, low, high in ranges:
        params = dict(startkey=[name, status, low], endkey=[name, status, high, {}],
                      include_docs=True, conflicts=True, limit=page)
        after = None
        if cursor:
            if status not in cursor:
                continue
            after = cursor[status]  # (its row, if still there, read again and left out)
            params.update(startkey=after, limit=page + 1, stale="ok")
        rows = [row for row in store.view("after", "due", **params) if row["key"] != after]
        if len(rows) >= page:
            more[status] = rows[-1]["key"]
        docs.extend(row["doc"] for row in rows if row.get("doc"))
    return docs, more


def scan_recent(store, name: str, settings, owned=None, ids: list[str] | None = None
                ) -> list[dict]:
    """``name``'s unfinished tasks among the documents of the newest ``8 * batch`` changes
    (raises StoreError): twice a page of the view, so that a backlog of a page and what was
    written beside it are all found. Decided like a poll's: what is not due soon is left
    alone.

    The changes are read without their documents (``ids``: read so already), then the
    documents of the partitions ``owned`` (all, if None) by id in one batch: the processes
    of a name read a share each (a drain by 3 processes on the cluster, each reading every
    document with the changes: scans of 2-4.4 s, against 0.3-0.7 s idle)."""
    if ids is None:
        ids, _ = store.recent_ids(settings.batch * 8)
    ids = [docid for docid in ids if not docid.startswith("_design/")
           and (owned is None or parts.partition_of(docid) in owned)]
    docs = store.bulk_get(ids, conflicts=True) if ids else {}
    return [doc for doc in (docs.get(docid) for docid in ids)
            if doc is not None and doc.get("worker") == name
            and doc.get("status") not in rules.FINISHED]


class Poller:
    """Polls the due view on a thread of its own (the server may take a while to index what
    changed since the last query) and posts each task found as ``("recheck", doc)``."""

    def __init__(self, store, name: str, settings, post: Callable[[tuple], None],
                 stopping: threading.Event, idle: Callable[[], bool] = lambda: True):
        self.store, self.name, self.settings = store, name, settings
        self.post, self.stopping, self.idle = post, stopping, idle
        self.now = threading.Event()  # set: poll at once
        self._early: Future | None = None  # (the ids of the first scan, read ahead)

    def scan_early(self) -> None:
        """Read the ids of the newest changes now, on a thread of its own, for the first
        round's scan (:func:`scan_recent`) once the process knows its partitions: the read
        overlaps the taking of them. (A task changed since comes by the feed, newer.)"""
        pool = ThreadPoolExecutor(1, thread_name_prefix="after-scan")
        self._early = pool.submit(self.store.recent_ids, self.settings.batch * 8)
        pool.shutdown(wait=False)  # (its thread ends with the read)

    def _scan(self, owned) -> tuple[list[dict], bool]:
        """The first round's scan, of the ids read ahead if they were (read again if not),
        and whether it read every change of the database."""
        early, self._early = self._early, None
        try:
            recent = early.result() if early is not None else None
        except Exception:
            recent = None
        if recent is None:
            recent = self.store.recent_ids(self.settings.batch * 8)
        ids, complete = recent
        return scan_recent(self.store, self.name, self.settings, owned, ids), complete

    def start(self, owned=None) -> None:
        """The first round, then one each ``poll`` seconds; ``owned``: the partitions whose
        tasks the first round's scan reads (all, if None)."""
        self.now.set()
        threading.Thread(target=self._run, args=(owned,), name="after-poll",
                         daemon=True).start()

    def _run(self, owned=None) -> None:
        interval = self.settings.poll
        first, cursor = True, {}
        while not self.stopping.is_set():
            self.now.wait(interval)
            self.now.clear()
            if self.stopping.is_set():
                return
            if first:  # what is due among the newest writes, before the view is indexed
                first = False
                complete = False
                try:
                    found, complete = self._scan(owned)
                except Exception as exc:  # the view query below still runs
                    if self.stopping.is_set():  # the store was closed under it: not a fault
                        return
                    log.warning("cannot scan recent tasks: %s", describe_error(exc))
                    found = []
                for doc in found:
                    self.post(("recheck", doc))
                if complete:  # every document was read: the view has nothing to add now,
                    # and its first query waits for the next poll, off a drain's path (its
                    # index is built meanwhile: on pouchdb-server, which indexes on query and
                    # answers one request at a time, in front of the other processes' drains)
                    interval = self.settings.poll
                    continue
                if found:  # let their writes go first: on a server that indexes on query
                    self._settle()  # (pouchdb-server), the view query holds it up
            if cursor:  # the next page of a backlog once the last one is handled: a
                self._settle()  # bounded window of due tasks in memory at any burst size
            try:
                docs, cursor = query_due(self.store, self.name, self.settings, utcnow(),
                                         cursor)
            except Exception as exc:  # the safety net must not die
                if self.stopping.is_set():  # the store was closed under it: not a fault
                    return
                log.warning("cannot query due tasks: %s", describe_error(exc))
                interval, cursor = min(5.0, self.settings.poll), {}
                continue
            for doc in docs:
                self.post(("recheck", doc))
            # A backlog: the next page at once (after _settle); then a full query at the
            # poll interval.
            interval = 0.0 if cursor else self.settings.poll

    def _settle(self) -> None:
        """Wait (at most one poll interval) until the worker is idle: nothing in its inbox,
        no write pending, no job running."""
        deadline = time.monotonic() + self.settings.poll
        time.sleep(0.05)  # what was just posted reaches the loop
        while not self.stopping.is_set() and time.monotonic() < deadline and not self.idle():
            self.stopping.wait(0.05)
