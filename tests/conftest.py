"""Fixtures shared by the integration, acceptance and browser tests.

Every test that needs a server runs once on each server of :func:`servers.server_kinds`:
the embedded pouchdb-server, and Apache CouchDB 3 (a single node with an admin password)
wherever its release is present (``../shared/couchdb``, or ``AFTER_TEST_COUCHDB_HOME``). The
suite starts each server once per session on a free port of 127.0.0.1 and stops it by pid
at the end; a test's id names its server (``[pouchdb]``, ``[couchdb]``). The report's header
and summary say which servers ran. ``AFTER_TEST_COUCHDB_URL`` points the suite at a server of
your own instead. There is no skip for want of a server: if one cannot start, tests fail.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import settings

from after.client import Client
from after.couch import schema
from after.couch.memstore import MemStore
from after.couch.store import Store

from . import servers

# Generated examples are timed by nothing: on a loaded 2-core machine hypothesis's default
# 200 ms deadline per example failed pure tests that pass (speed is measured in bench/).
settings.register_profile("after", deadline=None)
settings.load_profile("after")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KINDS = servers.server_kinds()
RAN: Counter = Counter()  # server kind -> tests that used it
DESCRIBED: dict[str, str] = {}


CLUSTER = "couchdb" in KINDS  # the 3-node cluster tests run wherever CouchDB does


def pytest_report_header(config):
    where = servers.couchdb_home()
    return [f"after: servers {', '.join(KINDS)}"
            + (", and a 3-node CouchDB cluster for tests/cluster" if CLUSTER else
               "; tests/cluster not collected (CouchDB is not among this run's servers)")
            + (f" (CouchDB release: {where})" if where and "couchdb" in KINDS else "")]


def pytest_ignore_collect(collection_path, config):
    """Without a CouchDB release (a newcomer's machine; never CI, see servers.py) the
    cluster tests are not collected at all, and the header says so: not a silent skip."""
    if not CLUSTER and collection_path.name == "cluster" and collection_path.parent == HERE:
        return True
    return None


AUTH_KINDS = [k for k in KINDS if k != "pouchdb"]  # servers that check credentials


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "auth_server: only on servers that check credentials (CouchDB, not "
        "pouchdb-server's admin party); never generated, so never skipped, for the others")


def pytest_generate_tests(metafunc):
    """Every test that needs a server runs once per server (``[pouchdb]``, ``[couchdb]``)."""
    if "contract_store" in metafunc.fixturenames:
        # the store contract: the in-memory fake ([memory]) and every real server
        metafunc.parametrize("server_kind", ["memory", *KINDS], scope="session")
    elif "server_kind" in metafunc.fixturenames:
        auth = metafunc.definition.get_closest_marker("auth_server") is not None
        metafunc.parametrize("server_kind", AUTH_KINDS if auth else KINDS, scope="session")


@pytest.fixture(scope="session")
def couch_url(server_kind, tmp_path_factory) -> str:
    """The URL of the session's server of this kind, with its credentials."""
    if server_kind == "external":
        url = os.environ["AFTER_TEST_COUCHDB_URL"].rstrip("/")
        DESCRIBED[server_kind] = f"{servers.server_version(url)} (AFTER_TEST_COUCHDB_URL)"
        yield url
        return
    server = servers.make_server(server_kind, tmp_path_factory.mktemp(server_kind))
    server.start()
    DESCRIBED[server_kind] = f"{servers.server_version(server.url)}: {server.describe()}"
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _count_server(request):
    if "couch_url" in request.fixturenames or "server_kind" in request.fixturenames:
        RAN[request.getfixturevalue("server_kind")] += 1
    elif "cluster" in request.fixturenames:
        RAN["cluster"] += 1
        DESCRIBED["cluster"] = "Apache CouchDB 3-node cluster, n=3, from ../shared/couchdb"
    yield


def pytest_terminal_summary(terminalreporter):
    if not RAN:
        return
    terminalreporter.write_sep("-", "servers")
    if RAN["memory"]:
        terminalreporter.write_line(f"memory: {RAN['memory']} tests (after.couch.memstore)")
    for kind in KINDS + (["cluster"] if CLUSTER else []):
        terminalreporter.write_line(
            f"{kind}: {RAN[kind]} tests ({DESCRIBED.get(kind, 'not started')})")


@pytest.fixture
def db_name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(couch_url, db_name):
    """A fresh, set-up tasks database (and its runs and workers databases) for one test."""
    with Store(couch_url, db_name) as store:
        schema.setup(store)
        yield store
        drop_databases(store, db_name)


@pytest.fixture
def contract_store(request, server_kind):
    """The store of the contract suite: the in-memory fake, or a set-up database on a real
    server (the fake's tests start no server)."""
    if server_kind == "memory":
        store = MemStore(f"t{uuid.uuid4().hex[:12]}")
        schema.setup(store)
        yield store
        return
    yield request.getfixturevalue("store")


def drop_databases(store: Store, db_name: str) -> None:
    """Delete a test's tasks database and the runs and workers databases beside it."""
    for db in (db_name, f"{db_name}_runs", f"{db_name}_workers"):
        try:
            store.delete_database(db)
        except Exception:  # already gone, or the server is: nothing left to clean
            pass


@contextmanager
def replicating(couch_url: str, db_name: str, name: str):
    """A site replicating worker name ``name`` with a centre, on CouchDB: the centre is
    another database of the same server (``<db_name>-centre``), set up; yields the site's
    Client, then stops the replications and drops the centre."""
    centre = f"{db_name}-centre"
    with Store(couch_url, centre) as central, Client(couch_url, db_name) as site:
        schema.setup(central)
        try:
            site.replicate(name, couch_url, central_db=centre)
            yield site
        finally:
            site.stop_replication(name)
            drop_databases(central, centre)


@pytest.fixture
def disk_server(server_kind, tmp_path):
    """A server of the test's own, of the session's kind, on disk, so it can be restarted."""
    if server_kind == "external":
        pytest.fail("this test stops and restarts its server: it needs one the suite starts "
                    "(unset AFTER_TEST_COUCHDB_URL)")
    server = servers.make_server(server_kind, tmp_path / server_kind, disk=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def jobs_dir() -> Path:
    return ROOT / "jobs"
