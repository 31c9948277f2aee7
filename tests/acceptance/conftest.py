"""The CLI in subprocesses, against the session's real server.

Every process a test starts is recorded and killed by pid when the test ends, whatever
happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from after.config import workers_db
from after.couch import registry as peers
from after.couch import schema
from after.couch.store import Store
from after.process import pid_files
from after.rules.dates import format_date, parse_date, to_ms, utcnow

from ..conftest import drop_databases

ROOT = Path(__file__).resolve().parents[2]


class Cli:
    def __init__(self, url: str, db: str, home: Path, cwd: Path):
        self.url, self.db, self.home, self.cwd = url, db, home, cwd
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AFTER_")},
            "AFTER_COUCHDB_URL": url,
            "AFTER_DB": db,
            "AFTER_HOME": str(home),
            "AFTER_JOBS": str(ROOT / "jobs"),
            "PYTHONUNBUFFERED": "1",
        }
        self.spawned: list[subprocess.Popen] = []

    def run(self, *args: str, timeout: float = 60, **env) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "after", *args], cwd=self.cwd, env={**self.env, **env},
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )

    def spawn(self, *args: str, wrap: tuple[str, ...] = (), **env) -> subprocess.Popen:
        """A long-running command (a foreground worker) whose output goes to a file;
        ``wrap``: a command to run it under (``faketime +5s``)."""
        out = open(self.home / f"spawn-{len(self.spawned)}.out", "w")
        process = subprocess.Popen(
            [*wrap, sys.executable, "-m", "after", *args], cwd=self.cwd, env={**self.env, **env},
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self.spawned.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.spawned:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        for pidfile in pid_files(self.home):  # background workers started with -b
            if pidfile.running and pidfile.pid:
                try:
                    os.kill(pidfile.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def cli(couch_url, db_name, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    c = Cli(couch_url, db_name, home, tmp_path)
    with Store(couch_url, db_name) as store:
        schema.setup(store)
    yield c
    c.kill_all()
    with Store(couch_url, db_name) as store:
        drop_databases(store, db_name)


@pytest.fixture
def disk_cli(disk_server, db_name, tmp_path):
    """The CLI against a server of the test's own (``disk_server``), which it may stop and
    start again."""
    home = tmp_path / "home-disk"
    home.mkdir()
    c = Cli(disk_server.url, db_name, home, tmp_path)
    with Store(disk_server.url, db_name) as store:
        schema.setup(store)
    yield c
    c.kill_all()


@pytest.fixture
def tasks(couch_url, db_name, cli):
    with Store(couch_url, db_name) as store:
        yield store


def task_doc(docid, worker, path, delay=0.0, **fields):
    return {
        "_id": docid,
        "worker": worker,
        "date": format_date(utcnow() + timedelta(seconds=delay)),
        "job": {"name": "record", "arguments": [str(path)]},
        "status": "waiting",
        **fields,
    }


def recorded(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for(predicate, timeout: float = 30, what: str = "condition", interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def wait_records(cli, tasks, count: int, selector: dict | None = None,
                 timeout: float = 30) -> list[dict]:
    """The run records (``selector`` in the runs database) once there are ``count`` and no
    intent is among them: a task is written done before its run's record goes over its
    intent (an intent left for ever fails here)."""
    def records():
        found = list(tasks.find_all({"type": "run", **(selector or {})}, db=f"{cli.db}_runs"))
        return len(found) >= count and all(r["outcome"] != "intended" for r in found) \
            and found
    return wait_for(records, timeout, f"{count} run records, no intent")


def wait_for_peers(cli: Cli, name: str, count: int, timeout: float = 30) -> None:
    """Wait until ``count`` processes of ``name`` are in the registry and each has beaten
    since they all were: each has then read the registry with every other one in it (a
    heartbeat refreshes the cache), so they agree who claims what."""
    with Store(cli.url, cli.db) as store:
        since: list = []

        def known() -> bool:
            now = utcnow()
            docs = peers.registry(store, workers_db(cli.db), name)
            if not since:
                if sum(peers.state(d, to_ms(now)) == "live" for d in docs) >= count:
                    since.append(now)
                return False
            return all(parse_date(d["last_seen"]) > since[0] for d in docs)

        wait_for(known, timeout, f"{count} processes of {name} to know each other", 0.05)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """Asserts the failure is one line on stderr, no traceback; returns it."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def beats(cli: Cli, name: str) -> dict[int, dict]:
    """The heartbeats of ``name``'s processes, by pid (each says how many tasks its process
    holds on its timer and runs, and how many partitions it owns)."""
    with Store(cli.url, cli.db) as store:
        return {d["pid"]: d for d in peers.registry(store, workers_db(cli.db), name)}


def holding(cli: Cli, name: str, pid: int) -> int:
    """Tasks the process ``pid`` of ``name`` holds on its timer or runs, as its last
    heartbeat says (a task held is written nowhere: its partition is the process's)."""
    beat = beats(cli, name).get(pid) or {}
    return int(beat.get("held") or 0) + int(beat.get("running") or 0)


def partition_owner(cli: Cli, name: str, docid: str) -> str | None:
    """The process that owns the partition of ``docid`` (after.worker.partitions)."""
    from after.worker.partitions import part_id, partition_of

    with Store(cli.url, cli.db) as store:
        doc = store.get_or_none(part_id(name, partition_of(docid)), db=workers_db(cli.db))
    return (doc or {}).get("owner")


def wait_for_partitions(cli: Cli, name: str, count: int, timeout: float = 30) -> None:
    """Wait until ``count`` processes of ``name`` each own a share of its partitions."""
    from after.worker.partitions import PARTITIONS

    def shared() -> bool:
        owned = [int(b.get("partitions") or 0) for b in beats(cli, name).values()]
        live = [n for n in owned if n]
        return len(live) >= count and sum(live) == PARTITIONS \
            and max(live) - min(live) <= 1
    wait_for(shared, timeout, f"{count} processes of {name} to share its partitions", 0.1)
