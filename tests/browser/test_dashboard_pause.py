"""The dashboard's pause and resume, of a task and of a worker name, and skipped runs, in
headless Chromium against the test's real server."""

from __future__ import annotations

from playwright.sync_api import expect

from after.couch import pausing
from after.rules.dates import utcnow

from .factories import run_doc, task_doc, worker_doc


def row(page, docid: str):
    return page.locator(f'#tasks-body tr[data-id="{docid}"]')


def test_pause_then_resume_a_task(store, open_page):
    store.put(task_doc("digest", repeat={"minutes": 1}))
    page = open_page().page
    row(page, "digest").get_by_role("button", name="Pause").click()
    expect(row(page, "digest").locator(".badge").first).to_have_text("paused")
    doc = store.get("digest")
    assert doc["status"] == "paused" and "paused" in doc["after"]  # after.rules.task's stamp
    row(page, "digest").get_by_role("button", name="Resume").click()
    expect(row(page, "digest").locator(".badge").first).to_have_text("waiting")
    assert "paused" not in store.get("digest")["after"]


def test_a_paused_worker_name_is_shown_and_resumed_and_paused_again(store, open_page,
                                                                     dashboard_server):
    """The pause waits for the name's live processes to acknowledge it (no process keeps
    these heartbeats: the answer comes after the server's wait, naming them), and each
    process shows ``paused`` once its own heartbeat says so (issue 25 item 2)."""
    workers_db = f"{store.db}_workers"
    dashboard_server.pause_wait = 1.0
    store.put(worker_doc("billing", "host-a", 101), db=workers_db)
    store.put(worker_doc("billing", "host-b", 102), db=workers_db)
    page = open_page().page
    body = page.locator("#workers-body")
    body.get_by_role("button", name="Pause").click()
    paused = page.locator('#workers-body tr.paused-name[data-name="billing"]')
    expect(paused).to_contain_text("paused")
    expect(page.locator("#workers-count")).to_contain_text("1 paused")
    assert pausing.is_pause(store.get_or_none("billing@paused", db=workers_db), "billing")
    expect(page.locator("#message")).to_contain_text(
        "not acknowledged by billing@host-a:101:abc, billing@host-b:102:abc")
    a = page.locator('#workers-body tr[data-id="billing@host-a:101:abc"] .badge')
    b = page.locator('#workers-body tr[data-id="billing@host-b:102:abc"] .badge')
    expect(a).to_have_text("pausing")
    beat = store.get("billing@host-a:101:abc", db=workers_db)
    store.put({**beat, "paused": True}, db=workers_db)  # host-a's process applied it
    expect(a).to_have_text("paused")
    expect(b).to_have_text("pausing")
    paused.get_by_role("button", name="Resume").click()
    expect(paused).to_have_count(0)
    assert store.get_or_none("billing@paused", db=workers_db) is None


def test_a_name_paused_elsewhere_shows_up_live(store, open_page):
    page = open_page().page
    pausing.pause(store, f"{store.db}_workers", "mail", utcnow())
    expect(page.locator('#workers-body tr.paused-name[data-name="mail"]')).to_contain_text(
        "paused")


def test_a_skipped_run_is_shown_as_skipped(store, open_page):
    skipped = run_doc("digest", 4, outcome="skipped", error="skipped: run 4 of this task was "
                      "still going (overlap skip)")
    store.put(skipped, db=f"{store.db}_runs")
    page = open_page().page
    run = page.locator(f'#runs-body tr[data-id="{skipped["_id"]}"]')
    expect(run.locator(".badge")).to_have_text("skipped")
    expect(run).to_contain_text("still going")
