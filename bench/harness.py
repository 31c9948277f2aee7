"""What every measurement needs: the server, fresh databases, worker processes, figures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

from after.couch import schema
from after.couch.store import Store
from after.rules.dates import format_date, parse_date, utcnow

from . import servers

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"


@dataclass
class Figure:
    """One measured value, and its goal when the issue sets one."""

    name: str
    value: float | None
    unit: str
    goal: str = ""
    met: bool | None = None  # None: no goal
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Measurement:
    name: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, *args, **kwargs) -> Figure:
        figure = Figure(*args, **kwargs)
        self.figures.append(figure)
        return figure


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100), nearest-rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, int(-(-p * len(ordered) // 100)))  # ceil(p/100 * n)
    return ordered[min(rank, len(ordered)) - 1]


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (VmRSS of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def task_doc(docid: str, worker: str, when, job: str = "noop") -> dict:
    return {
        "_id": docid,
        "worker": worker,
        "date": format_date(when),
        "job": {"name": job, "arguments": []},
        "status": "waiting",
    }


def lateness_ms(doc: dict) -> float | None:
    """The task's last run's start minus its ``date``, in milliseconds."""
    last = (doc.get("after") or {}).get("last_run") or {}
    if not last.get("started"):
        return None
    return (parse_date(last["started"]) - parse_date(doc["date"])).total_seconds() * 1000


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


class Worker:
    """An ``after start NAME`` subprocess; killed by its pid by :meth:`kill`."""

    def __init__(self, bench: Bench, db: str, name: str, *options: str, url: str | None = None):
        self.name = name
        self.home = bench.tmp / f"home-{db}"
        self.home.mkdir(exist_ok=True)
        self.output = self.home / f"{name}-{uuid.uuid4().hex[:6]}.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AFTER_")}
        env.update(AFTER_COUCHDB_URL=url or bench.url, AFTER_DB=db, AFTER_HOME=str(self.home),
                   AFTER_JOBS=str(JOBS), PYTHONUNBUFFERED="1")
        self.spawned_at = time.time()
        self.spawned_mono = time.monotonic()
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "after", "start", name, *options], cwd=bench.tmp,
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        self.ready_after: float | None = None
        bench.workers.append(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        try:
            return self.output.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds from spawn until the worker logged that it is ready."""
        def ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited ({self.process.returncode}): "
                                   f"{self.log()[-2000:]}")
            return f"worker {self.name} ready" in self.log()

        wait_until(ready, timeout, f"worker {self.name} ready", interval=0.01)
        self.ready_after = time.monotonic() - self.spawned_mono
        return self.ready_after

    def done_logged(self) -> int:
        """Runs this worker logged as done (logged just before the write that records it)."""
        return self.log().count(" after.worker: done ")

    def kill(self, grace: float = 10.0) -> None:
        """SIGTERM (a graceful stop removes its heartbeat, so the next measurement's workers
        do not wait out its lease), then SIGKILL if it has not exited within ``grace``."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            if self.process.poll() is not None:
                return
            try:
                os.kill(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


class Bench:
    """One run's server (started on free ports, stopped by pid), its databases and its worker
    processes. ``kind`` is ``pouchdb``, ``couchdb`` or ``cluster`` (see :mod:`bench.servers`)."""

    def __init__(self, kind: str = "pouchdb", quick: bool = False):
        self.kind = kind
        self.quick = quick
        self._tmp = tempfile.TemporaryDirectory(prefix=f"after-bench-{kind}-")
        self.tmp = Path(self._tmp.name)
        self.server = servers.make(kind, self.tmp / "server")
        self.workers: list[Worker] = []
        self.store: Store | None = None
        self.raw_rate: float | None = None
        self.label = kind

    @property
    def url(self) -> str:
        return self.server.url

    def urls(self) -> list[str]:
        return self.server.urls()

    def __enter__(self) -> Bench:
        try:
            self.server.start()
        except BaseException:
            self.server.stop()
            self._tmp.cleanup()
            raise
        self.store = Store(self.url, "unused", timeout=120)
        self.label = servers.describe(self.server)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.kill_workers()
            if self.store is not None:
                self.store.close()
        finally:
            try:
                self.server.stop()
            finally:
                self._tmp.cleanup()

    def kill_workers(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers.clear()

    def database(self, prefix: str, setup: bool = True) -> Store:
        """A new tasks database (with ``after setup`` applied unless ``setup`` is False)."""
        store = Store(self.url, f"{prefix}-{uuid.uuid4().hex[:6]}", timeout=120)
        if setup:
            schema.setup(store)
        else:
            store.create_database()
        return store

    def drop(self, store: Store) -> None:
        """Delete a measurement's databases."""
        for db in (store.db, f"{store.db}_runs", f"{store.db}_workers"):
            try:
                store.delete_database(db)
            except Exception:
                pass
        store.close()

    def worker(self, store: Store, name: str, *options: str, node: int = 0) -> Worker:
        """An ``after start`` process; on a cluster, ``node`` picks the node it talks to."""
        urls = self.urls()
        return Worker(self, store.db, name, *options, url=urls[node % len(urls)])

    def server_cpu_seconds(self) -> float:
        """CPU time (user + system) the server's processes have used so far."""
        total = 0.0
        for pid in self.server.pids:
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
        return total


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_seconds(seconds: float):
    return utcnow() + timedelta(seconds=seconds)


def all_docs(store: Store, prefix: str = "") -> list[dict]:
    params = {"include_docs": "true"}
    if prefix:
        params.update(startkey=f'"{prefix}"', endkey=f'"{prefix}\ufff0"')
    rows = store.request("GET", f"{store.db}/_all_docs", params=params).json()["rows"]
    return [row["doc"] for row in rows if not row["id"].startswith("_design/")]


def runs_recorded(store: Store) -> int:
    """How many run records the workers wrote (a cheap database info request)."""
    try:
        return int(store.request("GET", f"{store.db}_runs").json().get("doc_count", 0))
    except Exception:
        return 0


def wait_done(store: Store, workers: list[Worker], name: str, total: int,
              timeout: float) -> float:
    """Wait until ``total`` tasks of ``name`` are ``done``; returns time.perf_counter() then.

    The end is when the workers have logged every run and the run records are all written
    (a worker records a run once the task's ``done`` is written): both cheap to watch, so
    the watching does not load the server. The tasks are then read to check (not timed:
    ``_all_docs`` of thousands of documents waits behind whatever the server is doing)."""
    wait_until(lambda: sum(w.done_logged() for w in workers) >= total, timeout,
               f"{total} runs logged", interval=0.01)
    wait_until(lambda: runs_recorded(store) >= total, timeout, f"{total} run records",
               interval=0.02)
    at = time.perf_counter()

    def done() -> bool:
        return sum(d.get("status") == "done" and d.get("worker") == name
                   for d in all_docs(store)) >= total

    wait_until(done, timeout, f"{total} tasks done", interval=0.05)
    return at


def bulk_insert(store: Store, docs: list[dict], batch: int = 500) -> None:
    for start in range(0, len(docs), batch):
        results = store.bulk_docs(docs[start:start + batch])
        failed = [r for r in results if "error" in r]
        if failed:
            raise RuntimeError(f"{len(failed)} insert(s) failed, e.g. {failed[0]}")
