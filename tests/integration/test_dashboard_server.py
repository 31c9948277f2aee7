"""``after dashboard``'s server against the real server: the views it needs, the token, what
its proxy relays and refuses, feeds that stream, and credentials that stay on this side."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import uuid
from datetime import timedelta
from urllib.parse import quote, unquote, urlsplit

import httpx
import pytest

from after import replica
from after.cli.common import Failure
from after.cli.dashboard import prepare
from after.config import Config
from after.couch import schema
from after.couch.store import Store, StoreError, split_credentials
from after.dashboard import design as dashboard
from after.dashboard.server import DashboardServer
from after.rules.dates import format_date, utcnow

from ..conftest import replicating


def requires_auth(couch_url: str) -> bool:
    """False on a server that lets anyone read (pouchdb-server's admin party)."""
    bare, _ = split_credentials(couch_url)
    return httpx.get(f"{bare}/_all_dbs").status_code == 401


def basic_auth_of(couch_url: str) -> str | None:
    """The Basic credentials of the URL as they would appear in a header."""
    parts = urlsplit(couch_url)
    if parts.username is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return base64.b64encode(pair.encode()).decode()


@pytest.fixture
def served(store, couch_url):
    dashboard.install(store)
    with Store(couch_url, store.db) as proxied:
        server = DashboardServer(proxied).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def client(served):
    """An HTTP client of the page, signed in with the token as the browser is."""
    with httpx.Client(base_url=served.base_url, timeout=30) as http:
        answer = http.get(f"/?token={served.token}")  # follows nothing: 303 + cookie
        assert answer.status_code == 303
        yield http


# -- the views -----------------------------------------------------------------------------


def test_install_is_idempotent_and_drops_the_old_pages_attachments(store):
    old = {"_id": dashboard.DESIGN_ID, "views": {},
           "_attachments": {"index.html": {"content_type": "text/html",
                                           "data": "PGgxPm9sZDwvaDE+"}}}
    store.put(old)
    assert dashboard.install(store) is True
    first = store.get(dashboard.DESIGN_ID)
    assert "_attachments" not in first
    assert set(first["views"]) == {"status", "upcoming"}
    assert dashboard.install(store) is False
    assert store.get(dashboard.DESIGN_ID)["_rev"] == first["_rev"]
    assert dashboard.is_installed(store)
    assert store.view("dashboard", "status", group_level=1) == []


def test_the_workers_design_document_is_left_alone(store):
    before = store.get(schema.DESIGN_ID)
    dashboard.install(store)
    assert store.get(schema.DESIGN_ID) == before


# -- the page and its token ----------------------------------------------------------------


def test_the_page_names_its_database_and_needs_the_token(served, store):
    base = served.base_url
    assert httpx.get(f"{base}/").status_code == 403
    assert httpx.get(f"{base}/{store.db}").status_code == 403
    assert httpx.get(f"{base}/?token=wrong").status_code == 403
    assert httpx.get(f"{base}/", cookies={served.cookie: "wrong"}).status_code == 403

    signed = httpx.get(f"{base}/?token={served.token}")
    assert signed.status_code == 303
    cookie = signed.headers["set-cookie"]
    assert f"{served.cookie}={served.token}" in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie

    page = httpx.get(f"{base}/", cookies={served.cookie: served.token})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert f'<meta name="after-db" content="{store.db}">' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = httpx.get(f"{base}/app.js", cookies={served.cookie: served.token})
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.text == (dashboard.STATIC / "app.js").read_text()


def test_a_request_with_another_host_is_refused(served, client):
    # what a DNS-rebinding page would send: the right port, another name
    answer = client.get("/", headers={"Host": f"evil.example:{served.port}"})
    assert answer.status_code == 403
    assert "Host" in answer.json()["reason"]


# -- what is relayed -----------------------------------------------------------------------


def test_the_three_databases_are_relayed(client, store):
    for db in (store.db, f"{store.db}_runs", f"{store.db}_workers"):
        answer = client.get(f"/{db}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["db_name"] == db
    store.put({"_id": "t1", "worker": "w", "date": "2030-01-01T00:00:00Z",
               "job": {"name": "hello"}, "status": "waiting"})
    rows = client.get(f"/{store.db}/_design/dashboard/_view/status",
                      params={"group_level": "1"}).json()["rows"]
    assert rows == [{"key": ["waiting"], "value": 1}]
    found = client.post(f"/{store.db}/_find", json={"selector": {"status": "waiting"}})
    assert [doc["_id"] for doc in found.json()["docs"]] == ["t1"]


def test_actions_apply_the_tasks_rules_through_the_client(client, store):
    doc = {"_id": "odd/id?x y é", "worker": "w", "date": "2030-01-01T00:00:00Z",
           "job": {"name": "hello"}, "status": "waiting"}
    store.put(doc)
    path = f"/_after/tasks/{quote(doc['_id'], safe='')}"  # as the page's encodeURIComponent
    canceled = client.post(f"{path}/cancel", json={})
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    written = store.get(doc["_id"])
    assert written["status"] == "canceled" and "canceled" in written["after"]  # stamped
    assert canceled.json()["_rev"] == written["_rev"]

    again = client.post(f"{path}/cancel", json={})  # a canceled task offers no cancel
    assert again.status_code == 409
    assert "canceled: cancel is not possible" in again.json()["reason"]
    moved = client.post(f"{path}/reschedule", json={"date": "2031-02-03T04:05:00Z"})
    assert moved.status_code == 200, moved.text
    assert (store.get(doc["_id"])["date"], store.get(doc["_id"])["status"]) == (
        "2031-02-03T04:05:00.000Z", "waiting")
    bad = client.post(f"{path}/reschedule", json={"date": "tomorrow"})
    assert bad.status_code == 400 and bad.json()["reason"].startswith("at:")
    assert client.post("/_after/tasks/nope/run", json={}).status_code == 404
    assert client.get(f"{path}/run").status_code == 405
    assert client.post(f"{path}/explode", json={}).status_code == 404
    assert client.put(f"/{store.db}/x", json=doc).status_code == 403  # no write but these


def test_the_audit_answers_the_report_of_the_client(served, client, store):
    """``GET /_after/audit``: the report of Client.audit, as JSON; bad values are a 400, an
    unknown task a 404, anything but GET a 405, and no token a 403."""
    store.put({"_id": "hourly", "worker": "w", "job": {"name": "hello"}, "status": "waiting",
               "date": "2026-01-01T03:00:00.000Z", "repeat": {"hours": 1},
               "after": {"anchor": "2026-01-01T00:00:00.000Z"}})
    store.put({"_id": "r1", "type": "run", "task": "hourly", "worker": "w", "attempt": 1,
               "scheduled": "2026-01-01T01:00:00.000Z", "outcome": "done",
               "occurrence_date": "2026-01-01T01:00:00.000Z",
               "started": "2026-01-01T01:00:00.300Z"}, db=f"{store.db}_runs")
    window = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T02:00:00Z"}
    answer = client.get("/_after/audit", params={**window, "worker": "w", "late": "10"})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["from"], report["to"], report["late_s"]) == (
        "2026-01-01T00:00:00.000Z", "2026-01-01T02:00:00.000Z", 10.0)
    assert [(o["occurrence"], o["verdict"]) for o in report["tasks"][0]["occurrences"]] == [
        ("2026-01-01T00:00:00.000Z", "never"), ("2026-01-01T01:00:00.000Z", "on_time"),
        ("2026-01-01T02:00:00.000Z", "never")]
    by_task = client.get("/_after/audit", params={**window, "task": "hourly", "worker": ""})
    assert by_task.json()["counts"] == report["counts"]
    for params, status, reason in (
            ({"from": "yesterday"}, 400, "from: 'yesterday' is not"),
            ({"late": "soon"}, 400, "late: 'soon' is not a number of seconds"),
            ({"late": "-1"}, 400, "late: must be 0 or more seconds"),
            ({"since": "x"}, 400, "since: not a parameter of the audit"),
            ({"task": "nope"}, 404, "no task 'nope'")):
        refused = client.get("/_after/audit", params=params)
        assert refused.status_code == status and refused.json()["reason"].startswith(reason)
    assert client.post("/_after/audit", json={}).status_code == 405
    assert httpx.get(f"{served.base_url}/_after/audit").status_code == 403


def test_the_replication_of_a_site_is_answered(served, client, store, couch_url, server_kind):
    """``GET /_after/replication``: each worker name this database replicates with a centre
    (here another database of the same server), each replication's state as ``after
    replicate --status`` reads it, never a credential; none on pouchdb-server (it runs no
    replications), nor once they are stopped; anything but GET a 405, no token a 403."""
    assert client.get("/_after/replication").json() == {"names": {}}
    assert client.post("/_after/replication", json={}).status_code == 405
    assert httpx.get(f"{served.base_url}/_after/replication").status_code == 403
    if server_kind == "pouchdb":
        return
    with replicating(couch_url, store.db, "shop"):
        answer = client.get("/_after/replication")
        assert answer.status_code == 200, answer.text
        [(name, rows)] = answer.json()["names"].items()
        assert name == "shop" and [r["role"] for r in rows] == list(replica.ROLES)
        assert all(r["state"] in ("pending", "initializing", "running") for r in rows)
        assert rows[0]["target"] == f"{replica.endpoint(couch_url).url}/{store.db}"
        assert "@" not in answer.text
    assert client.get("/_after/replication").json() == {"names": {}}


def test_run_now_and_backfill_actions_keep_the_schedule(client, store):
    """``run`` writes one extra run (not a reschedule), ``backfill`` a window's occurrences
    (a repeating task only); the task itself is untouched."""
    doc = {"_id": "daily", "worker": "w", "date": "2030-01-01T00:00:00Z",
           "job": {"name": "hello"}, "status": "waiting", "repeat": {"days": 1}}
    store.put(dict(doc))
    ran = client.post("/_after/tasks/daily/run", json={})
    assert ran.status_code == 200, ran.text
    assert ran.json()["_id"].startswith("daily:manual:")
    assert ran.json()["occurrence"]["kind"] == "manual"
    filled = client.post("/_after/tasks/daily/backfill",
                         json={"from": "2026-01-01T00:00", "to": "2026-01-03T00:00Z"})
    assert filled.status_code == 200, filled.text
    assert filled.json()["created"] == [f"daily:backfill:2026-01-0{d}T00:00:00.000Z"
                                        for d in (1, 2, 3)]
    again = client.post("/_after/tasks/daily/backfill",
                        json={"from": "2026-01-01", "to": "2026-01-03"})
    assert (again.json()["created"], len(again.json()["existing"])) == ([], 3)
    after = store.get("daily")
    assert (after["date"], after["status"]) == (doc["date"], "waiting")
    missing = client.post("/_after/tasks/daily/backfill", json={"from": "2026-01-01"})
    assert missing.status_code == 400 and missing.json()["reason"] == "to: required (ISO 8601)"
    store.put({**doc, "_id": "once", "repeat": None})
    once = client.post("/_after/tasks/once/backfill",
                       json={"from": "2026-01-01", "to": "2026-01-03"})
    assert once.status_code == 409 and "does not repeat" in once.json()["reason"]


def test_an_action_from_another_origin_is_refused(served, client, store):
    """Issue 24 item 9: a page on another port of 127.0.0.1 is the same site, so the
    browser sends the cookie with its requests; its form (text/plain) or fetch canceled a
    task. Real requests, as that browser sends them, on the real server."""
    doc = {"_id": "victim", "worker": "w", "date": "2030-01-01T00:00:00Z",
           "job": {"name": "hello"}, "status": "waiting", "repeat": {"days": 1}}
    store.put(dict(doc))
    before = store.get("victim")["_rev"]
    form = '{"x":"="}'  # what <form enctype="text/plain"> sends for a crafted field
    foreign = f"http://127.0.0.1:{served.port + 1}"
    tries = [  # (headers, body): none may change anything
        ({"Content-Type": "text/plain", "Origin": foreign, "Sec-Fetch-Site": "same-site"},
         form),
        ({"Content-Type": "text/plain"}, form),  # a browser that sends neither header
        ({"Content-Type": "application/x-www-form-urlencoded"}, "a=1"),
        ({"Content-Type": "multipart/form-data; boundary=x"}, "--x--"),
        ({}, "{}"),  # no content type
        ({"Content-Type": "application/json", "Origin": foreign}, "{}"),
        ({"Content-Type": "application/json", "Origin": "null"}, "{}"),  # a sandboxed page
        ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, "{}"),
        ({"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"}, "{}"),
        ({"Content-Type": "application/json", "Origin": served.base_url,
          "Sec-Fetch-Site": "same-site"}, "{}"),
    ]
    for action in ("cancel", "run", "backfill", "pause", "resume", "reschedule"):
        for headers, body in tries:
            answer = client.post(f"/_after/tasks/victim/{action}", headers=headers,
                                 content=body)
            assert answer.status_code == 403, (action, headers, answer.text)
            assert "cross-site" in answer.json()["reason"]
    for action in ("pause", "resume"):
        answer = client.post(f"/_after/workers/w/{action}", content=form,
                             headers={"Content-Type": "text/plain", "Origin": foreign})
        assert answer.status_code == 403, answer.text
    answer = client.post(f"/{store.db}/_find", content='{"selector": {}}',
                         headers={"Content-Type": "application/json", "Origin": foreign})
    assert answer.status_code == 403  # nothing but the page's own reads pass either
    assert store.get("victim")["_rev"] == before  # nothing written
    assert store.prefixed("victim:") == []  # no extra run, no backfill
    # what the page sends from its own origin acts, with charset or without
    ours = {"Origin": served.base_url, "Sec-Fetch-Site": "same-origin",
            "Content-Type": "application/json; charset=utf-8"}
    paused = client.post("/_after/tasks/victim/pause", headers=ours, content="{}")
    assert paused.status_code == 200, paused.text
    assert store.get("victim")["status"] == "paused"
    resumed = client.post("/_after/tasks/victim/resume", json={})  # a script: no Origin
    assert resumed.status_code == 200, resumed.text


