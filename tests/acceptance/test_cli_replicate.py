"""``after replicate`` in a subprocess against the session's servers (issue 25 item 7): on
CouchDB it writes the five replication documents once (again: unchanged), says how they run,
and removes them; on pouchdb-server, which stores replication documents but never runs them,
it refuses in one line; bad arguments are one line, exit 2. What the replications do between
two CouchDB nodes is tests/cluster/test_replica.py's."""

from __future__ import annotations

from after import replica
from after.couch.store import Store

from .conftest import one_line_error, wait_for


def test_replicate_sets_up_says_and_stops(cli, server_kind):
    central_db = cli.db + "-centre"
    assert cli.run("setup", AFTER_DB=central_db).returncode == 0
    try:
        done = cli.run("replicate", "shop", "--central", cli.url, "--central-db", central_db)
        if server_kind == "pouchdb":
            assert "runs no replications" in one_line_error(done)
            assert "the site's CouchDB must be Apache CouchDB" in done.stderr
            return
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("(written)") == 5 and "secret" not in done.stdout
        again = cli.run("replicate", "shop", "--central-db", central_db,
                        AFTER_CENTRAL_URL=cli.url)
        assert again.stdout.count("(unchanged)") == 5, again.stdout
        with Store(cli.url, cli.db) as store:
            ids = [replica.doc_id(cli.db, "shop", role) for role in replica.ROLES]
            assert all(store.get_or_none(i, db="_replicator") for i in ids)

        def running():
            table = cli.run("replicate", "shop", "--status").stdout.splitlines()
            return table[1:] and all(" running " in line for line in table[1:]) and table

        table = wait_for(running, 30, "the five replications running")
        assert table[0].split() == ["ROLE", "STATE", "WRITTEN", "FROM", "->", "TO"]
        assert [line.split()[0] for line in table[1:]] == list(replica.ROLES)
        stopped = cli.run("replicate", "shop", "--stop")
        assert stopped.stdout == ("shop: 5 replications with the centre removed; the site "
                                  "goes on alone\n")
        assert "no replication with the centre" in one_line_error(
            cli.run("replicate", "shop", "--status"))
    finally:
        with Store(cli.url, central_db) as store:
            for db in (central_db, f"{central_db}_runs", f"{central_db}_workers"):
                store.delete_database(db)


def test_replicate_refuses_bad_arguments_in_one_line(cli):
    assert "'NAME'" in one_line_error(cli.run("replicate", "not a name", "--central",
                                              cli.url))
    assert "Missing option '--central'" in one_line_error(cli.run("replicate", "shop"))
    bad = cli.run("replicate", "shop", "--central", "ftp://admin:hunter2@x")
    assert "'--central'" in one_line_error(bad) and "hunter2" not in bad.stderr
    assert "one at a time" in one_line_error(cli.run("replicate", "shop", "--stop",
                                                     "--status"))
