"""HTTP jobs, retries, timeouts, run history, secrets and metrics, against a local endpoint."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from after.couch.server import free_port
from after.metrics import serve_metrics


class Endpoint:
    """A local HTTP server whose paths answer as the tests script them."""

    def __init__(self):
        self.calls: list[tuple[str, str, dict, bytes]] = []
        self.script: dict[str, list[int]] = {}
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                endpoint.calls.append((self.command, self.path, dict(self.headers), body))
                if self.path.startswith("/slow"):
                    time.sleep(2)  # the subject: slower than the job's timeout
                statuses = endpoint.script.get(self.path.split("?")[0], [200])
                status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
                payload = json.dumps({"path": self.path.split("?")[0], "status": status}).encode()
                self.send_response(status)
                if status != 204:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Set-Cookie", "session=topsecretcookie")
                self.end_headers()
                if status != 204:
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = handle_any

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def calls_to(self, path: str) -> int:
        return sum(1 for c in self.calls if c[1].split("?")[0] == path)

    def close(self):
        self.server.shutdown()


@pytest.fixture
def endpoint():
    e = Endpoint()
    yield e
    e.close()


def test_an_expected_204_that_first_gets_500_succeeds_on_the_retry(harness, endpoint):
    endpoint.script["/flaky"] = [500, 204]
    harness.start()
    harness.put("flaky", job="http",
                arguments={"url": f"{endpoint.url}/flaky", "method": "POST",
                           "json": {"hello": "world"}, "expected_status": 204},
                retry={"limit": 2, "delay": 0.2})
    doc = harness.wait_status("flaky", "done")
    runs = harness.wait(lambda: len(r := harness.runs("flaky")) == 2 and r, what="2 runs")
    assert [r["outcome"] for r in runs] == ["error", "done"]
    assert [r["response"]["status"] for r in runs] == [500, 204]
    assert [r["attempt"] for r in runs] == [1, 2]
    assert "HTTP 500" in runs[0]["error"]["message"]
    assert doc["after"]["last_run"]["result"]["status"] == 204
    assert (doc["after"]["runs"], doc["after"]["successes"], doc["after"]["failures"]) == \
        (2, 1, 1)
    assert endpoint.calls_to("/flaky") == 2
    assert json.loads(endpoint.calls[0][3]) == {"hello": "world"}


def test_an_endpoint_that_always_fails_ends_error_after_one_plus_limit_calls(harness,
                                                                             endpoint):
    endpoint.script["/down"] = [503]
    worker = harness.start()
    harness.put("down", job="http", arguments={"url": f"{endpoint.url}/down"},
                retry={"limit": 3, "delay": 0.1, "backoff": "exponential"})
    doc = harness.wait_status("down", "error", timeout=20)
    harness.settled(worker, "down")  # nothing can call the endpoint again now
    assert endpoint.calls_to("/down") == 4
    assert doc["after"]["failures"] == 4
    assert "HTTP 503" in doc["after"]["error"]


def test_a_slow_endpoint_times_out(harness, endpoint):
    harness.start()
    harness.put("slow", job="http", arguments={"url": f"{endpoint.url}/slow", "timeout": 0.5})
    doc = harness.wait_status("slow", "error")
    assert doc["after"]["last_run"]["outcome"] == "error"
    assert doc["after"]["error"].startswith("HttpJobFailed: timeout after 0.5s calling")


def test_no_secret_reaches_a_run_record_the_task_status_or_a_log(harness, endpoint, caplog):
    endpoint.script["/fail"] = [401]
    caplog.set_level(logging.DEBUG)
    harness.start()
    secret_url = f"http://bob:hunter2@127.0.0.1:{endpoint.server.server_port}/fail?token=tok99"
    harness.put("secret", job="http",
                arguments={"url": secret_url,
                           "headers": {"Authorization": "Bearer abc123xyz",
                                       "X-Api-Key": "key777"},
                           "json": {"password": "pw555"}})
    harness.put("secret-ok", job="webhook",
                arguments={"url": f"{endpoint.url}/ok?api_key=key888",
                           "data": {"x": 1}, "headers": {"user": "ann", "pass": "pass444"}})
    doc = harness.wait_status("secret", "error")
    ok = harness.wait_status("secret-ok", "done")
    runs = harness.wait(lambda: len(r := harness.runs("secret") + harness.runs("secret-ok"))
                        == 2 and r, what="the run records")
    seen = json.dumps(runs) + json.dumps(doc["after"]) + json.dumps(ok["after"]) + caplog.text
    for secret in ("hunter2", "tok99", "abc123xyz", "key777", "pw555", "key888", "pass444",
                   "topsecretcookie"):
        assert secret not in seen, seen[max(0, seen.find(secret) - 300):seen.find(secret) + 50]
    assert runs[0]["response"]["status"] == 401 or runs[1]["response"]["status"] == 401
    # the endpoint did get the credentials: redaction is only in what is recorded
    [headers] = [call[2] for call in endpoint.calls if call[1].startswith("/fail")]
    assert headers["X-Api-Key"] == "key777"


def test_run_history_is_pruned_to_keep_runs(harness, store):
    """A task with nine runs behind it runs once more: its tenth run prunes the oldest."""
    runs_db = f"{store.db}_runs"
    store.bulk_docs([{"_id": f"old-{n}", "task": "many", "number": n, "outcome": "done",
                      "started": f"2026-01-01T00:00:0{n}Z"} for n in range(1, 10)], db=runs_db)
    harness.start(keep_runs=5)
    harness.put("many", job="noop", after={"runs": 9})
    harness.wait_status("many", "done", timeout=30)
    runs = harness.wait(lambda: len(r := harness.runs("many")) <= 5 and r, what="pruning")
    numbers = [r["number"] for r in runs]
    assert numbers == [6, 7, 8, 9, 10]  # pruned at the 10th run down to the newest 5


def test_metrics_and_health_answer_with_counters_moving(harness):
    worker = harness.start()
    server = serve_metrics(worker, 0)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        harness.wait(lambda: httpx.get(f"{base}/health").status_code == 200, what="health")
        health = httpx.get(f"{base}/health").json()
        assert health["status"] == "ok" and health["feed"] == "connected"
        harness.put("m1", job="noop")
        harness.put("m2", job="noop")
        harness.put("m3", job="fail")
        for docid, status in (("m1", "done"), ("m2", "done"), ("m3", "error")):
            harness.wait_status(docid, status)
        text = harness.wait(
            lambda: 'after_runs_total{job="noop",outcome="done",worker="w"} 2.0'
            in (t := httpx.get(f"{base}/metrics").text) and t, what="the counters")
        assert 'after_runs_total{job="fail",outcome="error",worker="w"} 1.0' in text
        assert 'after_lateness_seconds_count{worker="w"} 3.0' in text
        assert 'after_feed_connected{worker="w"} 1.0' in text
        assert 'after_tasks_held{worker="w"} 0.0' in text
    finally:
        server.shutdown()
