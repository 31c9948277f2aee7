"""The dashboard in headless Chromium, served by ``after dashboard``'s server, which relays
the page's requests to the test's real server (pouchdb-server or CouchDB 3)."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import httpx
import pytest
from playwright.sync_api import expect

from after.couch.store import Store, split_credentials
from after.dashboard.server import DashboardServer
from after.rules.dates import format_date, parse_date, utcnow

from ..conftest import replicating
from ..js import cases
from .conftest import SCREENSHOTS
from .factories import run_doc, task_doc, worker_doc


def row(page, docid: str):
    return page.locator(f'#tasks-body tr[data-id="{docid}"]')


def test_page_loads_without_errors_and_shows_what_the_test_created(store, open_page):
    store.put(worker_doc("billing", "host-a", 101), db=f"{store.db}_workers")
    store.put(worker_doc("mail", "host-b", 202, expires_in=-60), db=f"{store.db}_workers")
    store.put(task_doc("invoice-1", job="generate_billing"))
    store.put(task_doc("invoice-2", status="scheduled", due=timedelta(minutes=5)))
    store.put(task_doc("mailing", worker="mail", status="error", job="send_mail",
                       after={"error": "job failed: SMTP refused"}))
    store.put(run_doc("invoice-0", 1, late_ms=2500), db=f"{store.db}_runs")
    store.put(run_doc("mailing", 3, outcome="error", error="SMTPException: refused"),
              db=f"{store.db}_runs")

    watched = open_page()
    page = watched.page

    expect(page.locator("#db-name")).to_have_text(store.db)
    workers = page.locator("#workers-body tr")
    expect(workers).to_have_count(2)
    expect(workers.nth(0)).to_contain_text("billing")
    expect(workers.nth(0)).to_contain_text("host-a")
    expect(workers.nth(0)).to_contain_text("live")
    expect(workers.nth(1)).to_contain_text("mail")
    expect(workers.nth(1)).to_contain_text("stale")

    expect(page.locator("#tasks-body tr")).to_have_count(3)
    expect(row(page, "invoice-1")).to_contain_text("waiting")
    expect(row(page, "invoice-1")).to_contain_text("generate_billing")
    expect(row(page, "invoice-2")).to_contain_text("scheduled")
    expect(row(page, "mailing")).to_contain_text("SMTP refused")
    expect(page.locator("#status-counts")).to_contain_text("3 tasks")
    expect(page.locator("#status-counts .status-waiting")).to_contain_text("1")

    # the schedule: both runnable tasks are due within the hour
    expect(page.locator("#timeline-hour")).to_contain_text("2 due in the next hour")
    expect(page.locator("#timeline-hour circle")).to_have_count(2)

    # runs: the failure first, with its message; lateness = started - scheduled
    runs = page.locator("#runs-body tr")
    expect(runs).to_have_count(2)
    expect(runs.nth(0)).to_contain_text("SMTPException: refused")
    expect(runs.nth(1)).to_contain_text("2.50 s")
    expect(page.locator("#runs-chart svg circle")).to_have_count(2)

    assert watched.errors == []


def test_the_page_follows_changes_without_reloading(store, open_page):
    doc = task_doc("report")
    store.put(doc)
    watched = open_page()
    page = watched.page
    expect(row(page, "report")).to_contain_text("waiting")
    page.evaluate("window.__sameDocument = true")

    doc["status"] = "done"
    doc["after"] = {"runs": 1, "last_run": {"number": 1, "attempt": 1, "outcome": "done",
                                            "duration_ms": 42, "started": doc["date"],
                                            "ended": doc["date"]}}
    store.put(doc)
    store.put(task_doc("late-comer", job="noop"))
    store.put(worker_doc("billing"), db=f"{store.db}_workers")
    store.put(run_doc("report", 1, outcome="timeout", error="timeout: took longer than 5s"),
              db=f"{store.db}_runs")

    expect(row(page, "report")).to_contain_text("done")
    expect(row(page, "report")).to_contain_text("42 ms")
    expect(row(page, "late-comer")).to_be_visible()
    expect(page.locator("#workers-body tr")).to_contain_text("billing")
    expect(page.locator("#runs-body tr").first).to_contain_text("took longer than 5s")
    expect(page.locator("#status-counts .status-done")).to_contain_text("1")  # the view, later
    assert page.evaluate("window.__sameDocument") is True  # no reload happened

    store.delete("late-comer", store.get("late-comer")["_rev"])
    expect(row(page, "late-comer")).to_have_count(0)
    assert watched.errors == []


def test_cancel_a_waiting_task_cancels_it(store, open_page):
    store.put(task_doc("cleanup"))
    page = open_page().page
    row(page, "cleanup").get_by_role("button", name="Cancel").click()
    expect(row(page, "cleanup")).to_contain_text("canceled")
    expect(page.locator("#message")).to_contain_text("Cancel requested for cleanup")
    doc = store.get("cleanup")
    assert doc["status"] == "canceled"
    assert "canceled" in doc["after"]  # stamped by after.rules.task.cancel, like `after cancel`


def test_cancel_a_held_task_asks_its_worker(store, open_page):
    store.put(task_doc("nightly", status="scheduled"))
    page = open_page().page
    row(page, "nightly").get_by_role("button", name="Cancel").click()
    expect(row(page, "nightly").locator(".badge").first).to_have_text("cancel")
    doc = store.get("nightly")
    assert doc["status"] == "cancel"
    assert doc["after"]["owner"] == "billing@test-host:4242:abc"  # the rest is kept


def test_reschedule_reads_the_input_as_utc(store, open_page):
    store.put(task_doc("backup"))
    page = open_page().page
    row(page, "backup").get_by_role("button", name="Reschedule…").click()
    dialog = page.locator("#reschedule-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("UTC")
    dialog.locator("input[type=datetime-local]").fill("2030-01-02T03:04")
    dialog.get_by_role("button", name="Reschedule").click()
    expect(row(page, "backup")).to_contain_text("01-02 · 03:04")
    doc = store.get("backup")
    assert (doc["date"], doc["status"]) == ("2030-01-02T03:04:00.000Z", "waiting")


def test_run_now_on_a_held_task_asks_for_one_extra_run_and_keeps_the_schedule(store,
                                                                              open_page):
    held = task_doc("digest", status="scheduled", due=timedelta(hours=5))
    store.put(held)
    page = open_page().page
    before = utcnow()
    row(page, "digest").get_by_role("button", name="Run now").click()
    expect(page.locator("#message")).to_contain_text("One extra run asked for digest")
    doc = store.get("digest")
    assert (doc["status"], doc["date"]) == ("scheduled", held["date"])  # untouched
    extra = [d for d in store.prefixed("digest:manual:")]
    assert len(extra) == 1 and extra[0]["status"] == "waiting"
    assert extra[0]["occurrence"]["task"] == "digest"
    assert abs((parse_date(extra[0]["date"]) - before).total_seconds()) < 10


def test_backfill_asks_for_a_window_in_utc(store, open_page):
    store.put(task_doc("hourly", repeat={"hours": 1}))
    store.put(task_doc("once"))
    page = open_page().page
    expect(row(page, "once").get_by_role("button", name="Backfill…")).to_have_count(0)
    row(page, "hourly").get_by_role("button", name="Backfill…").click()
    dialog = page.locator("#backfill-dialog")
    expect(dialog).to_contain_text("UTC")
    start = (utcnow() - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    anchor = parse_date(store.get("hourly")["date"])
    dialog.locator("#backfill-from").fill(format_date(start)[:16])
    dialog.locator("#backfill-to").fill(format_date(start + timedelta(hours=2))[:16])
    dialog.get_by_role("button", name="Backfill").click()
    wanted = sorted(anchor - timedelta(hours=k) for k in range(1, 200)
                    if start <= anchor - timedelta(hours=k) <= start + timedelta(hours=2))
    assert len(wanted) == 2  # xx:mm after each of the window's first two whole hours
    expect(page.locator("#message")).to_contain_text("2 occurrence(s) to run")
    made = store.prefixed("hourly:backfill:")
    assert [parse_date(d["occurrence"]["date"]) for d in made] == wanted
    assert store.get("hourly")["status"] == "waiting"  # the schedule is kept


def test_backfill_says_it_leaves_the_task_its_overdue_date(store, open_page):
    """Issue 24 item 6: the task runs its own overdue occurrence (issue 25: the latest due,
    the series' last here); the backfill does not copy it."""
    overdue = (utcnow() - timedelta(hours=2)).replace(second=0, microsecond=0)
    last = overdue + timedelta(hours=1)
    store.put(task_doc("hourly", repeat={"hours": 1, "until": format_date(last)},
                       due=overdue - utcnow()))
    page = open_page().page
    row(page, "hourly").get_by_role("button", name="Backfill…").click()
    dialog = page.locator("#backfill-dialog")
    dialog.locator("#backfill-from").fill(format_date(overdue)[:16])
    dialog.locator("#backfill-to").fill(format_date(last)[:16])
    dialog.get_by_role("button", name="Backfill").click()
    expect(page.locator("#message")).to_contain_text(
        f"1 occurrence(s) to run, {format_date(last)} left to the task's own run")
    made = store.prefixed("hourly:backfill:")
    assert [d["occurrence"]["date"] for d in made] == [format_date(overdue)]


def test_rerun_a_failed_task(store, open_page):
    store.put(task_doc("sync", status="error", due=timedelta(hours=-1),
                       after={"error": "boom", "runs": 1}))
    page = open_page().page
    row(page, "sync").get_by_role("button", name="Re-run").click()
    expect(row(page, "sync")).to_contain_text("waiting")
    doc = store.get("sync")
    assert doc["status"] == "waiting"
    assert abs((parse_date(doc["date"]) - utcnow()).total_seconds()) < 10


def test_an_action_the_task_no_longer_offers_says_so_and_reloads_it(store, open_page,
                                                                    db_name):
    doc = task_doc("contested", status="error", after={"error": "boom"})
    store.put(doc)
    # The page does not hear of the tasks database's changes: its copy goes stale.
    feed = re.compile(rf"/{db_name}/_changes\?feed=longpoll")
    watched = open_page(before=lambda page: page.route(feed, lambda route: None))
    page = watched.page
    doc.update(status="done", worker="mail")
    store.put(doc)

    row(page, "contested").get_by_role("button", name="Re-run").click()
    expect(page.locator("#message")).to_contain_text("contested changed meanwhile, reloaded")
    expect(row(page, "contested")).to_contain_text("mail")
    assert store.get("contested")["status"] == "done"  # nothing was written
    row(page, "contested").get_by_role("button", name="Run now").click()
    expect(page.locator("#message")).to_contain_text("One extra run asked for contested")
    assert store.get("contested")["status"] == "done"  # the schedule is kept
    assert len(store.prefixed("contested:manual:")) == 1


def test_filters_and_search(store, open_page):
    store.put(task_doc("bill-1", worker="billing", job="generate_billing"))
    store.put(task_doc("bill-2", worker="billing", job="generate_billing", status="done"))
    store.put(task_doc("mail-1", worker="mail", job="send_mail"))
    page = open_page().page
    expect(page.locator("#tasks-body tr")).to_have_count(3)

    page.locator("#filter-worker").select_option("mail")
    expect(page.locator("#tasks-body tr")).to_have_count(1)
    expect(row(page, "mail-1")).to_be_visible()
    page.locator("#filter-worker").select_option("")

    page.locator("#status-counts .status-done").click()
    expect(page.locator("#tasks-body tr")).to_have_count(1)
    expect(row(page, "bill-2")).to_be_visible()
    expect(page.locator("#filter-status")).to_have_value("done")
    page.locator("#filter-status").select_option("")

    page.locator("#filter-job").select_option("generate_billing")
    expect(page.locator("#tasks-body tr")).to_have_count(2)
    page.locator("#filter-job").select_option("")

    page.locator("#search").fill("bill-")
    expect(page.locator("#tasks-body tr")).to_have_count(2)
    page.locator("#search").fill("mail-1")
    expect(page.locator("#tasks-body tr")).to_have_count(1)
    # a change to a task the filters hide does not show it
    store.put(task_doc("bill-3"))
    store.put(task_doc("mail-10", worker="mail"))
    expect(page.locator("#tasks-body tr")).to_have_count(2)


def test_screenshots(store, open_page):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    store.put(worker_doc("billing", "host-a", 101), db=f"{store.db}_workers")
    store.put(worker_doc("billing", "host-b", 202, held=0, running=0), db=f"{store.db}_workers")
    for i, (status, minutes) in enumerate([("running", -1), ("scheduled", 3), ("scheduled", 12),
                                           ("waiting", 40), ("waiting", 200), ("waiting", 900),
                                           ("done", -30), ("error", -60)]):
        extra = {"after": {"error": "job failed: ValueError('no invoice 42')"}} \
            if status == "error" else {}
        store.put(task_doc(f"task-{i}", status=status, due=timedelta(minutes=minutes),
                           job=["hello", "generate_billing", "send_mail"][i % 3], **extra))
    for n in range(30):
        outcome = "error" if n % 9 == 4 else "timeout" if n == 20 else "done"
        store.put(run_doc(f"task-{n % 6}", n, outcome=outcome, late_ms=40 + (n * 37) % 900,
                          ago=timedelta(minutes=60 - 2 * n),
                          error=None if outcome == "done" else f"{outcome}: invoice {n}"),
                  db=f"{store.db}_runs")
    for width, name in ((1280, "dashboard-1280.png"), (420, "dashboard-narrow.png")):
        watched = open_page(width=width)
        page = watched.page
        expect(page.locator("#runs-body tr")).to_have_count(30)  # one page (of 50)
        path = SCREENSHOTS / name
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
        assert watched.errors == []


def test_a_refused_request_says_why(store, open_page):
    """Without its token (a restarted `after dashboard`), the page says what to do."""
    store.put(task_doc("orphan"))
    watched = open_page()
    page = watched.page
    expect(row(page, "orphan")).to_be_visible()
    page.context.clear_cookies()
    row(page, "orphan").get_by_role("button", name="Cancel").click()
    expect(page.locator("#message")).to_contain_text("open the address `after dashboard` "
                                                     "printed")
    assert store.get("orphan")["status"] == "waiting"


@pytest.mark.auth_server
def test_credentials_couchdb_refuses_are_reported(browser, store, couch_url):
    """The page has no sign-in: a 401 from CouchDB names the credentials of the command."""
    bare, auth = split_credentials(couch_url)
    assert httpx.get(f"{bare}/{store.db}").status_code == 401, "this server checks no credentials"
    wrong = bare.replace("://", "://admin:wrong-password@", 1)
    with Store(wrong, store.db) as proxied:
        server = DashboardServer(proxied).start()
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(server.url)
            expect(page.locator("#message")).to_contain_text(
                "CouchDB refused the credentials `after dashboard` uses")
            assert "wrong-password" not in page.content()
        finally:
            context.close()
            server.stop()


def test_the_shared_tables_in_the_browser(store, open_page):
    """model.js in Chromium against tests/cases (as test_shared_rules does under Node.js)."""
    dates, actions = cases("dates")["cases"], cases("actions")["actions"]
    page = open_page().page
    result = page.evaluate("""async ([values, statuses]) => {
      const m = await import('./model.js');
      return {dates: values.map(m.parseDate),
              actions: Object.fromEntries(statuses.map(
                (s) => [s, m.actionsFor({status: s, repeat: {days: 1}})])),
              utc: [m.utcInput('2030-01-02T03:04'), m.utcInput('2030-01-02T03:04:05'),
                    m.utcInput(''), m.utcInput('2030-02-30T00:00')]};
    }""", [[c["value"] for c in dates], list(actions)])
    assert result["dates"] == [c["ms"] for c in dates]
    assert result["actions"] == actions
    assert result["utc"] == ["2030-01-02T03:04:00Z", "2030-01-02T03:04:05Z", None, None]


def test_the_badge_says_connecting_until_the_first_connection_then_reconnecting(store,
                                                                                 open_page,
                                                                                 db_name):
    store.put(task_doc("first"))
    # The tasks database's info never answers: the page cannot connect yet.
    info = re.compile(rf"/{db_name}$")
    watched = open_page(before=lambda page: page.route(info, lambda route: None),
                        wait_live=False)
    page = watched.page
    page.wait_for_timeout(1500)  # the page has drawn its state more than once meanwhile
    expect(page.locator("#live")).to_have_text("connecting…")
    page.unroute(info)
    page.reload()
    expect(page.locator("#live")).to_have_text("live")
    # A loss after the first connection: the tasks feed answers a change, then fails.
    page.route(re.compile(rf"/{db_name}/_changes\?"), lambda route: route.abort())
    store.put(task_doc("second"))
    expect(page.locator("#live")).to_have_text("reconnecting…", timeout=15_000)
    expect(row(page, "second")).to_have_count(1)


def test_at_1280_px_the_tasks_table_fits_and_its_actions_show(store, open_page):
    # the widest cells there are: a long id, a job name, a long error, every action
    store.put(task_doc("invoice-2027-01-monthly-billing-run-for-customer-1234567890",
                       status="error", job="generate_monthly_billing_report",
                       after={"error": "job failed: ConnectError: the billing service at "
                              "https://billing.example.com/api/v2 refused the connection "
                              "after 3 attempts"}))
    store.put(task_doc("waiting-one", job="send_reminder_emails_to_customers"))
    watched = open_page(width=1280, height=900)
    page = watched.page
    expect(page.locator("#tasks-body tr")).to_have_count(2)
    scroll = page.evaluate("""() => {
        const box = document.querySelector('#tasks .scroll');
        return {client: box.clientWidth, scroll: box.scrollWidth,
                page: document.documentElement.scrollWidth, view: window.innerWidth};
    }""")
    assert scroll["scroll"] <= scroll["client"], scroll  # no horizontal scrolling in its box
    assert scroll["page"] <= scroll["view"], scroll  # nor of the page
    for docid in ("invoice-2027-01-monthly-billing-run-for-customer-1234567890",
                  "waiting-one"):
        button = row(page, docid).get_by_role("button", name="Cancel")
        if docid == "waiting-one":
            expect(button).to_be_visible()
        if button.count():
            box = button.bounding_box()
            assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= 1280, box
    error_row = row(page, "invoice-2027-01-monthly-billing-run-for-customer-1234567890")
    last = error_row.locator("button").last.bounding_box()
    assert last["x"] + last["width"] <= 1280, last
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#tasks").screenshot(path=str(SCREENSHOTS / "tasks-1280-long-cells.png"))
    assert watched.errors == []


def test_caps_in_use_and_skipped_runs_show_and_a_calendar_is_no_task(store, open_page):
    workers = f"{store.db}_workers"
    store.put(worker_doc("billing", "host-a", 101), db=workers)
    for n, task in enumerate(("r1", "r2")):
        store.put({"_id": f"slot:reports#{n}", "type": "slot", "key": "reports",
                   "holder": "billing@host-a:101:abc", "task": task}, db=workers)
    store.put({"_id": "slot:mail#0", "type": "slot", "key": "mail", "holder": None,
               "task": None}, db=workers)
    store.put({"_id": "calendar:holidays-fr", "dates": ["2026-12-25"]})
    store.put(task_doc("daily", repeat={"days": 1, "exclude": {"calendar": "holidays-fr"}}))
    store.put(run_doc("daily", 1, outcome="skipped",
                      error="skipped: 2026-12-25 is excluded (calendar holidays-fr)"),
              db=f"{store.db}_runs")
    page = open_page().page
    expect(page.locator("#caps")).to_have_text("Caps in use: mail 0/1, reports 2/2")
    expect(page.locator('#caps .cap[data-key="reports"]')).to_have_attribute("title", "r1, r2")
    expect(page.locator("#tasks-body tr")).to_have_count(1)  # the calendar is not a task
    expect(row(page, "daily")).to_be_visible()
    expect(page.locator("#runs-body tr.outcome-skipped")).to_contain_text("skipped")
    # a slot freed: the feed of the workers database redraws the caps
    store.put({**store.get("slot:reports#1", db=workers), "holder": None, "task": None},
              db=workers)
    expect(page.locator("#caps")).to_have_text("Caps in use: mail 0/1, reports 1/2")


def test_a_site_says_how_its_replications_with_the_centre_are_doing(store, open_page, couch_url,
                                                                   server_kind):
    """Issue 25 item 7: the Workers view's line of GET /_after/replication, each worker name
    this database replicates with a centre (here another database of the same server), its
    roles and their states; no line on pouchdb-server, which runs no replications."""
    store.put(worker_doc("shop", "host-a", 101), db=f"{store.db}_workers")
    if server_kind == "pouchdb":
        watched = open_page()
        expect(watched.page.locator("#workers-body tr")).to_contain_text("shop")
        expect(watched.page.locator("#replication")).to_be_hidden()
        assert watched.errors == []
        return
    with replicating(couch_url, store.db, "shop") as site:
        deadline = time.monotonic() + 30  # CouchDB starts each within a few seconds
        while {r["state"] for r in site.replication("shop")} != {"running"}:
            assert time.monotonic() < deadline, site.replication("shop")
            time.sleep(0.3)
        watched = open_page()
        line = watched.page.locator('#replication .replica[data-name="shop"]')
        expect(line).to_contain_text("shop tasks-pull running, tasks-push running")
        expect(line.locator('.role[data-state="running"]')).to_have_count(5)
        expect(watched.page.locator("#replication")).to_contain_text(
            "Replicated with the centre: shop")
        assert watched.errors == []


def test_a_task_whose_runs_are_isolated_says_so_beside_its_job(store, open_page):
    store.put(task_doc("in-thread", job="report"))
    store.put(task_doc("asked", job="report", isolation="process"))
    store.put(task_doc("marked", job="report",
                       after={"isolated": "2026-12-01T09:00:00.000Z", "runs": 1}))
    page = open_page().page
    expect(page.locator("#tasks-body tr")).to_have_count(3)
    expect(row(page, "asked").locator("td.job")).to_have_text("report · process")
    expect(row(page, "marked").locator("td.job")).to_have_text("report · process")
    expect(row(page, "in-thread").locator("td.job")).to_have_text("report")
    expect(row(page, "asked").locator(".isolation")).to_have_attribute(
        "title", "isolation: process (each run in a child process)")
    expect(row(page, "marked").locator(".isolation")).to_have_attribute(
        "title", "each run in a child process since 2026-12-01T09:00:00.000Z: a run was "
                 "interrupted by the death of its process")


def test_a_rate_limited_or_debounced_task_says_so_beside_its_job(store, open_page):
    """Issue 25, item 5: the rate badge (the whole limit in its title) and the debounce
    badge; none for a task with neither, nor for a rate the rules refuse."""
    store.put(task_doc("limited", job="send_mail", rate={"key": "mail", "limit": 3,
                                                         "per": 2}))
    store.put(task_doc("digest", job="report", debounce=30))
    store.put(task_doc("both", job="report", rate={"key": "api", "limit": 100, "per": 3600},
                       debounce=2.5))
    store.put(task_doc("plain", job="report"))
    page = open_page().page
    expect(page.locator("#tasks-body tr")).to_have_count(4)
    expect(row(page, "limited").locator("td.job")).to_have_text("send_mail · rate 3/2s")
    expect(row(page, "limited").locator(".rate")).to_have_attribute(
        "title", "rate: at most 3 begin in any 2s with key mail")
    expect(row(page, "limited").locator(".debounce")).to_have_count(0)
    expect(row(page, "digest").locator("td.job")).to_have_text("report · debounce 30s")
    expect(row(page, "digest").locator(".debounce")).to_have_attribute(
        "title", "debounce: runs once 30s went by with no new version")
    expect(row(page, "digest").locator(".rate")).to_have_count(0)
    expect(row(page, "both").locator("td.job")).to_have_text(
        "report · rate 100/3600s · debounce 2.5s")
    expect(row(page, "plain").locator("td.job")).to_have_text("report")


def test_a_repeating_task_says_its_rule_and_its_dst_policy_under_its_job(store, open_page):
    store.put(task_doc("ny-nights", job="report", repeat={
        "cron": "30 2 * * *", "tz": "America/New_York", "dst": {"gap": "skip", "fold": "both"}}))
    store.put(task_doc("weekly", job="report", repeat={"days": 7, "limit": 3}))
    store.put(task_doc("once", job="report"))
    page = open_page().page
    expect(page.locator("#tasks-body tr")).to_have_count(3)
    expect(row(page, "ny-nights").locator(".repeat")).to_have_text(
        "cron 30 2 * * * (America/New_York), dst gap skip, fold both")
    expect(row(page, "weekly").locator(".repeat")).to_have_text("every 7 days, 3 runs at most")
    expect(row(page, "once").locator(".repeat")).to_have_count(0)


def test_a_repeating_task_says_its_catch_up_policy(store, open_page):
    """Issue 25: the policy after the rule, the whole of it in the title."""
    store.put(task_doc("hourly-all", job="report", repeat={"hours": 1},
                       catchup={"policy": "all", "window": 7200, "max": 24}))
    store.put(task_doc("hourly", job="report", repeat={"hours": 1}))
    page = open_page().page
    expect(page.locator("#tasks-body tr")).to_have_count(2)
    caught = row(page, "hourly-all").locator(".repeat")
    expect(caught).to_have_text("every 1 hour · catch-up all")
    expect(caught).to_have_attribute(
        "title", "every 1 hour; catch-up all: each missed occurrence in turn, 24 at most, "
                 "within 7200s")
    expect(row(page, "hourly").locator(".repeat")).to_have_text("every 1 hour")


def test_the_audit_view_says_what_should_have_run_and_what_did(store, open_page):
    store.put({"_id": "hourly", "worker": "billing", "job": {"name": "hello"},
               "status": "waiting", "date": "2026-01-01T04:00:00.000Z", "repeat": {"hours": 1},
               "after": {"anchor": "2026-01-01T00:00:00.000Z"}})
    runs = f"{store.db}_runs"
    for hour, late, suffix in ((0, "00.200", "a"), (1, "00.100", "a"), (1, "00.400", "b"),
                               (2, "05:00.000", "a")):
        store.put({"_id": f"hourly-{hour}-{suffix}", "type": "run", "task": "hourly",
                   "worker": "billing", "attempt": 1, "number": hour, "outcome": "done",
                   "scheduled": f"2026-01-01T0{hour}:00:00.000Z",
                   "occurrence_date": f"2026-01-01T0{hour}:00:00.000Z",
                   "started": f"2026-01-01T0{hour}:{late if ':' in late else '00:' + late}Z"},
                  db=runs)
    watched = open_page()
    page = watched.page
    expect(page.locator("#audit-body")).to_contain_text("Pick a window and press Audit.")
    page.fill("#audit-from", "2026-01-01T00:00:00")
    page.fill("#audit-to", "2026-01-01T03:00:00")
    page.click("#audit-run")
    rows = page.locator("#audit-body tr.audit-row")
    expect(rows).to_have_count(3)  # on time left out
    expect(rows.nth(0)).to_contain_text("2026-01-01 01:00:00")
    expect(rows.nth(0).locator(".badge")).to_have_text("twice")
    expect(rows.nth(0)).to_contain_text("ran 2 runs of attempt 1")
    expect(rows.nth(1).locator(".badge")).to_have_text("late")
    expect(rows.nth(1)).to_contain_text("5m 0s")
    expect(rows.nth(2).locator(".badge")).to_have_text("never")
    expect(page.locator("#audit-count")).to_have_text("4 occurrences of 1 task")
    expect(page.locator("#audit-summary .verdict-on_time")).to_contain_text("on time1")
    expect(page.locator("#audit-summary .verdict-twice")).to_contain_text("ran twice1")
    page.check("#audit-all")
    expect(rows).to_have_count(4)
    expect(rows.nth(0).locator(".badge")).to_have_text("on_time")
    # a bad window: the page says why
    page.fill("#audit-from", "2026-01-02T00:00:00")
    page.click("#audit-run")
    expect(page.locator("#message-text")).to_contain_text(
        "to: 2026-01-01T03:00:00.000Z is before from (2026-01-02T00:00:00.000Z)")
    expect(page.locator("#audit-body")).to_contain_text("Could not audit")
    # the task's name shows it in the tasks table
    page.fill("#audit-from", "2026-01-01T00:00:00")
    page.click("#audit-run")
    rows.nth(0).locator("button.link").click()
    expect(page.locator("#search")).to_have_value("hourly")
    assert watched.errors == [] or all("400" in e for e in watched.errors)
