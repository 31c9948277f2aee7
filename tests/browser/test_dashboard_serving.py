"""A waiting task whose worker name no live process serves says so beside the name, and
stops saying it as soon as a process of the name beats."""

from __future__ import annotations

from playwright.sync_api import expect

from .factories import task_doc, worker_doc


def row(page, docid: str):
    return page.locator(f'#tasks-body tr[data-id="{docid}"]')


def test_a_waiting_task_says_no_live_process_serves_its_name(store, open_page):
    workers = f"{store.db}_workers"
    store.put(worker_doc("billing", "host-a", 101), db=workers)
    store.put(task_doc("served"))
    store.put(task_doc("typo", worker="bilIing"))
    store.put(task_doc("held", worker="bilIing", status="scheduled"))
    watched = open_page()
    page = watched.page
    expect(row(page, "typo").locator(".unserved")).to_have_text(" · no live process")
    expect(row(page, "typo").locator(".unserved")).to_have_attribute(
        "title", "no live process serves the worker name bilIing: the task waits until one "
                 "starts (after start bilIing)")
    expect(row(page, "served")).to_contain_text("billing")
    expect(row(page, "served").locator(".unserved")).to_have_count(0)
    expect(row(page, "held").locator(".unserved")).to_have_count(0)  # a process holds it
    store.put(worker_doc("bilIing", "host-b", 202), db=workers)  # it starts: the note goes
    expect(row(page, "typo").locator(".unserved")).to_have_count(0)
    store.put({"_id": "billing@paused", "type": "pause", "name": "billing",
               "since": "2026-12-01T09:00:00Z"}, db=workers)
    expect(row(page, "served").locator(".unserved")).to_have_text(" · paused")
    assert watched.errors == []