def test_cancel_stops_a_job_that_runs(client, store, harness):
    """Issue 25 item 1: the dashboard's Cancel on a running task (jobs/wait.py, which waits
    on its cancel) stops the job; the run is recorded ``canceled`` with how long it ran."""
    harness.start()
    harness.put("long", job="wait", arguments=[30])
    harness.wait_status("long", "running")
    time.sleep(0.3)
    answer = client.post("/_after/tasks/long/cancel", json={})
    asked = time.monotonic()
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancel"  # the worker that runs it writes canceled
    doc = harness.wait_status("long", "canceled", timeout=10)
    assert time.monotonic() - asked < 3  # the job saw it: not the grace, nor its 30 s
    last = doc["after"]["last_run"]
    assert last["outcome"] == "canceled" and 300 <= last["duration_ms"] < 5000
    [run] = harness.wait_runs("long")
    assert run["outcome"] == "canceled" and run["duration_ms"] == last["duration_ms"]


def test_a_pause_answers_once_the_live_processes_acknowledged_it(served, client, store,
                                                                  harness):
    """Issue 25 item 2: the dashboard's pause waits, as ``after pause NAME`` does, for every
    live process of the name to say in its heartbeat that it applied the pause, and names
    those that did not within its wait."""
    workers = f"{store.db}_workers"
    harness.start()
    answer = client.post("/_after/workers/w/pause", json={})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    [process] = body["acknowledged"]
    assert (body["name"], body["paused"], body["unacknowledged"]) == ("w", True, [])
    assert process.startswith("w@") and store.get(process, db=workers)["paused"] is True
    # a live heartbeat no process keeps (one frozen): named once the wait is over
    ghost = {"_id": "w@ghost:1:abc", "type": "worker", "name": "w", "host": "ghost", "pid": 1,
             "last_seen": format_date(utcnow()),
             "expires": format_date(utcnow() + timedelta(hours=1))}
    store.put(ghost, db=workers)
    served.pause_wait = 1.0
    asked = time.monotonic()
    again = client.post("/_after/workers/w/pause", json={}).json()
    assert 1.0 <= time.monotonic() - asked < 5
    assert (again["acknowledged"], again["unacknowledged"]) == ([process], [ghost["_id"]])
    resumed = client.post("/_after/workers/w/resume", json={})
    assert resumed.json() == {"name": "w", "paused": False}
    assert store.get_or_none("w@paused", db=workers) is None


