"""The store contract, against a real server."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from after.couch import schema
from after.couch.store import (
    ChangesFollower,
    Conflict,
    Forbidden,
    NotFound,
    Store,
    Unavailable,
    split_credentials,
    winner,
)
from after.rules import task as rules


def task(**fields):
    doc = {
        "worker": "w",
        "date": "2026-12-01T09:00:00Z",
        "job": {"name": "hello", "arguments": []},
        "status": "waiting",
    }
    doc.update(fields)
    return doc


def test_put_get_and_conflict_on_stale_rev(store):
    doc = task(_id="a")
    answer = store.put(doc)
    assert answer["status"] in (201, 202)
    first_rev = doc["_rev"]
    doc["status"] = "cancel"
    store.put(doc)
    stale = task(_id="a", _rev=first_rev, status="done")
    with pytest.raises(Conflict):
        store.put(stale)
    assert store.get("a")["status"] == "cancel"


def test_ids_are_percent_encoded(store):
    for docid in ("a/b", "x?y=1", "hash#tag", "sp ace", "per%cent", ".", "..", "..."):
        store.put(task(_id=docid))
        assert store.get(docid)["_id"] == docid
    assert store.get_or_none("./..") is None  # not the database, nor the server


def test_not_found_is_typed(store):
    with pytest.raises(NotFound):
        store.get("nope")
    assert store.get_or_none("nope") is None


def test_bulk_docs_reports_partial_failures(store):
    existing = task(_id="b")
    store.put(existing)
    docs = [task(_id="new1"), task(_id="b"), task(_id="new2"), {"_id": "bad", "worker": "x"}]
    results = store.bulk_docs(docs)
    assert [r.get("error") for r in results] == [None, "conflict", None, "forbidden"]
    assert "date" in results[3]["reason"]
    assert docs[0]["_rev"] == store.get("new1")["_rev"]
    assert store.get_or_none("bad") is None


def test_find_pages_with_bookmark(store):
    store.bulk_docs([task(_id=f"t{i:03}", date=f"2026-12-01T09:00:{i:02}Z") for i in range(25)])
    seen = list(store.find_all({"worker": "w", "status": "waiting"}, page=10,
                               sort=[{"worker": "asc"}, {"status": "asc"}, {"date": "asc"}]))
    assert [d["_id"] for d in seen] == [f"t{i:03}" for i in range(25)]


def test_due_view_normalises_offsets_and_fractions(store):
    store.bulk_docs([
        task(_id="paris", date="2026-12-01T10:00:00+01:00"),
        task(_id="utc-ms", date="2026-12-01T09:00:00.250Z"),
        task(_id="naive", date="2026-12-01T08:59:59"),
        task(_id="day", date="2026-12-01"),
    ])
    rows = store.view("after", "due", startkey=["w", "waiting", 0],
                      endkey=["w", "waiting", {}])
    assert [(r["id"], r["key"][2]) for r in rows] == [
        ("day", 1796083200000),
        ("naive", 1796115599000),
        ("paris", 1796115600000),
        ("utc-ms", 1796115600250),
    ]


@pytest.mark.parametrize(
    "doc, field",
    [
        ({"worker": "x"}, "date"),
        ({"worker": "x", "date": "2026-12-01", "status": "waiting"}, "job"),
        ({"date": "2026-12-01", "status": "waiting", "job": {"name": "a"}}, "worker"),
        ({"worker": "x", "date": "tomorrow", "status": "waiting", "job": {"name": "a"}}, "date"),
        ({"worker": "x", "date": "2026-12-01", "status": "waiting", "job": {}}, "job.name"),
        ({"worker": "x", "date": "2026-12-01", "status": "waiting",
          "job": {"name": "os.system"}}, "job.name"),
        ({"worker": "x", "date": "2026-12-01", "job": {"name": "a"}}, "status"),
        ({"worker": "x", "date": "2026-12-01", "status": "later", "job": {"name": "a"}},
         "status"),
    ],
)
def test_validation_refuses_unrunnable_tasks_over_plain_http(store, doc, field):
    response = httpx.post(f"{store.url}/{store.db}", json=doc,
                          headers={"Accept-Encoding": "identity"}, auth=store.auth)
    assert response.status_code == 403
    assert response.json()["reason"].startswith(f"{field}:")
    with pytest.raises(Forbidden, match=f"^{field}:"):
        store.post(dict(doc))


@pytest.mark.parametrize("repeat", [
    {"ms": 1}, {"milliseconds": 500}, {"ms": 999, "limit": 2}, "PT0.5S", "PT0,25S",
    "PT0.0005S", "PT0.0001H", {"every": "PT0.001S", "limit": 3}, {"s": 0}, {"ms": 0.0},
    "PT0.0000001S", {"ms": 1, "bogus": 2},  # the last: an unknown unit, no longer the worker's
])
def test_validation_refuses_short_or_bad_repeats_with_the_workers_message(store, repeat):
    doc = task(_id="short", repeat=repeat)
    with pytest.raises(rules.TaskError) as parsed:
        rules.parse(doc)
    response = httpx.put(f"{store.url}/{store.db}/short", json=doc,
                         headers={"Accept-Encoding": "identity"}, auth=store.auth)
    assert response.status_code == 403, response.text
    assert response.json()["reason"] == str(parsed.value)


@pytest.mark.parametrize("repeat", [
    {"s": 1}, {"ms": 1000}, "PT1S", "PT0.5M", {"every": "PT1S"}, {"cron": "* * * * * *"},
    {"M": 1},
])
def test_validation_lets_a_second_or_more_through(store, repeat):
    store.put(task(_id="ok", repeat=repeat))
    assert store.get("ok")["repeat"] == repeat


def test_validation_lets_finished_tasks_through(store):
    store.put({"_id": "broken", "status": "error", "after": {"error": "date: required"}})
    assert store.get("broken")["status"] == "error"


def test_setup_is_idempotent(store):
    assert schema.setup(store) == []
    assert schema.is_set_up(store)


def test_unreachable_server_raises_unavailable():
    with Store("http://127.0.0.1:9", "x", retries=1) as dead:
        with pytest.raises(Unavailable, match="cannot reach"):
            dead.get("a")


def test_errors_and_repr_never_show_the_password(couch_url):
    bare, _ = split_credentials(couch_url)
    url = bare.replace("http://", "http://admin:s3cret@")
    with Store(url, "x") as s:
        assert "s3cret" not in repr(s)
    with Store("http://admin:s3cret@127.0.0.1:9", "x", retries=0) as dead:
        with pytest.raises(Unavailable) as info:
            dead.info()
        assert "s3cret" not in str(info.value)


class Collector:
    def __init__(self):
        self.changes = []
        self.states = []
        self.event = threading.Event()

    def on_change(self, change):
        self.changes.append(change)
        self.event.set()

    def wait_for(self, predicate, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.changes):
                return True
            self.event.wait(0.05)
            self.event.clear()
        return False


def test_follower_delivers_changes_in_milliseconds(store):
    seen = Collector()
    follower = ChangesFollower(store, seen.on_change, since=store.update_seq(),
                               selector={"worker": "w"}, heartbeat=1.0,
                               on_state=seen.states.append).start()
    try:
        assert seen.wait_for(lambda c: False, timeout=0.3) is False  # connected, idle
        latencies = []
        for i in range(5):
            start = time.perf_counter()
            store.put(task(_id=f"fast{i}"))
            assert seen.wait_for(lambda c, i=i: any(x["id"] == f"fast{i}" for x in c))
            latencies.append(time.perf_counter() - start)
        store.put(task(_id="other", worker="someone-else"))
        store.put(task(_id="after-other"))
        assert seen.wait_for(lambda c: any(x["id"] == "after-other" for x in c))
        assert "other" not in [c["id"] for c in seen.changes]
        assert seen.changes[0]["doc"]["worker"] == "w"
        assert max(latencies) < 0.5, latencies
        assert seen.states == [True]
    finally:
        follower.stop()
    assert seen.states == [True, False]


def test_follower_heartbeats_keep_an_idle_feed_open(store):
    seen = Collector()
    follower = ChangesFollower(store, seen.on_change, since=store.update_seq(),
                               heartbeat=0.2, idle=1.0).start()
    try:
        time.sleep(2.5)  # much longer than the idle deadline: only heartbeats arrive
        assert follower.reconnects == 0
        assert follower.connected
        store.put(task(_id="late"))
        assert seen.wait_for(lambda c: [x["id"] for x in c] == ["late"])
    finally:
        follower.stop()


def test_follower_resumes_from_since(store):
    store.put(task(_id="before"))
    since = store.update_seq()
    store.put(task(_id="after1"))
    seen = Collector()
    follower = ChangesFollower(store, seen.on_change, since=since).start()
    try:
        assert seen.wait_for(lambda c: [x["id"] for x in c] == ["after1"])
    finally:
        follower.stop()


def test_follower_survives_a_server_restart(disk_server):
    with Store(disk_server.url, "restart") as s:
        schema.setup(s)
        seen = Collector()
        follower = ChangesFollower(s, seen.on_change, since=s.update_seq(),
                                   heartbeat=0.5, max_backoff=0.5).start()
        try:
            s.put(task(_id="one"))
            assert seen.wait_for(lambda c: [x["id"] for x in c] == ["one"])
            disk_server.stop()
            assert seen.wait_for(lambda c: not follower.connected), "the outage went unseen"
            disk_server.start()
            s.put(task(_id="two"))
            assert seen.wait_for(lambda c: [x["id"] for x in c] == ["one", "two"], 20)
            assert follower.reconnects >= 1
        finally:
            follower.stop()


def test_leaves_list_every_branch_and_winner_picks_the_servers_choice(store):
    branches = [{"_id": "forked", "_rev": f"1-{c * 32}", "status": "done", "v": c}
                for c in "ab"]
    store.bulk_docs(branches, new_edits=False)  # as replication or a partition leaves them
    leaves = store.leaves("forked")
    assert sorted(d["_rev"] for d in leaves) == [f"1-{'a' * 32}", f"1-{'b' * 32}"]
    served = store.get("forked", conflicts=True)
    best = winner(leaves)
    assert best["_rev"] == served["_rev"] == f"1-{'b' * 32}"
    assert best["_conflicts"] == served["_conflicts"] == [f"1-{'a' * 32}"]
    assert best["v"] == "b"


def test_the_server_validates_the_corpus_as_the_vdu_does(store):
    """tests/cases/documents.json PUT to the real server: what it refuses, with its message
    (the same cases run under Node.js and through the Client's validator in the unit tests)."""
    from ..js import cases
    from ..unit.test_validation_corpus import build

    said, wanted = {}, {}
    for number, case in enumerate(cases("documents")["cases"]):
        doc = build(case)
        # its id is part of the case for a calendar's and an occurrence's; else one each
        calendar = doc["_id"].startswith("calendar:")
        if not calendar and "_id" not in case["doc"]:
            doc["_id"] = f"corpus-{number}"
        try:
            store.put(doc)
            said[case["name"]] = None
            if calendar:  # the next calendar case may use the same id
                store.delete(doc["_id"], doc["_rev"])
        except Forbidden as exc:
            said[case["name"]] = str(exc)
        wanted[case["name"]] = case["vdu"]
    assert said == wanted


def test_validation_cheap_path_only_for_writes_that_keep_worker_date_and_job(store):
    """A transition that keeps ``worker``, ``date`` and ``job`` passes at once; a write that
    changes one of them is validated in full, whoever writes it."""
    from after.couch.store import Forbidden

    doc = {"_id": "v", "worker": "w", "date": "2026-12-01T09:00:00Z",
           "job": {"name": "hello", "arguments": []}, "status": "waiting"}
    store.put(doc)
    doc.update(status="scheduled", after={"owner": "w@here:1:abc"})
    store.put(doc)  # the cheap path
    for change in ({"date": "tomorrow"}, {"job": {"name": "os.system"}}, {"worker": ""},
                   {"repeat": {"ms": 10}}, {"retry": "lots"}, {"timeout": -5},
                   {"max_delay": "soon"}):
        with pytest.raises(Forbidden):
            store.put({**doc, **change})
    assert store.get("v")["_rev"] == doc["_rev"]


def test_check_couchdb_passes_on_each_server_and_without_credentials(store, couch_url):
    store.check_couchdb()  # the welcome of CouchDB 3 or of pouchdb-server
    bare, _ = split_credentials(couch_url)
    with Store(bare, store.db, retries=0) as anonymous:
        anonymous.check_couchdb()  # CouchDB's welcome needs no credentials; never an error


def test_a_server_says_whether_it_keeps_one_copy(store, server_kind):
    """pouchdb-server keeps one copy of each document (a take it answers 201 needs no read
    back); CouchDB, a single node too, is not taken for one."""
    assert store.one_copy() is (server_kind == "pouchdb")
