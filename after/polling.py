"""The feed's safety net: what the ``due`` view says a worker name should look at.

The feed brings changes; polling is how tasks created long ago come into the horizon, and
how a worker finds the tasks of a holder that may be gone.
"""

from __future__ import annotations

import logging
import threading
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


class Poller:
    """Polls the due view on a thread of its own (the server may take a while to index what
    changed since the last query) and posts each task found as ``("recheck", doc)``."""

    def __init__(self, store, name: str, settings, post: Callable[[tuple], None],
                 stopping: threading.Event):
        self.store, self.name, self.settings = store, name, settings
        self.post, self.stopping = post, stopping
        self.now = threading.Event()  # set: poll at once

    def start(self) -> None:
        self.now.set()
        threading.Thread(target=self._run, name="after-poll", daemon=True).start()

    def _run(self) -> None:
        interval = self.settings.poll
        while not self.stopping.is_set():
            self.now.wait(interval)
            self.now.clear()
            if self.stopping.is_set():
                return
            try:
                docs, backlog = query_due(self.store, self.name, self.settings, utcnow())
            except Exception as exc:  # the safety net must not die
                log.warning("cannot query due tasks: %s", describe_error(exc))
                interval = min(5.0, self.settings.poll)
                continue
            for doc in docs:
                self.post(("recheck", doc))
            interval = 0.5 if backlog else self.settings.poll  # a backlog: come back soon
