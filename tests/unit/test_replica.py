"""after.replica: the replication documents of a worker on a replica (issue 25 item 7), pure;
and docs/replicas.rst true to them. Their behaviour between two CouchDB nodes is
tests/cluster/test_replica.py's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from after import replica

from ..js import model_url, node

DOCS = Path(__file__).resolve().parents[2] / "docs" / "replicas.rst"
SITE = "http://admin:PASSWORD@127.0.0.1:5984"
CENTRAL = "https://admin:PASSWORD@central.example.com:6984"


def test_five_replications_each_way_the_name_needs():
    docs = replica.replications("shop", "tasks", SITE, CENTRAL)
    assert [d["_id"] for d in docs] == [f"after:tasks:shop:{role}" for role in replica.ROLES]
    ends = [(d["source"]["url"], d["target"]["url"]) for d in docs]
    here, there = "http://127.0.0.1:5984", "https://central.example.com:6984"
    assert ends == [(f"{there}/tasks", f"{here}/tasks"), (f"{here}/tasks", f"{there}/tasks"),
                    (f"{here}/tasks_runs", f"{there}/tasks_runs"),
                    (f"{here}/tasks_workers", f"{there}/tasks_workers"),
                    (f"{there}/tasks_workers", f"{here}/tasks_workers")]
    assert all(d["continuous"] is True for d in docs)
    assert docs[4]["doc_ids"] == ["shop@paused"] and "selector" not in docs[4]
    for doc in docs:  # the credentials apart, as the replicator wants them
        for end in (doc["source"], doc["target"]):
            assert "PASSWORD" not in end["url"]
            assert end["auth"] == {"basic": {"username": "admin", "password": "PASSWORD"}}


def test_a_central_database_of_another_name_and_urls_without_credentials():
    docs = replica.replications("shop", "tasks", "http://127.0.0.1:5984/",
                                "http://central:5984", central_db="all/tasks")
    assert docs[0]["source"] == {"url": "http://central:5984/all%2Ftasks"}
    assert docs[2]["target"] == {"url": "http://central:5984/all%2Ftasks_runs"}
    assert docs[0]["target"] == {"url": "http://127.0.0.1:5984/tasks"}


def test_the_selectors_take_the_name_and_never_a_lease():
    """Mango's $regex is PCRE: a name's dots are escaped, so ``a.b`` is not ``axb``."""
    assert replica.tasks_selector("shop") == {"$or": [
        {"worker": "shop"}, {"_id": {"$regex": "^calendar:"}}, {"_deleted": True}]}
    workers = replica.workers_selector("a.b")
    assert workers["$or"][0] == {"type": "worker", "name": "a.b"}
    pattern = workers["$or"][1]["_id"]["$regex"]
    assert re.match(pattern, "a.b@host:1:tok") and not re.match(pattern, "axb@host:1:tok")
    assert workers["$or"][1]["_deleted"] is True
    assert {"type": "partition"} not in workers["$or"]


@pytest.mark.parametrize("url", ["ftp://x", "central:5984", "", "http://"])
def test_a_url_that_is_not_http_is_refused_without_its_password(url):
    with pytest.raises(replica.ReplicaError, match="is not an http"):
        replica.endpoint(url)
    with pytest.raises(replica.ReplicaError) as caught:
        replica.endpoint("ftp://admin:hunter2@x")
    assert "hunter2" not in str(caught.value)


@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20),
       st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20))
def test_any_credentials_reach_the_replicator_as_written(user, password):
    from urllib.parse import quote

    url = f"http://{quote(user, safe='')}:{quote(password, safe='')}@host:5984"
    found = replica.endpoint(url)
    assert (found.url, found.password) == ("http://host:5984", password)
    assert found.user == user


def test_a_stored_document_is_the_one_wanted_whatever_the_replicator_wrote_in_it():
    wanted = replica.replications("shop", "tasks", SITE, CENTRAL)[0]
    stored = {**wanted, "_rev": "3-a", "owner": "admin", "_replication_state": "running"}
    assert replica.same(stored, wanted)
    moved = json.loads(json.dumps(stored).replace("PASSWORD", "new"))
    assert not replica.same(moved, wanted)  # a new password is written


def test_the_documented_replication_is_the_one_built():
    text = DOCS.read_text()
    block = text.split(".. file: tasks-pull.json", 1)[1].split(".. code-block:: json", 1)[1]
    documented = json.loads(block.strip().split("\n\n")[0])
    assert documented == replica.replications("shop", "tasks", SITE, CENTRAL)[0]
    lines = [replica.describe(doc) + " (written)"
             for doc in replica.replications("shop", "tasks", SITE, CENTRAL)]
    for line in lines:
        assert f"\n     {line}\n" in text, line


def test_the_status_of_a_replication_says_its_state_without_credentials():
    doc = replica.replications("shop", "tasks", SITE, CENTRAL)[0]
    assert replica.status("tasks-pull", None, None) == {
        "role": "tasks-pull", "state": None, "written": None, "source": None, "target": None,
        "error": None}
    crashing = {"state": "crashing", "info": {
        "error": "unauthorized: https://admin:PASSWORD@central.example.com:6984/tasks"}}
    assert replica.status("tasks-pull", doc, crashing) == {
        "role": "tasks-pull", "state": "crashing", "written": None,
        "source": "https://central.example.com:6984/tasks",
        "target": "http://127.0.0.1:5984/tasks",
        "error": "unauthorized: https://admin:***@central.example.com:6984/tasks"}
    running = {"state": "running", "info": {"docs_written": 7}}
    assert replica.status("tasks-pull", doc, running)["written"] == 7
    # no scheduler (or it does not know it yet): the document's own state, else pending
    assert replica.status("tasks-pull", {**doc, "_replication_state": "triggered"},
                          None)["state"] == "triggered"
    assert replica.status("tasks-pull", doc, None)["state"] == "pending"


def test_the_name_of_a_replication_document():
    for name in ("shop", "ship-2", "a.b"):
        for role in replica.ROLES:
            assert replica.name_of(replica.doc_id("tasks", name, role), "tasks") == name
    assert replica.name_of(replica.doc_id("other", "shop", "tasks-pull"), "tasks") is None
    assert replica.name_of("after:tasks:shop:elsewhere", "tasks") is None
    assert replica.name_of("after:tasks-2:shop:tasks-pull", "tasks") is None
    assert replica.name_of("after:tasks::tasks-pull", "tasks") is None


def test_the_dashboard_says_each_replicated_name_and_whether_every_replication_runs():
    """model.js's replicationLines, from what GET /_after/replication answers."""
    running = [{"role": role, "state": "running", "error": None} for role in replica.ROLES]
    names = {"ship": [{**running[0], "state": "crashing", "error": "timeout"},
                      *running[1:4], {"role": "pause-pull", "state": None, "error": None}],
             "shop": running}
    got = node(f"import * as m from '{model_url()}';\n"
               f"console.log(JSON.stringify(m.replicationLines({json.dumps(names)})));")
    assert [(line["name"], line["ok"]) for line in got] == [("ship", False), ("shop", True)]
    assert got[0]["roles"][0] == {"role": "tasks-pull", "state": "crashing", "error": "timeout"}
    assert got[0]["roles"][4] == {"role": "pause-pull", "state": "not set up", "error": ""}
    assert [r["role"] for r in got[1]["roles"]] == list(replica.ROLES)
