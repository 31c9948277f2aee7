"""Play a chaos schedule on a 3-node CouchDB cluster and check what happened.

One seed (:func:`play`): a fresh database on the cluster; a pool of three ``after start``
processes of one name (slot k's ``AFTER_COUCHDB_URL`` lists the three nodes, node k first);
the schedule's tasks posted with their dates just ahead; its steps applied on time (faults
to worker processes by pid, to nodes through ``couchdb.sh``, cancels and reschedules
through one node's URL), each written to the history as it is applied; then everything
healed (frozen processes thawed, dead slots started, nodes started), the schedule left to
settle (every task finished, every process idle), the tasks read, the pool stopped with
SIGTERM (its run records flushed), the run records read, and the checker run; then the
audit of the window (``after audit``), whose verdicts must agree with the checker's
(:func:`checker.against_audit`).

Everything started here is stopped here, by pid, whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from after import audit as audits
from after.client import Client
from after.config import runs_db, workers_db
from after.couch import registry as peers
from after.couch import schema
from after.couch.store import Store, StoreError, describe_error
from after.rules.dates import parse_date, to_ms, utcnow
from after.worker import partitions as parts

from . import checker, history, schedule

ROOT = Path(__file__).resolve().parents[2]
NAME = "chaos"
#: The pool's settings: a lease the 2-8 s freezes straddle; a grace a long run outlasts.
WORKER_ARGS = ("--heartbeat", "0.5", "--lease", "5", "--grace", str(schedule.GRACE),
               "--poll", "2", "--no-log-file")
LEAD = 2.0  # seconds between posting the tasks and the schedule's start
SETTLE = 40.0  # seconds the healed schedule gets to finish every task
STOP_WAIT = schedule.GRACE + 20.0  # seconds a SIGTERMed process gets to exit


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class Log:
    """The history file: one ``write()`` per line on an ``O_APPEND`` descriptor, as the
    ``history`` job writes its own lines into the same file."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, line: dict) -> dict:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)
        return line


