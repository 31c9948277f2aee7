"""The poller's thread: a store closed under it by a stop is not a fault to report."""

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
