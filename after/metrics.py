"""Prometheus metrics and a health endpoint for a worker process.

``after start NAME --metrics-port P`` serves, on 127.0.0.1:P,

- ``/metrics``: runs by job and outcome, lateness and duration histograms, tasks held and
  running, feed reconnects and whether the feed is connected (prometheus-client's format);
  and, from an audit of the worker name's last 15 minutes (:mod:`after.audit`, made at a
  scrape at most once a minute), its occurrences missed (recorded ``missed``, or never run)
  and run twice;
- ``/health``: ``200 {"status": "ok", ...}`` while the changes feed is connected, ``503``
  with ``"status": "degraded"`` while it is not.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from after import audit as audits
from after.rules.dates import utcnow

log = logging.getLogger("after.metrics")

LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                    30, 60, 300)
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


#: The audit behind the gauges of missed and doubled occurrences: the worker name's last
#: 15 minutes, made again at most once a minute, at a scrape (a scrape costs no more). The
#: window bounds its cost (a task every second: 900 occurrences and as many run records).
AUDIT_WINDOW = timedelta(minutes=15)
AUDIT_EVERY = timedelta(minutes=1)


class AuditGauges:
    """The counts of an audit of the last ``window``, made again at most every ``every``
    (``audit(start, end, now)`` returns them; ``clock`` gives now). An audit that fails
    (the database unreachable) keeps the last counts and is tried again ``every`` later;
    before any, the gauges read NaN."""

    def __init__(self, audit: Callable[[datetime, datetime, datetime], dict[str, int]],
                 window: timedelta = AUDIT_WINDOW, every: timedelta = AUDIT_EVERY,
                 clock: Callable[[], datetime] = utcnow):
        self.audit, self.window, self.every, self.clock = audit, window, every, clock
        self.counts: dict[str, int] | None = None
        self.made: datetime | None = None
        self.lock = threading.Lock()

    def current(self) -> dict[str, int] | None:
        with self.lock:
            now = self.clock()
            if self.made is None or now - self.made >= self.every:
                self.made = now
                try:
                    self.counts = self.audit(now - self.window, now, now)
                except Exception as exc:  # noqa: BLE001 - a scrape must answer all the same
                    log.warning("the audit behind the metrics failed: %s", exc)
            return self.counts

    def missed(self) -> float:
        """Occurrences that should have run and did not: recorded missed, or never run."""
        counts = self.current()
        return math.nan if counts is None else float(counts[audits.MISSED]
                                                     + counts[audits.NEVER])

    def twice(self) -> float:
        """Occurrences that ran more than once."""
        counts = self.current()
        return math.nan if counts is None else float(counts[audits.TWICE])


def audit_of(worker) -> Callable[[datetime, datetime, datetime], dict[str, int]]:
    """The audit of ``worker``'s name, on its store's connections (a longer timeout)."""
    from after.client import Client

    client = Client(store=worker.store.with_timeout(30.0))

    def audit(start: datetime, end: datetime, now: datetime) -> dict[str, int]:
        return client.audit(worker.name, start=start, end=end, now=now).counts

    return audit


class WorkerMetrics:
    """The metrics of one worker, fed by its events (``worker.listeners``)."""

    def __init__(self, worker, registry: CollectorRegistry | None = None,
                 audited: AuditGauges | None = None):
        self.worker = worker
        self.registry = registry or CollectorRegistry()
        labels = {"worker": worker.name}
        self.runs = Counter("after_runs", "Runs finished, by job and outcome",
                            ["worker", "job", "outcome"], registry=self.registry)
        self.lateness = Histogram("after_lateness_seconds",
                                  "Actual start minus the scheduled date",
                                  ["worker"], buckets=LATENESS_BUCKETS, registry=self.registry)
        self.duration = Histogram("after_run_duration_seconds", "How long runs took",
                                  ["worker", "job"], buckets=DURATION_BUCKETS,
                                  registry=self.registry)
        self.reconnects = Counter("after_feed_reconnects", "Times the changes feed was lost",
                                  ["worker"], registry=self.registry)
        self.corrected = Counter("after_self_check_corrections",
                                 "Tasks found held in the database with nothing behind them "
                                 "in memory, and decided again", ["worker"],
                                 registry=self.registry)
        self.handed_back = Counter("after_runs_handed_back",
                                   "Runs started that no job thread began in time "
                                   "(every thread taken) or before this process's lease "
                                   "may have lapsed, handed back unrun", ["worker"],
                                   registry=self.registry)
        self.faults = Counter("after_task_faults", "Tasks a failure of the worker's own "
                              "ended in error or gave up on", ["worker"], registry=self.registry)
        held = Gauge("after_tasks_held", "Tasks held on the timer", ["worker"],
                     registry=self.registry)
        running = Gauge("after_tasks_running", "Tasks running", ["worker"],
                        registry=self.registry)
        connected = Gauge("after_feed_connected", "1 while the changes feed is connected",
                          ["worker"], registry=self.registry)
        self.audited = audited or AuditGauges(audit_of(worker))
        missed = Gauge("after_audit_missed_occurrences",
                       "Occurrences of the last 15 minutes that should have run and did "
                       "not (recorded missed, or never run), by an audit made at most once a "
                       "minute", ["worker"], registry=self.registry)
        twice = Gauge("after_audit_duplicate_occurrences",
                      "Occurrences of the last 15 minutes that ran more than once, by an "
                      "audit made at most once a minute", ["worker"], registry=self.registry)
        missed.labels(**labels).set_function(self.audited.missed)
        twice.labels(**labels).set_function(self.audited.twice)
        held.labels(**labels).set_function(lambda: worker.load()[0])
        running.labels(**labels).set_function(lambda: worker.load()[1])
        connected.labels(**labels).set_function(lambda: 1.0 if self.feed_connected else 0.0)
        self.reconnects.labels(**labels)
        self.corrected.labels(**labels)
        self.faults.labels(**labels)
        self.handed_back.labels(**labels)
        self.feed_connected = False
        worker.listeners.append(self.on_event)

    def on_event(self, event: str, **info) -> None:
        name = self.worker.name
        if event == "start":
            self.lateness.labels(name).observe(max(0.0, info["lateness"]))
        elif event == "finish":
            job = info.get("job") or "?"
            self.runs.labels(name, job, info["outcome"]).inc()
            self.duration.labels(name, job).observe(max(0.0, info["duration"]))
        elif event == "corrected":
            self.corrected.labels(name).inc(info["count"])
        elif event == "handed_back":
            self.handed_back.labels(name).inc()
        elif event == "fault":
            self.faults.labels(name).inc()
        elif event == "feed":
            if self.feed_connected and not info["connected"]:
                self.reconnects.labels(name).inc()
            self.feed_connected = info["connected"]

    def health(self) -> tuple[int, dict]:
        worker = self.worker
        ok = self.feed_connected
        held, running = worker.load()
        return (200 if ok else 503), {
            "status": "ok" if ok else "degraded",
            "feed": "connected" if ok else "disconnected",
            "worker": worker.name,
            "process": worker.id,
            "held": held,
            "running": running,
            "counts": dict(worker.counts),
        }

    def wsgi(self):
        metrics_app = make_wsgi_app(self.registry)

        def app(environ, start_response):
            if environ.get("PATH_INFO") == "/health":
                status, body = self.health()
                start_response(f"{status} {'OK' if status == 200 else 'Service Unavailable'}",
                               [("Content-Type", "application/json")])
                return [json.dumps(body).encode()]
            return metrics_app(environ, start_response)

        return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


def serve_metrics(worker, port: int, host: str = "127.0.0.1") -> WSGIServer:
    """Serve the worker's metrics in a daemon thread; returns the server (``server_port``)."""
    metrics = WorkerMetrics(worker)
    server = make_server(host, port, metrics.wsgi(), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="after-metrics", daemon=True).start()
    worker.metrics_server = server
    return server
