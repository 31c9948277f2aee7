"""A waiting task whose worker name no live process serves says so beside the name, and
stops saying it as soon as a process of the name beats; long lists (tasks, runs, worker
processes) are paged, 50 rows a page."""

from __future__ import annotations

from datetime import timedelta

from playwright.sync_api import expect

from .factories import run_doc, task_doc, worker_doc


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


def test_the_tasks_table_is_paged(store, open_page):
    store.bulk_docs([task_doc(f"task-{k:03d}", due=timedelta(minutes=10 + k))
                     for k in range(120)])
    watched = open_page()
    page = watched.page
    rows = page.locator("#tasks-body tr")
    expect(rows).to_have_count(50)
    expect(page.locator("#tasks-page")).to_have_text("1–50 of 120 · page 1 of 3")
    expect(page.locator("#tasks-prev")).to_be_disabled()
    expect(rows.nth(0)).to_have_attribute("data-id", "task-000")
    page.locator("#tasks-next").click()
    page.locator("#tasks-next").click()
    expect(page.locator("#tasks-page")).to_have_text("101–120 of 120 · page 3 of 3")
    expect(rows).to_have_count(20)
    expect(rows.nth(0)).to_have_attribute("data-id", "task-100")
    expect(page.locator("#tasks-next")).to_be_disabled()
    page.locator("#tasks-prev").click()
    expect(page.locator("#tasks-page")).to_have_text("51–100 of 120 · page 2 of 3")
    expect(rows.nth(0)).to_have_attribute("data-id", "task-050")
    page.locator("#filter-status").select_option("waiting")  # a new filter: page 1
    expect(page.locator("#tasks-page")).to_have_text("1–50 of 120 · page 1 of 3")
    expect(rows.nth(0)).to_have_attribute("data-id", "task-000")
    assert watched.errors == []


def test_the_runs_and_the_worker_processes_are_paged_too(store, open_page):
    store.bulk_docs([run_doc(f"task-{k % 7}", k, ago=timedelta(minutes=200 - k))
                     for k in range(120)], db=f"{store.db}_runs")
    store.bulk_docs([worker_doc("billing", f"host-{k:02d}", 100 + k) for k in range(55)],
                    db=f"{store.db}_workers")
    watched = open_page()
    page = watched.page
    runs = page.locator("#runs-body tr")
    expect(runs).to_have_count(50)
    expect(page.locator("#runs-page")).to_have_text("1–50 of 120 · page 1 of 3")
    expect(runs.nth(0)).to_have_attribute("data-id", "task-0#00000119#abcdef")  # newest
    expect(page.locator("#runs-prev")).to_be_disabled()
    page.locator("#runs-next").click()
    expect(page.locator("#runs-page")).to_have_text("51–100 of 120 · page 2 of 3")
    expect(runs.nth(0)).to_have_attribute("data-id", "task-6#00000069#abcdef")
    page.locator("#runs-next").click()
    expect(runs).to_have_count(20)
    expect(page.locator("#runs-next")).to_be_disabled()
    page.locator("#runs-prev").click()
    expect(page.locator("#runs-page")).to_have_text("51–100 of 120 · page 2 of 3")
    processes = page.locator("#workers-body tr")
    expect(processes).to_have_count(50)
    expect(page.locator("#workers-page")).to_have_text("1–50 of 55 · page 1 of 2")
    page.locator("#workers-next").click()
    expect(processes).to_have_count(5)
    expect(page.locator("#workers-page")).to_have_text("51–55 of 55 · page 2 of 2")
    page.locator("#workers-prev").click()
    expect(processes).to_have_count(50)
    assert watched.errors == []
