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
from datetime import datetime

from . import task as rules
from .dates import to_ms, utcnow
from .store import describe_error

log = logging.getLogger("after.worker")


def query_due(store, name: str, settings, now: datetime) -> tuple[list[dict], bool]:
    """``name``'s tasks due within the horizon, and those whose holder may be gone (raises
    StoreError); and whether a page came back full (a backlog: poll again soon)."""
    horizon_ms = to_ms(now) + int(settings.horizon * 1000)
    ranges = [
        (rules.WAITING, 0, horizon_ms),
        (rules.RESCHEDULE, 0, {}),
        (rules.CANCEL, 0, {}),
        (rules.SCHEDULED, 0, {}),
        (rules.RUNNING, 0, {}),
    ]
    docs, backlog = [], False
    for status, low, high in ranges:
        rows = store.view("after", "due", startkey=[name, status, low],
                          endkey=[name, status, high], include_docs=True, conflicts=True,
                          limit=settings.batch * 4)
        backlog = backlog or len(rows) >= settings.batch * 4
        docs.extend(row["doc"] for row in rows if row.get("doc"))
    return docs, backlog


def scan_recent(store, name: str, settings) -> list[dict]:
    """``name``'s unfinished tasks among the documents of the newest ``4 * batch`` changes
    (raises StoreError). Decided like a poll's: what is not due soon is left alone."""
    return [doc for doc in store.recent(settings.batch * 4)
            if doc.get("worker") == name and doc.get("status") not in rules.FINISHED]


class Poller:
    """Polls the due view on a thread of its own (the server may take a while to index what
    changed since the last query) and posts each task found as ``("recheck", doc)``."""

    def __init__(self, store, name: str, settings, post: Callable[[tuple], None],
                 stopping: threading.Event, idle: Callable[[], bool] = lambda: True):
        self.store, self.name, self.settings = store, name, settings
        self.post, self.stopping, self.idle = post, stopping, idle
        self.now = threading.Event()  # set: poll at once

    def start(self) -> None:
        self.now.set()
        threading.Thread(target=self._run, name="after-poll", daemon=True).start()

    def _run(self) -> None:
        interval = self.settings.poll
        first = True
        while not self.stopping.is_set():
            self.now.wait(interval)
            self.now.clear()
            if self.stopping.is_set():
                return
            if first:  # what is due among the newest writes, before the view is indexed
                first = False
                try:
                    found = scan_recent(self.store, self.name, self.settings)
                except Exception as exc:  # the view query below still runs
                    log.warning("cannot scan recent tasks: %s", describe_error(exc))
                    found = []
                for doc in found:
                    self.post(("recheck", doc))
                if found:  # let their writes go first: on a server that indexes on query
                    self._settle()  # (pouchdb-server), the view query holds it up
            took = time.monotonic()
            try:
                docs, backlog = query_due(self.store, self.name, self.settings, utcnow())
            except Exception as exc:  # the safety net must not die
                log.warning("cannot query due tasks: %s", describe_error(exc))
                interval = min(5.0, self.settings.poll)
                continue
            took = time.monotonic() - took
            for doc in docs:
                self.post(("recheck", doc))
            # A backlog: come back soon, but leave the server at least twice the time the
            # query took (each one indexes every revision written since the last).
            interval = max(0.5, 2 * took) if backlog else self.settings.poll

    def _settle(self) -> None:
        """Wait (at most one poll interval) until the worker is idle: nothing in its inbox,
        no write pending, no job running."""
        deadline = time.monotonic() + self.settings.poll
        time.sleep(0.05)  # what was just posted reaches the loop
        while not self.stopping.is_set() and time.monotonic() < deadline and not self.idle():
            self.stopping.wait(0.05)
