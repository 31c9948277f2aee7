"""The poller's thread: a store closed under it by a stop is not a fault to report; a first
scan that read every change leaves the view's first query to the next poll."""

from __future__ import annotations

import logging
import threading

from after.config import Settings
from after.worker.polling import Poller


class ClosedUnderIt:
    """A store whose client a stop closes while the poller is between two requests."""

    def __init__(self, stopping: threading.Event, stop: bool):
        self.stopping, self.stop, self.calls = stopping, stop, 0

    def _closed(self, *args, **kwargs):
        self.calls += 1
        if self.stop:
            self.stopping.set()
        raise RuntimeError("Cannot send a request, as the client has been closed.")

    recent_ids = bulk_get = view = _closed


def run_poller(stop: bool, caplog) -> ClosedUnderIt:
    """Run the poller's loop until it returns: at its first failure (``stop``), or when
    stopped 0.3 s later."""
    stopping = threading.Event()
    store = ClosedUnderIt(stopping, stop)
    poller = Poller(store, "w", Settings(poll=0.05), lambda item: None, stopping)
    poller.now.set()
    if not stop:
        threading.Timer(0.3, stopping.set).start()
    with caplog.at_level(logging.WARNING, logger="after.worker"):
        poller._run()
    return store


def test_a_failure_once_stopping_is_not_logged(caplog):
    store = run_poller(True, caplog)
    assert store.calls == 1
    assert [r.getMessage() for r in caplog.records] == []


def test_a_failure_while_running_is_logged_with_the_type_alone(caplog):
    run_poller(False, caplog)
    messages = [r.getMessage() for r in caplog.records]
    assert "cannot scan recent tasks: RuntimeError" in messages


class Scanned:
    """A store of one task, whose newest changes are every change or not (``complete``)."""

    def __init__(self, complete: bool):
        self.complete, self.views = complete, []

    def recent_ids(self, limit):
        return ["t1"], self.complete

    def bulk_get(self, ids, conflicts=False):
        return {"t1": {"_id": "t1", "worker": "w", "status": "waiting",
                       "date": "2026-12-01T09:00:00Z", "job": {"name": "hello"}}}

    def view(self, ddoc, view, **params):
        self.views.append(params["startkey"][1])
        return []


def first_round(complete: bool) -> tuple[list, list]:
    """The poller's first round (its next poll 60 s away): what it posted, what it queried."""
    stopping, posted, store = threading.Event(), [], Scanned(complete)
    poller = Poller(store, "w", Settings(poll=60), posted.append, stopping)
    poller.now.set()
    threading.Timer(0.3, lambda: (stopping.set(), poller.now.set())).start()
    poller._run()
    return posted, store.views


def test_a_first_scan_of_every_change_leaves_the_view_to_the_next_poll():
    posted, views = first_round(complete=True)
    assert [(kind, doc["_id"]) for kind, doc in posted] == [("recheck", "t1")]
    assert views == []


def test_a_first_scan_of_the_newest_changes_only_is_followed_by_the_view():
    posted, views = first_round(complete=False)
    assert [(kind, doc["_id"]) for kind, doc in posted] == [("recheck", "t1")]
    assert views == ["waiting", "reschedule", "cancel", "scheduled", "running"]
