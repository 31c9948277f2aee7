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

import time
from pathlib import Path

import pytest

from after.couch import schema
from after.couch.store import Store
from bench.couchdb_cluster import Cluster, couchdb_home, free_port_range

from ..acceptance.conftest import Cli
from ..conftest import drop_databases


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    home = couchdb_home()
    folder = tmp_path_factory.mktemp("couchdb-cluster")
    cluster = Cluster(home / "couchdb.sh", folder, free_port_range(2 * 3))
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

    def spawn_on(self, k: int, *args: str, urls: str | None = None, **env):
        return self.spawn(*args, AFTER_COUCHDB_URL=urls or self.cluster.urls(first=k), **env)

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
