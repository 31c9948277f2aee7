"""after.client.Client against the real server (the session pouchdb-server, or CouchDB)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from after import replica
from after.client import Client, ReplicaError, StateError, TaskError, TaskNotFound
from after.couch import schema
from after.couch.store import NotFound, Store
from after.rules import task as rules
from after.rules.dates import parse_date, utcnow

from ..conftest import drop_databases


@pytest.fixture
def client(store, couch_url):
    with Client(couch_url, store.db) as client:
        yield client


def task_ids(store: Store) -> list[str]:
    return sorted(d["_id"] for d in store.find_all({"_id": {"$gt": None}})
                  if not d["_id"].startswith("_design/"))


def body(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "_rev"}


# -- schedule ------------------------------------------------------------------------------


def test_schedule_writes_the_task_document(client, store):
    task_id = client.schedule("hello", "Ada", 3, worker="billing",
                              at=datetime(2027, 1, 4, 9, 0), retry={"limit": 2, "delay": 5},
                              timeout=30, max_delay=60, id="greet")
    assert task_id == "greet"
    assert body(store.get("greet")) == {
        "_id": "greet", "worker": "billing", "date": "2027-01-04T09:00:00.000Z",
        "job": {"name": "hello", "arguments": ["Ada", 3]}, "status": "waiting",
        "retry": {"limit": 2, "delay": 5}, "timeout": 30, "max_delay": 60,
    }
    assert rules.parse(store.get("greet")).date == datetime(2027, 1, 4, 9, tzinfo=UTC)


def test_schedule_takes_a_task_description(client, store):
    """Issue 22: the task as one description (a dict of schedule()'s arguments, as
    schedule_many takes them) writes what the keywords write."""
    keywords = client.schedule("hello", "Ada", 3, worker="billing", id="kw",
                               at=datetime(2027, 1, 4, 9, 0), cron="0 9 * * 1",
                               tz="Europe/Paris", retry={"limit": 2, "delay": 5}, timeout=30)
    described = client.schedule({"job": "hello", "args": ["Ada", 3], "worker": "billing",
                                 "id": "desc", "at": datetime(2027, 1, 4, 9, 0),
                                 "cron": "0 9 * * 1", "tz": "Europe/Paris",
                                 "retry": {"limit": 2, "delay": 5}, "timeout": 30})
    assert (keywords, described) == ("kw", "desc")
    assert {**body(store.get("desc")), "_id": "kw"} == body(store.get("kw"))
    with pytest.raises(TaskError, match="not both .*worker"):
        client.schedule({"job": "hello", "worker": "w"}, worker="w")
    with pytest.raises(TaskError, match="schedule.. got an unexpected keyword .*colour"):
        client.schedule({"job": "hello", "worker": "w", "colour": "red"})
    with pytest.raises(TaskError, match="job: the description names no job"):
        client.schedule({"worker": "w"})
    with pytest.raises(TypeError, match="worker"):
        client.schedule("hello")
    assert task_ids(store) == ["desc", "kw"]


def test_schedule_defaults_to_now_with_a_generated_id(client, store):
    before = utcnow()
    task_id = client.schedule("noop", worker="w", kwargs={"a": 1})
    doc = store.get(task_id)
    assert len(task_id) == 32
    assert before - timedelta(milliseconds=1) <= parse_date(doc["date"]) <= utcnow()
    assert doc["job"] == {"name": "noop", "arguments": {"a": 1}}


def test_schedule_relative_at(client, store):
    before = utcnow()
    doc = store.get(client.schedule("noop", worker="w", at="+15m"))
    date = parse_date(doc["date"])
    assert before + timedelta(minutes=15) - timedelta(milliseconds=1) <= date
    assert date <= utcnow() + timedelta(minutes=15)


@pytest.mark.parametrize("kwargs, repeat", [
    ({"every": "7d"}, {"days": 7}),
    ({"every": "1M", "limit": 3}, {"months": 1, "limit": 3}),
    ({"every": "P1D"}, "P1D"),
    ({"every": "PT1H", "until": "2027-02-01"},
     {"every": "PT1H", "until": "2027-02-01T00:00:00.000Z"}),
    ({"every": {"w": 1}}, {"w": 1}),
    ({"every": 90}, {"seconds": 90}),
    ({"every": timedelta(minutes=1, milliseconds=5)}, {"milliseconds": 60005}),
    ({"cron": "*/5 * * * *"}, {"cron": "*/5 * * * *"}),
])
def test_schedule_repeat_forms(client, store, kwargs, repeat):
    task_id = client.schedule("noop", worker="w", at="2027-01-01T00:00:00Z", **kwargs)
    assert store.get(task_id)["repeat"] == repeat


def test_cron_first_run_is_the_first_cron_time_at_or_after_at(client, store):
    client.schedule("hello", worker="w", cron="0 9 * * 1-5", tz="Europe/Paris",
                    at="2027-03-27T00:00:00Z", id="paris")  # a Saturday
    doc = store.get("paris")
    assert doc["date"] == "2027-03-29T07:00:00.000Z"  # Monday 09:00, summer time
    assert doc["repeat"] == {"cron": "0 9 * * 1-5", "tz": "Europe/Paris"}
    assert [str(d) for d in Client.next_runs(doc, 3)] == [
        "2027-03-29 07:00:00+00:00", "2027-03-30 07:00:00+00:00", "2027-03-31 07:00:00+00:00"]


@pytest.mark.parametrize("kwargs, message", [
    ({"retry": {"limit": -1}}, "retry.limit: must be 0 or more attempts, not -1"),
    ({"timeout": 0}, "timeout: must be a positive number of seconds, not 0"),
    ({"every": {"days": 0}}, "repeat: the interval is zero; at least one unit must be above 0"),
    ({"cron": "0 9 * * *", "tz": "Nowhere/City"},
     "repeat: unknown time zone 'Nowhere/City' (use an IANA name like Europe/Paris or UTC)"),
])
def test_a_bad_task_is_refused_with_the_workers_message_before_writing(client, store,
                                                                       kwargs, message):
    with pytest.raises(TaskError) as caught:
        client.schedule("noop", worker="w", at="2027-01-01", id="bad", **kwargs)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)
    # the same document, written by hand, is what the worker refuses with the same words
    doc = {"_id": "bad", "worker": "w", "date": "2027-01-01", "status": "waiting",
           "job": {"name": "noop", "arguments": []}}
    if "cron" in kwargs:
        doc["repeat"] = {"cron": kwargs["cron"], "tz": kwargs["tz"]}
    elif "every" in kwargs:
        doc["repeat"] = kwargs["every"]
    else:
        doc.update(kwargs)
    with pytest.raises(TaskError) as by_worker:
        rules.parse(doc)
    assert str(by_worker.value) == message
    assert task_ids(store) == []


@pytest.mark.parametrize("args, kwargs, message", [
    (("a",), {"kwargs": {"b": 1}}, "job.arguments: give positional arguments or kwargs"),
    ((), {"worker": "a b"}, "worker: 'a b' is not a worker name"),
    ((), {"worker": ""}, "worker: required"),
    ((), {"job": "os.system"}, "job.name: 'os.system' is not a job name"),
    ((), {"at": "tomorrow"}, "at: 'tomorrow' is not 'now'"),
    ((), {"id": "_design/x"}, "id: '_design/x' is not a task id"),
    ((), {"tz": "UTC"}, "tz: applies to cron only"),
    ((), {"limit": 2}, "limit: applies to a repeating task only"),
    ((), {"every": "1d", "cron": "* * * * *"}, "every: give every or cron, not both"),
    ((), {"every": "7x"}, "every: '7x' is not an interval"),
    ((), {"every": "1d1d"}, "every: '1d1d' gives 'd' twice"),
    ((object(),), {}, "job.arguments: not JSON"),
])
def test_bad_arguments_are_refused(client, store, args, kwargs, message):
    params = {"job": "noop", "worker": "w", **kwargs}
    with pytest.raises(TaskError, match="^" + re.escape(message)):
        client.schedule(params.pop("job"), *args, **params)
    assert task_ids(store) == []


def test_schedule_in_a_database_not_set_up(couch_url):
    with Client(couch_url, "after_no_such_db") as client:
        with pytest.raises(NotFound, match="the database after_no_such_db does not exist .*"
                                           "run `after setup`"):
            client.schedule("noop", worker="w")
        with pytest.raises(NotFound, match="does not exist"):
            client.get("x")


# -- upsert with id ------------------------------------------------------------------------


def test_schedule_with_an_id_twice_leaves_one_unchanged_task(client, store):
    for _ in range(2):
        assert client.schedule("hello", worker="w", every="1d", id="daily") == "daily"
    assert task_ids(store) == ["daily"]
    assert store.get("daily")["_rev"].startswith("1-")


def test_upsert_keeps_counters_and_other_fields_and_reruns_a_finished_task(client, store):
    client.schedule("hello", "Ada", worker="w", at="2027-01-01", id="t", retry=2)
    doc = store.get("t")
    doc.update(status="error", note="mine",
               after={"runs": 3, "failures": 3, "error": "boom", "attempt": 0,
                      "last_run": {"number": 3, "outcome": "error"}})
    store.put(doc)
    client.schedule("hello", "Bo", worker="w", id="t")
    new = store.get("t")
    assert new["job"]["arguments"] == ["Bo"]
    assert new["date"] == "2027-01-01T00:00:00.000Z"  # no at: the date is kept
    assert "retry" not in new  # the definition is replaced as a whole
    assert new["note"] == "mine"
    assert new["status"] == "waiting"
    assert new["after"] == {"runs": 3, "failures": 3, "attempt": 0,
                            "last_run": {"number": 3, "outcome": "error"}}


def test_upsert_of_a_held_task_asks_the_worker_to_reread_it(client, store):
    client.schedule("hello", worker="w", at="2027-01-01", id="t")
    doc = store.get("t")
    doc.update(status="running", after={"owner": "w@h:1:x", "attempt": 1, "started": "x"})
    store.put(doc)
    client.schedule("hello", worker="w", at="2027-02-01", id="t")
    new = store.get("t")
    assert (new["status"], new["date"]) == ("reschedule", "2027-02-01T00:00:00.000Z")
    assert new["after"] == {"owner": "w@h:1:x", "attempt": 1, "started": "x"}


def test_upsert_does_not_restart_a_running_series(client, store):
    client.schedule("hello", worker="w", every="1d", at="2027-01-01", id="daily")
    doc = store.get("daily")  # the worker ran it twice and moved it on
    doc.update(date="2027-01-03T00:00:00.000Z",
               after={"anchor": "2027-01-01T00:00:00.000Z", "occurrences": 2, "runs": 2})
    store.put(doc)
    rev = doc["_rev"]
    client.schedule("hello", worker="w", every="1d", at="2027-01-01", id="daily")
    assert store.get("daily")["_rev"] == rev  # same series: nothing to write
    client.schedule("hello", worker="w", every="2d", at="2027-01-01", id="daily")
    new = store.get("daily")
    assert new["repeat"] == {"days": 2}
    assert new["date"] == "2027-01-01T00:00:00.000Z"
    assert new["after"] == {"runs": 2, "attempt": 0}  # a new series: anchor and count reset


def test_upsert_rereads_and_retries_on_a_conflict(client, store, monkeypatch):
    client.schedule("hello", worker="w", at="2027-01-01", id="t")
    put = client.store.put
    calls = []

    def racing_put(doc, **kwargs):
        if not calls:  # a worker writes between our read and our write
            other = store.get("t")
            other["after"] = {"runs": 1, "successes": 1}
            store.put(other)
        calls.append(doc.get("_rev"))
        return put(doc, **kwargs)

    monkeypatch.setattr(client.store, "put", racing_put)
    client.schedule("hello", "Bo", worker="w", id="t")
    new = store.get("t")
    assert len(calls) == 2 and calls[0].startswith("1-") and calls[1].startswith("2-")
    assert new["job"]["arguments"] == ["Bo"]
    assert new["after"]["runs"] == 1  # the worker's write was not lost
    assert new["_rev"].startswith("3-")


# -- get, cancel, reschedule ---------------------------------------------------------------


def test_get_unknown(client):
    with pytest.raises(TaskNotFound, match="no task 'nope' in "):
        client.get("nope")


def test_cancel_by_status(client, store):
    client.schedule("hello", worker="w", at="2027-01-01", id="t")
    assert client.cancel("t")["status"] == "canceled"
    doc = store.get("t")
    assert doc["status"] == "canceled" and "canceled" in doc["after"]
    with pytest.raises(StateError, match="^task t is canceled: there is nothing to cancel$"):
        client.cancel("t")
    client.schedule("hello", worker="w", at="2027-01-01", id="held")
    doc = store.get("held")
    doc.update(status="scheduled", after={"owner": "w@h:1:x", "due": doc["date"]})
    store.put(doc)
    assert client.cancel("held")["status"] == "cancel"
    assert store.get("held")["after"]["owner"] == "w@h:1:x"
    assert client.cancel("held")["_rev"] == store.get("held")["_rev"]  # already asked
    with pytest.raises(TaskNotFound):
        client.cancel("nope")


def test_reschedule_by_status(client, store):
    client.schedule("hello", worker="w", every="1d", at="2027-01-01", id="t")
    with pytest.raises(StateError, match="^task t is waiting, not error: reschedule it "
                                         r"with all=True to run it again anyway$"):
        client.reschedule("t")
    doc = store.get("t")
    doc.update(status="error", after={"error": "boom", "attempt": 2, "runs": 2,
                                      "anchor": "2027-01-01T00:00:00.000Z"})
    store.put(doc)
    new = client.reschedule("t", at="2027-05-01T10:00:00+02:00")
    assert new == store.get("t")
    assert (new["status"], new["date"]) == ("waiting", "2027-05-01T08:00:00.000Z")
    assert new["after"] == {"attempt": 0, "runs": 2}
    before = utcnow()
    assert parse_date(client.reschedule("t", all=True)["date"]) >= before - timedelta(
        milliseconds=1)
    doc = store.get("t")
    doc.update(status="running", after={"owner": "w@h:1:x", "attempt": 1, "started": "x"})
    store.put(doc)
    held = client.reschedule("t", at="2027-06-01", all=True)
    assert (held["status"], held["after"]["attempt"]) == ("reschedule", 1)
    with pytest.raises(TaskError, match="^at: 'soon' is not"):
        client.reschedule("t", at="soon", all=True)


def test_reschedule_refuses_a_task_that_cannot_run(client, store):
    store.put({"_id": "broken", "worker": "w", "date": "2027-01-01", "status": "error",
               "job": {"name": "noop"}, "repeat": {"days": "x"}})
    with pytest.raises(TaskError, match="^repeat: days must be a non-negative integer"):
        client.reschedule("broken")
    assert store.get("broken")["status"] == "error"


# -- runs and tasks ------------------------------------------------------------------------


def test_runs_newest_first(client, store):
    client.schedule("hello", worker="w", id="t")
    for number in (1, 3, 2):
        store.put({"_id": f"t#{number}", "type": "run", "task": "t", "number": number,
                   "outcome": "done"}, db=client.runs_db)
    store.put({"_id": "u#1", "type": "run", "task": "u", "number": 1}, db=client.runs_db)
    assert [r["_id"] for r in client.runs("t")] == ["t#3", "t#2", "t#1"]
    assert [r["_id"] for r in client.runs("t", 2)] == ["t#3", "t#2"]
    assert client.runs("nope") == []
    with pytest.raises(TaskError, match="^limit: must be a positive integer"):
        client.runs("t", 0)


def test_tasks_sorted_by_instant_filtered_and_paged(client, store):
    for task_id, worker, at, job in [
            ("d", "w1", "2027-01-04T00:00:00Z", "hello"),
            ("a", "w1", "2027-01-01T00:00:00Z", "noop"),
            ("b", "w2", "2027-01-02T01:00:00+02:00", "hello"),  # 2027-01-01T23:00Z
            ("c", "w1", "2027-01-03T00:00:00Z", "hello")]:
        client.schedule(job, worker=worker, at=at, id=task_id)
    store.put({**store.get("c"), "date": "2027-01-01T23:30:00-02:00"})  # 2027-01-02T01:30Z
    client.cancel("d")

    def ids(**kwargs):
        return [t["_id"] for t in client.tasks(**kwargs)]

    assert ids() == ["a", "b", "c", "d"]
    assert ids(worker="w1") == ["a", "c", "d"]
    assert ids(status="waiting") == ["a", "b", "c"]
    assert ids(status=["canceled", "error"]) == ["d"]
    assert ids(job="hello", worker="w1") == ["c", "d"]
    assert ids(after="2027-01-01T23:00:00Z") == ["b", "c", "d"]
    assert ids(before="2027-01-02T01:30:00Z") == ["a", "b"]
    assert ids(after=datetime(2027, 1, 2, tzinfo=UTC), before="2027-01-05") == ["c", "d"]
    assert ids(limit=2) == ["a", "b"]
    assert ids(limit=2, skip=2) == ["c", "d"]
    assert ids(limit=2, skip=4) == []
    with pytest.raises(TaskError, match="^status: 'nope' is not one of"):
        client.tasks(status="nope")
    with pytest.raises(TaskError, match="^before: 'x' is not"):
        client.tasks(before="x")
    with pytest.raises(TaskError, match="^skip: must be 0 or a positive integer"):
        client.tasks(skip=-1)


def test_tasks_pages_beyond_one_query_page(client, store):
    docs = [{"_id": f"t{i:03d}", "worker": "w", "status": "waiting",
             "date": f"2027-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
             "job": {"name": "noop", "arguments": []}} for i in range(120)]
    store.bulk_docs(docs)
    found = client.tasks(worker="w", limit=30, skip=90)
    assert [t["_id"] for t in found] == [f"t{i:03d}" for i in range(90, 120)]


def test_client_defaults_come_from_the_configuration(store, couch_url, monkeypatch,
                                                    tmp_path):
    monkeypatch.setenv("AFTER_COUCHDB_URL", couch_url)
    monkeypatch.setenv("AFTER_DB", store.db)
    monkeypatch.setenv("AFTER_CONFIG", str(tmp_path / "c.json"))
    (tmp_path / "c.json").write_text("{}")
    with Client() as client:
        assert (client.url, client.db, client.runs_db) == (couch_url, store.db,
                                                           f"{store.db}_runs")
        assert client.get(client.schedule("noop", worker="w"))["worker"] == "w"


# -- a worker on a replica (issue 25 item 7; what they do between two nodes: tests/cluster) --


def test_a_site_replicates_with_the_centre_and_stops(client, store, couch_url, server_kind):
    """replicate / replication / stop_replication, the methods ``after replicate`` calls: the
    centre is another database of the same server here (what the replications then do
    between two CouchDB nodes is tests/cluster/test_replica.py's)."""
    centre = f"{store.db}-centre"
    with pytest.raises(ReplicaError, match="^'ftp://x' is not an http"):
        client.replicate("shop", "ftp://x")
    if server_kind == "pouchdb":  # it stores _replicator documents but never runs them
        for call in (lambda: client.replicate("shop", couch_url, central_db=centre),
                     lambda: client.replication("shop")):
            with pytest.raises(ReplicaError, match="runs no replications .*: the site's "
                                                   "CouchDB must be Apache CouchDB$"):
                call()
        assert client.stop_replication("shop") == 0
        return
    with pytest.raises(ReplicaError, match=f"the central database {centre} at .* is not set "
                                           "up: run `after setup` against it first$"):
        client.replicate("shop", couch_url, central_db=centre)
    with Store(couch_url, centre) as central:
        schema.setup(central)
        try:
            done = client.replicate("shop", couch_url, central_db=centre)
            assert done["warning"] is None and "@" not in done["central"]
            assert done["central"].endswith(f"/{centre}")
            assert [(r["role"], r["done"]) for r in done["replications"]] == [
                (role, "written") for role in replica.ROLES]
            bare = replica.endpoint(couch_url).url  # no credentials
            assert [r["target"] for r in done["replications"]][:2] == [
                f"{bare}/{store.db}", f"{bare}/{centre}"]
            again = client.replicate("shop", couch_url, central_db=centre)
            assert {r["done"] for r in again["replications"]} == {"unchanged"}
            states = client.replication("shop")
            assert [s["role"] for s in states] == list(replica.ROLES)
            assert all(s["state"] is not None and s["error"] is None for s in states)
            assert "@" not in repr(states)  # never a credential
            assert [s["state"] for s in client.replication("till")] == [None] * 5
        finally:
            assert client.stop_replication("shop") == 5
            drop_databases(central, centre)
    assert [s["state"] for s in client.replication("shop")] == [None] * 5
    assert client.stop_replication("shop") == 0