def test_other_databases_and_server_endpoints_are_refused(client, store, couch_url):
    other = f"{store.db}_other"
    store.create_database(other)
    try:
        store.put({"_id": "secret-doc", "x": 1}, db=other)
        security = store.request("GET", f"{store.db}/_security").json()
        design = store.get(schema.DESIGN_ID)
        for method, path in [
            ("GET", f"/{other}/secret-doc"), ("GET", f"/{other}/_all_docs"),
            ("GET", "/_config"), ("GET", "/_node/_local/_config"), ("GET", "/_all_dbs"),
            ("GET", "/_users/_all_docs"), ("POST", "/_session"),
            ("GET", f"/{store.db}/_security"), ("PUT", f"/{store.db}/_security"),
            ("PUT", f"/{store.db}/_design/after"), ("DELETE", f"/{store.db}"),
            ("POST", f"/{store.db}/_bulk_docs"),
        ]:
            answer = client.request(method, path, json={"members": {"names": ["x"]},
                                                        "docs": [{"_id": "y"}]})
            assert answer.status_code in (403, 404), (method, path, answer.status_code)
            assert "secret-doc" not in answer.text
        # nothing reached the server: the database, its security and design are as they were
        assert store.database_exists()
        assert store.request("GET", f"{store.db}/_security").json() == security
        assert store.get(schema.DESIGN_ID) == design
        assert store.get_or_none("y") is None
    finally:
        store.delete_database(other)


