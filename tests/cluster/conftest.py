"""A real 3-node Apache CouchDB 3 cluster (n=3, q=2) for the module's tests.

The cluster is started once per session from the release in ``../shared/couchdb`` (beside
the repository; ``AFTER_TEST_COUCHDB_HOME`` names another folder holding ``couchdb.sh``) on
free ports of 127.0.0.1, in a temporary folder, and stopped by pid (``cluster-stop``) at the
end. There is no skip: if the cluster cannot start, the tests fail and say why.

Each test gets a fresh set-up database on it and a :class:`Cli` whose worker processes each
connect to a different node first (``AFTER_COUCHDB_URL`` lists all three nodes, starting
with the worker's own), so a node's death is a failover for the process on it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from after import schema
from after.store import Store

from ..acceptance.conftest import Cli
from ..conftest import drop_databases

ROOT = Path(__file__).resolve().parents[2]
NODES = 3
ADMIN = ("admin", "secret")  # couchdb.sh's default cluster admin


def couchdb_home() -> Path:
    home = Path(os.environ.get("AFTER_TEST_COUCHDB_HOME") or ROOT.parent / "shared" / "couchdb")
    script = home / "couchdb.sh"
    if not script.is_file():
        raise RuntimeError(f"no {script}: set AFTER_TEST_COUCHDB_HOME to the folder holding "
                           "couchdb.sh and the CouchDB 3 release")
    return home


def free_port_range(count: int, tries: int = 50) -> int:
    """A base port with ``count`` consecutive free ports on 127.0.0.1."""
    for _ in range(tries):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65000:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports found")


class Cluster:
    """The nodes of a cluster started by ``couchdb.sh``; node numbers are 1-based."""

    def __init__(self, script: Path, folder: Path, base: int, size: int = NODES):
        self.script, self.folder, self.base, self.size = script, folder, base, size

    def sh(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(["bash", str(self.script), *args], capture_output=True,
                                text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"couchdb.sh {' '.join(args)} failed: "
                               f"{result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def start(self) -> None:
        self.sh("cluster-start", str(self.size), str(self.base), str(self.folder))

    def stop(self) -> None:
        self.sh("cluster-stop", str(self.folder))

    def port(self, k: int) -> int:
        return self.base + k - 1

    def url(self, k: int) -> str:
        return f"http://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{self.port(k)}"

    def urls(self, first: int = 1) -> str:
        """Every node's URL, comma separated, starting with node ``first``."""
        order = [(first - 1 + i) % self.size + 1 for i in range(self.size)]
        return ",".join(self.url(k) for k in order)

    def kill(self, k: int, signal: str = "KILL") -> None:
        self.sh("node-stop", str(self.folder), str(k), signal)

    def revive(self, k: int) -> None:
        self.sh("node-start", str(self.folder), str(k))

    def heal(self) -> None:
        """Every node up again (after a test that stopped some)."""
        for k in range(1, self.size + 1):
            if not self.up(k):
                self.revive(k)

    def up(self, k: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port(k)}/_up", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    home = couchdb_home()
    folder = tmp_path_factory.mktemp("couchdb-cluster")
    cluster = Cluster(home / "couchdb.sh", folder, free_port_range(2 * NODES))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def node_db(cluster, db_name):
    """A fresh, set-up database on the cluster for one test; dropped at the end."""
    cluster.heal()
    with Store(cluster.urls(), db_name) as store:
        schema.setup(store)
    yield db_name
    cluster.heal()
    with Store(cluster.urls(), db_name) as store:
        drop_databases(store, db_name)


@pytest.fixture
def ccli(cluster, node_db, tmp_path):
    """The CLI on the cluster's database; ``ccli.spawn_on(k, ...)`` starts a process whose
    first URL is node k."""
    home = tmp_path / "home"
    home.mkdir()
    c = ClusterCli(cluster, node_db, home, tmp_path)
    yield c
    c.kill_all()


class ClusterCli(Cli):
    def __init__(self, cluster: Cluster, db: str, home: Path, cwd: Path):
        super().__init__(cluster.urls(), db, home, cwd)
        self.cluster = cluster

    def spawn_on(self, k: int, *args: str, **env):
        return self.spawn(*args, AFTER_COUCHDB_URL=self.cluster.urls(first=k), **env)

    def node_store(self, k: int) -> Store:
        """A store talking to node k only (no failover)."""
        return Store(self.cluster.url(k), self.db)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
