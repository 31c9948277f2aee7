"""Issue 24 item 9: a page of another origin on 127.0.0.1 (another port: the same *site*, so
the ``SameSite=Strict`` cookie goes with its requests) cannot act through the dashboard,
in headless Chromium against the test's real server: its text/plain form and its no-cors
fetches are refused, while the dashboard's own page still acts."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect

from .factories import task_doc

ATTACK = """<!doctype html><title>cute cats</title>
<form id="f" method="POST" enctype="text/plain" action="{base}/_after/tasks/victim/cancel">
<input name='{{"x":"' value='"}}'></form>
<script>
const post = (action, type) => fetch('{base}/_after/tasks/victim/' + action, {{
  method: 'POST', mode: 'no-cors', credentials: 'include',
  headers: type ? {{'Content-Type': type}} : {{}}, body: '{{}}'}});
Promise.allSettled([post('run', 'text/plain'), post('pause', ''),
                    post('backfill', 'application/x-www-form-urlencoded')])
  .then(() => {{ document.title = 'sent'; document.getElementById('f').submit(); }});
</script>"""


@pytest.fixture
def attacker(dashboard_server):
    """A page served from another port of 127.0.0.1, aimed at the dashboard."""
    page = ATTACK.format(base=dashboard_server.base_url).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_on_another_port_cannot_act_through_the_dashboard(store, open_page,
                                                                 dashboard_server, attacker):
    store.put(task_doc("victim", repeat={"hours": 1}))
    dashboard = open_page().page  # signed in: the browser holds the dashboard's cookie
    page = dashboard.context.new_page()
    page.goto(attacker)
    # the form's answer is the dashboard's refusal, in place of the attacker's page
    page.wait_for_url(f"{dashboard_server.base_url}/_after/tasks/victim/cancel")
    expect(page.locator("body")).to_contain_text("cross-site")
    doc = store.get("victim")
    assert doc["status"] == "waiting"  # not canceled, not paused
    assert store.prefixed("victim:") == []  # no extra run, no backfill
    # the dashboard's own page still acts
    dashboard.locator('#tasks-body tr[data-id="victim"]').get_by_role(
        "button", name="Cancel").click()
    expect(dashboard.locator("#message")).to_contain_text("victim")
    assert store.get("victim")["status"] == "canceled"