def test_dot_segments_never_leave_the_database(served, store):
    """httpx and browsers resolve ``..`` before sending; a raw client need not."""
    for raw in (f"/{store.db}/../_config", f"/{store.db}/%2e%2e/_all_dbs",
                f"/{store.db}/%2E%2E/_users/_all_docs"):
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        try:
            connection.request("GET", raw, headers={
                "Cookie": f"{served.cookie}={served.token}"})
            answer = connection.getresponse()
            body = answer.read().decode()
        finally:
            connection.close()
        assert answer.status == 403, (raw, body)
        assert "dot segments" in json.loads(body)["reason"]


# -- feeds ---------------------------------------------------------------------------------


def test_a_continuous_feed_streams_through(client, store):
    """Heartbeats and changes arrive while the feed is still open, as they happen."""
    since = store.update_seq()
    lines: list[tuple[float, str]] = []
    opened = threading.Event()

    def follow():
        with client.stream("GET", f"/{store.db}/_changes", params={
                "feed": "continuous", "heartbeat": "300", "since": since,
                "timeout": "20000"}, timeout=30) as feed:
            assert feed.status_code == 200
            opened.set()
            for line in feed.iter_lines():
                lines.append((time.monotonic(), line))
                if line == "":
                    beat.set()
                if '"late-write"' in line:
                    return

    beat = threading.Event()
    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert opened.wait(10)
    assert beat.wait(10), "no heartbeat came through while open"
    written = time.monotonic()
    store.put({"_id": "late-write", "worker": "w", "date": "2030-01-01T00:00:00Z",
               "job": {"name": "hello"}, "status": "waiting"})
    reader.join(10)
    assert not reader.is_alive(), "the change never came through"
    arrived = next(at for at, line in lines if '"late-write"' in line)
    assert arrived - written < 2.0  # as it happened, not when the feed ended (20 s)


