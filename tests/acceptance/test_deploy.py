"""A deploy starts many processes at once on a database nobody has set up yet."""

from __future__ import annotations

import signal

from after.couch.store import Store

from ..conftest import drop_databases
from .conftest import Cli, recorded, task_doc, wait_for


def test_ten_processes_started_at_once_on_a_fresh_database(couch_url, db_name, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(couch_url, db_name, home, tmp_path)
    names = [f"deploy{k}" for k in range(10)]
    try:
        workers = [cli.spawn("start", name, "--poll", "1") for name in names]
        out = tmp_path / "runs.jsonl"
        with Store(couch_url, db_name) as store:
            wait_for(lambda: all(store.database_exists(db) for db in
                                 (db_name, f"{db_name}_runs", f"{db_name}_workers")),
                     timeout=60, what="the databases")
            wait_for(lambda: len(store.prefixed("", db=f"{db_name}_workers")) >= 10,
                     timeout=60, what="ten heartbeats")
            for name in names:
                store.put(task_doc(name, name, out))
            wait_for(lambda: len(recorded(out)) == 10, timeout=60, what="a run per name")
        outputs = [(home / f"spawn-{k}.out") for k in range(10)]
        for k, worker in enumerate(workers):
            assert worker.poll() is None, outputs[k].read_text()
        assert sorted(r["id"] for r in recorded(out)) == sorted(names)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for k, worker in enumerate(workers):
            assert worker.wait(60) == 0, outputs[k].read_text()
            text = outputs[k].read_text()
            assert "error" not in text.lower(), text
    finally:
        cli.kill_all()
        with Store(couch_url, db_name) as store:
            drop_databases(store, db_name)
