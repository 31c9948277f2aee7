"""The rights ``after setup`` and a worker need on a production CouchDB 3 (docs/clusters.rst).

A user who is only a member of databases an admin created and set up can run workers and add
tasks; a database admin can set existing databases up; creating databases takes a server
admin. Every refusal is one line, with the password masked.
"""

from __future__ import annotations

import uuid

import pytest

from after.couch.store import Store

from ..acceptance.conftest import Cli, one_line_error
from .conftest import wait_until


@pytest.fixture
def member(cluster):
    """A CouchDB user (no server role): (name, password)."""
    name, password = f"u{uuid.uuid4().hex[:8]}", "pw-" + uuid.uuid4().hex[:8]
    with Store(cluster.url(1), "_users") as users:
        users.put({"_id": f"org.couchdb.user:{name}", "name": name, "password": password,
                   "roles": [], "type": "user"})
    yield name, password
    with Store(cluster.url(1), "_users") as users:
        doc = users.get_or_none(f"org.couchdb.user:{name}")
        if doc:
            users.delete(doc["_id"], doc["_rev"])


def secure(cluster, db: str, *, members: list[str], admins: list[str]) -> None:
    with Store(cluster.url(1), db) as store:
        for name in (db, f"{db}_runs", f"{db}_workers"):
            store.create_database(name)
            store.request("PUT", f"{name}/_security", body={
                "admins": {"names": admins, "roles": []},
                "members": {"names": members, "roles": []}})


def drop(cluster, db: str) -> None:
    with Store(cluster.url(1), db) as store:
        for name in (db, f"{db}_runs", f"{db}_workers"):
            store.delete_database(name)


def as_user(cluster, user, db, tmp_path) -> Cli:
    name, password = user
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return Cli(f"http://{name}:{password}@127.0.0.1:{cluster.port(1)},"
               f"http://127.0.0.1:{cluster.port(2)}", db, home, tmp_path)


def test_a_member_runs_workers_on_databases_an_admin_set_up(cluster, member, tmp_path):
    db = f"t{uuid.uuid4().hex[:12]}"
    secure(cluster, db, members=[member[0]], admins=[])
    try:
        cli = as_user(cluster, member, db, tmp_path)
        refused = cli.run("setup")  # not set up yet: a member cannot install design documents
        line = one_line_error(refused)
        assert "not a db or server admin" in line and member[1] not in line
        admin = Cli(cluster.urls(), db, cli.home, tmp_path)
        assert admin.run("setup").returncode == 0
        again = cli.run("setup")
        assert again.returncode == 0 and "already set up" in again.stdout
        assert member[1] not in again.stdout
        added = cli.run("add", "hello", "Ada", "--worker", "members", "--at", "+1s")
        assert added.returncode == 0, added.stderr
        task_id = added.stdout.strip()
        worker = cli.spawn("start", "members")
        try:
            wait_until(lambda: '"status": "done"' in cli.run("show", task_id, "--json").stdout,
                       30, "the member's task done")
        finally:
            cli.kill_all()
        assert worker.wait(10) is not None
    finally:
        drop(cluster, db)


def test_a_database_admin_sets_existing_databases_up_but_cannot_create_them(
        cluster, member, tmp_path):
    db = f"t{uuid.uuid4().hex[:12]}"
    secure(cluster, db, members=[member[0]], admins=[member[0]])
    try:
        cli = as_user(cluster, member, db, tmp_path)
        result = cli.run("setup")
        assert result.returncode == 0, result.stderr
        assert "installed _design/after" in result.stdout
        assert "created database" not in result.stdout
        fresh = as_user(cluster, member, f"t{uuid.uuid4().hex[:12]}", tmp_path)
        line = one_line_error(fresh.run("setup"))
        assert "not a server admin" in line and member[1] not in line
    finally:
        drop(cluster, db)