def test_a_longpoll_answers_when_a_change_comes(client, store):
    since = store.update_seq(f"{store.db}_workers")
    answers, chunks = [], []
    beat = threading.Event()

    def poll():
        with client.stream("GET", f"/{store.db}_workers/_changes", params={
                "feed": "longpoll", "since": since, "heartbeat": "300", "timeout": "20000",
                "include_docs": "true"}, timeout=30) as answer:
            for chunk in answer.iter_bytes():
                chunks.append(chunk)
                if not chunk.strip():
                    beat.set()  # a heartbeat came through, nothing else yet
            answers.append(json.loads(b"".join(chunks)))

    reader = threading.Thread(target=poll, daemon=True)
    reader.start()
    assert beat.wait(10), f"no heartbeat came through the open longpoll: {chunks}"
    assert answers == []  # still waiting, through a heartbeat or more
    store.put({"_id": "w@h:1:x", "type": "worker", "name": "w"}, db=f"{store.db}_workers")
    reader.join(10)
    assert answers, "the longpoll did not answer the change"
    results = answers[0]["results"]
    assert [change["id"] for change in results] == ["w@h:1:x"]


# -- credentials ---------------------------------------------------------------------------


def test_credentials_stay_on_this_side(served, client, store, couch_url):
    header = basic_auth_of(couch_url)
    password = urlsplit(couch_url).password
    exchanges = [client.get("/"), client.get("/app.js"), client.get("/couch.js"),
                 client.get(f"/{store.db}"),
                 client.get(f"/{store.db}/_changes", params={"limit": "5"}),
                 client.get(f"/{store.db}/missing"),
                 client.get("/_session")]
    for answer in exchanges:
        headers = {k.lower() for k in answer.headers}
        assert not headers & {"www-authenticate", "set-cookie", "authorization"}, answer.url
        text = answer.text + json.dumps(dict(answer.headers))
        if header:
            assert header not in text
            assert password not in text
    # whatever the browser sends as credentials, the proxy uses its own
    foreign = client.get(f"/{store.db}", headers={"Authorization": "Basic bm9ib2R5Om5vcGU=",
                                                  "Cookie": f"AuthSession=forged; "
                                                            f"{served.cookie}={served.token}"})
    assert foreign.status_code == 200


