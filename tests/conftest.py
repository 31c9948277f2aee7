"""Fixtures shared by the integration and acceptance tests.

The suite starts its own pouchdb-server (in memory, 127.0.0.1, a free port) once per session
and stops it by pid at the end. ``AFTER_TEST_COUCHDB_URL`` points it at an external CouchDB
instead. There is no skip for want of a server: if it cannot start, the tests fail.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from after import schema
from after.server import EmbeddedServer, free_port
from after.store import Store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def couch_url(tmp_path_factory) -> str:
    external = os.environ.get("AFTER_TEST_COUCHDB_URL")
    if external:
        yield external.rstrip("/")
        return
    server = EmbeddedServer(workdir=tmp_path_factory.mktemp("pouchdb"), port=free_port())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


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


def drop_databases(store: Store, db_name: str) -> None:
    """Delete a test's tasks database and the runs and workers databases beside it."""
    for db in (db_name, f"{db_name}_runs", f"{db_name}_workers"):
        try:
            store.delete_database(db)
        except Exception:  # already gone, or the server is: nothing left to clean
            pass


@pytest.fixture
def disk_server(tmp_path):
    """A server of the test's own, on disk, so it can be stopped and restarted."""
    server = EmbeddedServer(workdir=tmp_path / "pouchdb", port=free_port(),
                            data=tmp_path / "pouchdb" / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def jobs_dir() -> Path:
    return ROOT / "jobs"