class Pool:
    """The worker processes of :data:`NAME`, one per slot (1-3); each incarnation logs to
    ``folder/worker-K.N.log``."""

    def __init__(self, cluster, db: str, folder: Path, log: Log, extra: tuple[str, ...] = ()):
        self.cluster, self.db, self.folder, self.log = cluster, db, folder, log
        self.args = (*WORKER_ARGS, *extra)
        self.home = folder / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.procs: dict[int, subprocess.Popen] = {}
        self.every: list[subprocess.Popen] = []  # every process started, to stop at the end
        self.frozen: set[int] = set()
        self.busy: set[int] = set()  # slots being restarted
        self.exits: list[tuple[int, int | None]] = []  # (pid, code) of SIGTERMed processes
        self.lock = threading.Lock()

    def env(self, k: int) -> dict:
        return {**{key: v for key, v in os.environ.items() if not key.startswith("AFTER_")},
                "AFTER_COUCHDB_URL": self.cluster.urls(first=k), "AFTER_DB": self.db,
                "AFTER_HOME": str(self.home), "AFTER_JOBS": str(ROOT / "jobs"),
                "PYTHONUNBUFFERED": "1"}

    def start(self, k: int, **extra) -> int:
        n = sum(1 for p in self.folder.glob(f"worker-{k}.*.log"))
        out = open(self.folder / f"worker-{k}.{n}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "after", "start", NAME, *self.args],
                                cwd=self.folder, env=self.env(k), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        with self.lock:
            self.procs[k] = proc
            self.every.append(proc)
        self.log.write({"ev": "fault", "fault": "start", "slot": k, "pid": proc.pid,
                        "at": now_iso(), **extra})
        return proc.pid

    def alive(self, k: int) -> subprocess.Popen | None:
        proc = self.procs.get(k)
        return proc if proc is not None and proc.poll() is None else None

    def signal(self, k: int, kind: str, **extra) -> int | None:
        """Send ``kind`` (kill, freeze, thaw, term) to slot k's process; its pid, or None
        when there is none to send it to."""
        proc = self.alive(k)
        if proc is None or k in self.busy:
            return None
        sig = {"kill": signal.SIGKILL, "freeze": signal.SIGSTOP, "thaw": signal.SIGCONT,
               "term": signal.SIGTERM}[kind]
        at = now_iso()
        os.kill(proc.pid, sig)
        if kind == "freeze":
            self.frozen.add(k)
        elif kind in ("thaw", "kill"):
            if kind == "kill" and k in self.frozen:
                os.kill(proc.pid, signal.SIGCONT)  # (a killed process need not stay frozen)
            self.frozen.discard(k)
        self.log.write({"ev": "fault", "fault": kind, "slot": k, "pid": proc.pid, "at": at,
                        **extra})
        if kind == "kill":
            proc.wait(10)
        return proc.pid

    def terminate(self, k: int, then_start: bool) -> None:
        """SIGTERM slot k's process, wait for it to exit (written ``exit``), and start a new
        one there when ``then_start`` (a restart; otherwise the end of the run)."""
        proc = self.alive(k)
        extra = {} if then_start else {"heal": True}
        if proc is None or self.signal(k, "term", **extra) is None:
            return
        self.busy.add(k)
        try:
            try:
                code = proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                code = None
                proc.kill()
                proc.wait(10)
            self.exits.append((proc.pid, code))
            self.log.write({"ev": "fault", "fault": "exit", "slot": k, "pid": proc.pid,
                            "at": now_iso(), "code": code, **extra})
        finally:
            self.busy.discard(k)
        if then_start:
            self.start(k)

    def stop_all(self) -> None:
        """SIGTERM every live process at once, and wait for each to exit."""
        threads = [threading.Thread(target=self.terminate, args=(k, False))
                   for k in list(self.procs) if self.alive(k)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def kill_all(self) -> None:
        for proc in self.every:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.kill()
                    proc.wait(10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass


@dataclass
class Outcome:
    """One seed's run: its plan, what was applied, and the checker's report."""

    plan: schedule.Plan
    report: checker.Report | None = None
    applied: list[dict] = field(default_factory=list)  # the fault lines written
    ops: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    folder: Path | None = None
    seconds: float = 0.0
    origin: float = 0.0  # the schedule's start (epoch seconds)

    @property
    def faults(self) -> int:
        """Faults applied (each kill, freeze, restart, node kill, node freeze once)."""
        return sum(1 for f in self.applied
                   if f["fault"] in ("kill", "freeze", "term", "node-kill", "node-freeze")
                   and not f.get("heal"))

    @property
    def ok(self) -> bool:
        return self.report is not None and self.report.ok

    def text(self) -> str:
        lines = [self.plan.show(), "applied (t+: from the schedule's start):"]
        for line in sorted(self.applied + self.ops, key=lambda f: f["at"]):
            when = datetime.fromisoformat(line["at"]).timestamp() - self.origin
            what = line.get("fault") or line.get("op")
            where = (f"node {line['node']}" if "node" in line else f"slot {line.get('slot')}"
                     + (f" pid {line['pid']}" if line.get("pid") else ""))
            extra = "".join(f" {key}={line[key]}" for key in ("task", "ok", "code", "error",
                                                               "heal") if key in line)
            lines.append(f"  t+{when:6.2f}s  {what} {where}{extra}")
        lines += [f"note: {note}" for note in self.notes]
        lines.append(self.report.text() if self.report else "checker: not run")
        verdict = "PASSED" if self.ok else "FAILED"
        lines.append(f"{self.plan.label} {verdict}: {self.faults} faults, {len(self.ops)} "
                     f"requests, {self.report.runs if self.report else 0} runs, "
                     f"{self.seconds:.0f} s; history in {self.folder}")
        return "\n".join(lines)


class Driver:
    def __init__(self, cluster, plan: schedule.Plan, folder: Path,
                 say: Callable[[str], None] = print, worker_args: tuple[str, ...] = ()):
        self.cluster, self.plan, self.folder, self.say = cluster, plan, folder, say
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "history.jsonl"
        self.log = Log(self.path)
        self.db = f"chaos{plan.seed % 10**9}_{uuid.uuid4().hex[:6]}"
        self.pool = Pool(cluster, self.db, folder, self.log, worker_args)
        self.outcome = Outcome(plan, folder=folder)
        self.threads: list[threading.Thread] = []
        self.nodes_down: set[int] = set()

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> Outcome:
        began = time.monotonic()
        store = Store(self.cluster.urls(), self.db)
        try:
            schema.setup(store)
            for k in (1, 2, 3):
                self.pool.start(k)
            self.wait_ready(store)
            start = utcnow()
            origin = self.outcome.origin = start.timestamp() + LEAD
            docs = [t.doc(datetime.fromtimestamp(origin, UTC), str(self.path), NAME)
                    for t in self.plan.tasks]
            store.bulk_docs(docs)
            self.play(origin)
            self.heal()
            tasks = self.settle(store, [d["_id"] for d in docs])
            workers = list(store.find_all({"name": NAME}, db=workers_db(self.db)))
            now = to_ms(utcnow())
            live = {b["_id"]: b for b in workers
                    if b.get("type") == "worker" and peers.state(b, now) == "live"}
            leases = parts.parts_of(workers, NAME)
            (self.folder / "workers.json").write_text(json.dumps(workers, indent=1))
            self.pool.stop_all()
            bad = [(pid, code) for pid, code in self.pool.exits if code != 0]
            if bad:
                self.outcome.notes.append(f"processes that did not exit 0 on SIGTERM: {bad}")
            records = list(store.find_all({"task": {"$gt": None}}, db=runs_db(self.db)))
            lines = history.read(self.path)
            self.outcome.applied = [f for f in lines.faults if f["fault"] != "start"]
            self.outcome.ops = lines.ops
            self.outcome.report = checker.check(lines, tasks, records, leases=leases,
                                                live=live)
            audit = self.audit(start)
            self.outcome.report.verdicts += checker.against_audit(self.outcome.report, audit)
            (self.folder / "audit.json").write_text(json.dumps(audit.as_json(), indent=1))
            (self.folder / "tasks.json").write_text(json.dumps(tasks, indent=1))
            (self.folder / "runs.json").write_text(json.dumps(records, indent=1))
        finally:
            self.pool.kill_all()
            for t in self.threads:
                t.join(60)
            self.cluster.heal()
            for db in (self.db, runs_db(self.db), workers_db(self.db)):
                try:
                    store.delete_database(db)
                except StoreError:
                    pass
            store.close()
            self.outcome.seconds = time.monotonic() - began
        (self.folder / "report.txt").write_text(self.outcome.text() + "\n")
        return self.outcome

    def audit(self, start: datetime) -> audits.Report:
        """``after audit chaos`` from the posting of the tasks to now, as a user would ask
        it (:meth:`after.client.Client.audit`): the checker's second opinion."""
        with Client(store=Store(self.cluster.urls(), self.db), jobs=False) as client:
            return client.audit(NAME, start=start, end=utcnow())

    def wait_ready(self, store: Store, timeout: float = 60.0) -> None:
        """Every process has said it is ready, and each has beaten since all were live (each
        has then read the registry with the others in it)."""
        deadline = time.monotonic() + timeout
        since = None
        while time.monotonic() < deadline:
            logs = [p.read_text() for p in self.folder.glob("worker-*.log")]
            beats = peers.registry(store, workers_db(self.db), NAME)
            now = utcnow()
            live = [b for b in beats if peers.state(b, to_ms(now)) == "live"]
            if since is None and len(live) >= 3 and all(f"worker {NAME} ready" in text
                                                       for text in logs):
                since = now
            elif since is not None and all(parse_date(b["last_seen"]) > since for b in live):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the pool did not start within {timeout:g} s: see {self.folder}")

    def play(self, origin: float) -> None:
        for step in self.plan.steps:
            delay = origin + step.at - time.time()
            if delay > 0:
                time.sleep(delay)
            self.apply(step, origin)
        for t in self.threads:
            t.join(60)
        self.threads = []

    def apply(self, step: schedule.Step, origin: float) -> None:
        k = step.target
        if step.action in ("kill", "freeze", "thaw"):
            if self.pool.signal(k, step.action) is None:
                self.outcome.notes.append(f"{step.show()}: no process to signal")
        elif step.action == "start":
            if self.pool.alive(k) is None:
                self.pool.start(k)
        elif step.action == "restart":
            self.background(self.pool.terminate, k, True)
        elif step.action in ("node-kill", "node-freeze"):
            signal_name = "KILL" if step.action == "node-kill" else "STOP"
            at = now_iso()
            self.cluster.kill(k, signal_name)
            self.nodes_down.add(k)
            self.log.write({"ev": "fault", "fault": step.action, "node": k, "at": at})
        elif step.action == "node-start":
            self.background(self.node_start, k)
        elif step.action in schedule.OPS:  # (not waited for: the node may die under it)
            self.background(self.request, step, origin)

    def background(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def node_start(self, k: int, heal: bool = False) -> None:
        at = now_iso()
        try:
            self.cluster.revive(k)
        except Exception as exc:  # (recorded; the heal tries again)
            self.outcome.notes.append(f"node-start {k} failed: {exc}")
            return
        self.nodes_down.discard(k)
        line = {"ev": "fault", "fault": "node-start", "node": k, "at": at, "up": now_iso()}
        self.log.write({**line, "heal": True} if heal else line)

    def request(self, step: schedule.Step, origin: float) -> None:
        """A cancel or a reschedule through node ``step.target`` only (no failover)."""
        sent = now_iso()
        line = {"ev": "op", "op": step.action, "task": step.task, "node": step.target,
                "sent": sent}
        try:
            with Client(store=Store(self.cluster.url(step.target), self.db, retries=0,
                                    timeout=3.0), jobs=False) as client:
                if step.action == "cancel":
                    doc = client.cancel(step.task)
                else:
                    due = datetime.fromtimestamp(origin + step.due, UTC)
                    doc = client.reschedule(step.task, due, all=True)
                    line["date"] = doc.get("date")
            line.update(ok=True, status=doc.get("status"))
        except Exception as exc:  # refused, or the node did not answer: written or not
            line.update(ok=False, error=describe_error(exc)[:200])
        line["at"] = now_iso()
        self.log.write(line)

    def heal(self) -> None:
        """Every frozen process thawed, every empty slot started, every node up."""
        for k in sorted(self.pool.frozen):
            pid = self.pool.signal(k, "thaw", heal=True)
            if pid is not None:
                self.outcome.notes.append(f"heal: thawed slot {k} (pid {pid})")
        for k in (1, 2, 3):
            if self.pool.alive(k) is None:
                self.pool.start(k, heal=True)
        for k in (1, 2, 3):
            if k in self.nodes_down or not self.cluster.up(k):
                self.node_start(k, heal=True)

    def settle(self, store: Store, ids: list[str]) -> list[dict]:
        """The tasks once every one is finished and every process has said, since, that it
        holds and runs nothing; as they are after SETTLE seconds otherwise."""
        deadline = time.monotonic() + SETTLE
        finished_at = None
        while True:
            tasks = self.read_tasks(store, ids)
            unfinished = [d for d in tasks if d.get("status") not in checker.TERMINAL]
            now = utcnow()
            if unfinished:
                finished_at = None
            elif finished_at is None:
                finished_at = now
            else:
                beats = [b for b in peers.registry(store, workers_db(self.db), NAME)
                         if peers.state(b, to_ms(now)) == "live"]
                if len(beats) >= 3 and all(
                        parse_date(b["last_seen"]) > finished_at and b.get("held") == 0
                        and b.get("running") == 0 for b in beats):
                    return tasks
            if time.monotonic() > deadline:
                self.outcome.notes.append(
                    f"not settled {SETTLE:g} s after the heal: {len(unfinished)} task(s) "
                    "unfinished")
                return tasks
            time.sleep(0.5)

    def read_tasks(self, store: Store, ids: list[str]) -> list[dict]:
        rows = store.request("POST", f"{self.db}/_all_docs", body={"keys": ids},
                             params={"include_docs": "true", "conflicts": "true"}).json()
        return [row["doc"] for row in rows["rows"] if row.get("doc")]


def play(cluster, seed: int, window: float, folder: Path,
         say: Callable[[str], None] = print, worker_args: tuple[str, ...] = ()) -> Outcome:
    """Play seed ``seed``'s schedule over ``window`` seconds on ``cluster``; the outcome
    (its text: the plan, what was applied, the checker's report) is said and returned."""
    say(f"AFTER_CHAOS_SEED={seed} (window {window:g} s)")
    return play_plan(cluster, schedule.plan(seed, window), folder, say, worker_args)


def play_plan(cluster, plan: schedule.Plan, folder: Path,
              say: Callable[[str], None] = print, worker_args: tuple[str, ...] = ()
              ) -> Outcome:
    """Play ``plan`` (a seed's, or a scenario's) on ``cluster``; ``worker_args``: more
    options for every ``after start`` of the pool."""
    where = folder / (plan.name or str(plan.seed))
    if where.exists():  # a seed played again: its history is this play's alone
        shutil.rmtree(where)
    outcome = Driver(cluster, plan, where, say, worker_args).run()
    say(outcome.text())
    return outcome