@pytest.mark.auth_server
def test_a_member_who_is_not_an_admin_can_use_it(store, couch_url):
    """On CouchDB: a user in ``_users``, member of the three databases, no admin rights."""
    assert requires_auth(couch_url), "this server checks no credentials"
    name, password = f"member-{uuid.uuid4().hex[:8]}", "member-pass"
    store.create_database("_users")
    user = {"_id": f"org.couchdb.user:{name}", "name": name, "password": password,
            "type": "user", "roles": []}
    store.put(user, db="_users")
    dbs = (store.db, f"{store.db}_runs", f"{store.db}_workers")
    for db in dbs:
        store.request("PUT", f"{db}/_security",
                      body={"admins": {"names": [], "roles": []},
                            "members": {"names": [name], "roles": []}})
    dashboard.install(store)  # by the admin (a member cannot write design documents)
    bare, _ = split_credentials(couch_url)
    member_url = bare.replace("://", f"://{name}:{password}@", 1)
    try:
        with Store(member_url, store.db) as member:
            assert not dashboard.install(member)  # current: nothing to write
            with pytest.raises(StoreError, match="admin"):
                member.request("GET", "_all_dbs")  # no server admin rights
            server = DashboardServer(member).start()
            try:
                with httpx.Client(base_url=server.base_url, timeout=30) as http:
                    http.get(f"/?token={server.token}")
                    for db in dbs:
                        assert http.get(f"/{db}").status_code == 200
                    task = {"_id": "by-member", "worker": "w", "status": "waiting",
                            "date": "2030-01-01T00:00:00Z", "job": {"name": "hello"}}
                    store.put(task)
                    answer = http.post("/_after/tasks/by-member/cancel", json={})
                    assert answer.status_code == 200, answer.text
                    view = http.get(f"/{store.db}/_design/dashboard/_view/status")
                    assert view.status_code == 200
            finally:
                server.stop()
        assert store.get("by-member")["status"] == "canceled"
        # views an admin has not installed (yet): the member is told who must set them up
        store.delete(dashboard.DESIGN_ID, store.get(dashboard.DESIGN_ID)["_rev"])
        cfg = Config(url=member_url, db=store.db)
        with Store(member_url, store.db) as member, pytest.raises(Failure) as refused:
            prepare(cfg, member)
        assert "`after setup`" in refused.value.message
        assert password not in refused.value.message
    finally:
        store.delete(user["_id"], store.get(user["_id"], db="_users")["_rev"], db="_users")


def test_a_taken_port_is_an_oserror(served, store):
    with pytest.raises(OSError):
        DashboardServer(store, port=served.port)
