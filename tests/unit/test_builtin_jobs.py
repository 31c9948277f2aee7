"""The built-in http and webhook jobs, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from after.builtin_jobs import BODY_LIMIT, HttpArgumentError, HttpJobFailed, http, webhook
from after.jobs import JobError, JobRegistry, TaskContext, run_job

TASK = TaskContext({"_id": "t", "worker": "w", "job": {"name": "http"}},
                   datetime(2026, 12, 1, tzinfo=UTC), 1)


class Handler(BaseHTTPRequestHandler):
    """/status/N, /slow?s=N, /trickle, /json, /big, /echo (any method), /redirect."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", headers=None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append({
            "method": self.command, "path": url.path, "headers": dict(self.headers.items()),
            "body": body.decode(),
        })
        query = parse_qs(url.query)
        if url.path.startswith("/status/"):
            self._send(int(url.path.rsplit("/", 1)[1]), b"status body",
                       {"Content-Type": "text/plain", "Set-Cookie": "sid=secret-session"})
        elif url.path == "/slow":
            time.sleep(float(query["s"][0]))
            self._send(200, b"slow")
        elif url.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "40")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        elif url.path == "/json":
            self._send(200, json.dumps({"ok": True, "access_token": "tok-123",
                                        "next": "http://u:pw@x.io/"}).encode(),
                       {"Content-Type": "application/json; charset=utf-8"})
        elif url.path == "/big":
            self._send(200, b"a" * (BODY_LIMIT + 10), {"Content-Type": "application/json"})
        elif url.path == "/redirect":
            self._send(302, b"", {"Location": "/status/204"})
        else:
            self._send(200, body, {"Content-Type": "text/plain", "X-Method": self.command})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that gave up (timeout tests) breaks the pipe: expected


@pytest.fixture
def server():
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    host, port = httpd.server_address
    httpd.base = f"http://{host}:{port}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_builtins_are_registered(tmp_path):
    registry = JobRegistry(tmp_path)
    assert registry.resolve("http") is http
    assert registry.resolve("webhook") is webhook


def test_204_is_success_by_default(server):
    result = http(TASK, f"{server.base}/status/204")
    assert result["status"] == 204
    assert result["body"] == ""
    assert result["method"] == "GET"
    assert result["url"] == f"{server.base}/status/204"
    assert result["truncated"] is False
    assert result["headers"]["set-cookie"] == "***"
    assert isinstance(result["duration_ms"], float) and result["duration_ms"] > 0
    assert [r["method"] for r in server.requests] == ["GET"]


def test_500_fails_with_the_response(server):
    with pytest.raises(HttpJobFailed) as info:
        http(TASK, f"{server.base}/status/500")
    assert str(info.value) == f"HTTP 500 from GET {server.base}/status/500 (expected 2xx)"
    response = info.value.response
    assert response["status"] == 500
    assert response["body"] == "status body"
    assert response["headers"]["content-type"] == "text/plain"


def test_expected_status_int_and_list(server):
    assert http(TASK, f"{server.base}/status/500", expected_status=500)["status"] == 500
    assert http(TASK, f"{server.base}/status/404", expected_status=[404, 410])["status"] == 404
    with pytest.raises(HttpJobFailed) as info:
        http(TASK, f"{server.base}/status/200", expected_status=[201, 202])
    assert str(info.value) == (
        f"HTTP 200 from GET {server.base}/status/200 (expected 201 or 202)")
    assert info.value.response["status"] == 200


def test_timeout_on_a_slow_endpoint(server):
    started = time.monotonic()
    with pytest.raises(HttpJobFailed) as info:
        http(TASK, f"{server.base}/slow?s=2", timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert str(info.value) == f"timeout after 0.3s calling {server.base}/slow?s=2"
    assert info.value.response is None


def test_timeout_bounds_the_whole_call_not_each_read(server):
    started = time.monotonic()
    with pytest.raises(HttpJobFailed) as info:
        http(TASK, f"{server.base}/trickle", timeout=0.5)  # 40 bytes, one every 50 ms
    assert 0.4 < time.monotonic() - started < 1.5
    assert str(info.value) == f"timeout after 0.5s calling {server.base}/trickle"


def test_connection_refused(server):
    url = server.base.rsplit(":", 1)[0] + ":1/x"
    with pytest.raises(HttpJobFailed) as info:
        http(TASK, url)
    assert str(info.value).startswith(f"ConnectError calling GET {url}: ")
    assert info.value.response is None


def test_json_body_and_methods(server):
    result = http(TASK, f"{server.base}/echo", method="put", json={"a": [1, "é"]},
                  headers={"X-Trace": "abc"})
    assert result["status"] == 200
    assert result["method"] == "PUT"
    assert json.loads(result["body"]) == {"a": [1, "é"]}
    seen = server.requests[-1]
    assert seen["method"] == "PUT"
    assert seen["headers"]["Content-Type"] == "application/json"
    assert seen["headers"]["X-Trace"] == "abc"
    result = http(TASK, f"{server.base}/echo", method="POST", body="raw text")
    assert result["body"] == "raw text"
    result = http(TASK, f"{server.base}/echo", method="HEAD")
    assert (result["status"], result["body"], result["headers"]["x-method"]) == (200, "", "HEAD")


def test_json_response_is_decoded_and_redacted(server):
    result = http(TASK, f"{server.base}/json")
    assert result["body"] == {"ok": True, "access_token": "***", "next": "http://u:***@x.io/"}


def test_big_body_is_truncated_and_not_decoded(server):
    result = http(TASK, f"{server.base}/big")
    assert result["truncated"] is True
    assert result["body"] == "a" * BODY_LIMIT


def test_redirects_are_followed_only_when_asked(server):
    with pytest.raises(HttpJobFailed) as info:
        http(TASK, f"{server.base}/redirect")
    assert info.value.response["status"] == 302
    result = http(TASK, f"{server.base}/redirect", follow_redirects=True)
    assert (result["status"], result["url"]) == (204, f"{server.base}/status/204")


def test_secrets_are_redacted_in_results_and_messages(server):
    host = server.base.removeprefix("http://")
    secret_url = f"http://admin:hunter2@{host}/status/503?token=t0k&page=1"
    with pytest.raises(HttpJobFailed) as info:
        http(TASK, secret_url, headers={"X-Api-Key": "k-123"})
    message = str(info.value)
    assert message == (
        f"HTTP 503 from GET http://admin:***@{host}/status/503?token=***&page=1 (expected 2xx)")
    assert "hunter2" not in json.dumps(info.value.response)
    assert "t0k" not in json.dumps(info.value.response)
    assert info.value.response["url"] == f"http://admin:***@{host}/status/503?token=***&page=1"
    assert "k-123" not in message + json.dumps(info.value.response)
    # the server did receive the real credentials (userinfo is sent as basic auth)
    assert server.requests[-1]["headers"]["Authorization"] == "Basic " + base64.b64encode(
        b"admin:hunter2").decode()
    assert server.requests[-1]["headers"]["X-Api-Key"] == "k-123"
    with pytest.raises(HttpJobFailed) as info:
        http(TASK, f"http://admin:hunter2@{host}/slow?s=1&api_key=k", timeout=0.2)
    assert str(info.value) == f"timeout after 0.2s calling http://admin:***@{host}" \
                              "/slow?s=1&api_key=***"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"url": "ftp://x/"}, "http: url must be an http:// or https:// URL, got 'ftp://x/'"),
    ({"url": "file:///etc/passwd"}, "http: url must be an http:// or https:// URL, "
                                    "got 'file:///etc/passwd'"),
    ({"url": 3}, "http: url must be an http:// or https:// URL, got 'int'"),
    ({"url": "http://x/", "method": "TRACE"},
     "http: method must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, got 'TRACE'"),
    ({"url": "http://x/", "expected_status": "200"},
     "http: expected_status must be a status code or a list of them, got '200'"),
    ({"url": "http://x/", "expected_status": [200, 99]},
     "http: expected_status must be a status code or a list of them, got [200, 99]"),
    ({"url": "http://x/", "body": "a", "json": {}}, "http: give body or json, not both"),
    ({"url": "http://x/", "body": {"a": 1}},
     "http: body must be a string (use json for a JSON body), got dict"),
    ({"url": "http://x/", "timeout": 0}, "http: timeout must be a positive number of seconds, "
                                         "got 0"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(HttpArgumentError) as info:
        http(TASK, **kwargs)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError) and isinstance(info.value, JobError)


def test_webhook_posts_json_with_basic_auth(server):
    result = run_job(webhook, TASK, {
        "url": f"{server.base}/echo",
        "data": {"invoice": 1234, "items": ["a", "b"]},
        "headers": {"user": "ada", "pass": "s3cret", "X-Source": "after"},
    })
    assert result["status"] == 200
    assert result["method"] == "POST"
    seen = server.requests[-1]
    assert seen["method"] == "POST"
    assert json.loads(seen["body"]) == {"invoice": 1234, "items": ["a", "b"]}
    assert seen["headers"]["Authorization"] == "Basic " + base64.b64encode(
        b"ada:s3cret").decode()
    assert seen["headers"]["X-Source"] == "after"
    assert "user" not in seen["headers"] and "pass" not in seen["headers"]
    assert "s3cret" not in json.dumps(result)


def test_webhook_without_auth_or_data(server):
    result = webhook(TASK, f"{server.base}/echo")
    assert (result["status"], result["body"]) == (200, "")
    seen = server.requests[-1]
    assert "Authorization" not in seen["headers"]
    assert seen["body"] == ""


def test_webhook_failure_shape_is_the_same(server):
    with pytest.raises(HttpJobFailed) as info:
        webhook(TASK, f"{server.base}/status/502", data={"x": 1})
    assert str(info.value) == f"HTTP 502 from POST {server.base}/status/502 (expected 2xx)"
    assert info.value.response["status"] == 502


def test_the_occurrence_id_is_sent_as_the_idempotency_key(server):
    """Each occurrence's id goes as Idempotency-Key (the same for each attempt of it, so an
    endpoint that honours the header sees the occurrence once); a header the user set wins,
    in any case, and null turns it off."""
    key = "0b1c5a4e-2f0d-5b7e-9c1a-3d4e5f6a7b8c"
    task = TaskContext({"_id": "t", "worker": "w", "job": {"name": "http"}},
                       datetime(2026, 12, 1, tzinfo=UTC), 2, key)
    http(task, f"{server.base}/echo", method="POST", json={"a": 1})
    webhook(task, f"{server.base}/echo", data={"b": 2})
    http(task, f"{server.base}/echo", headers={"idempotency-key": "mine"})
    http(task, f"{server.base}/echo", headers={"Idempotency-Key": None})
    http(TASK, f"{server.base}/echo")  # a task without an occurrence id sends none
    sent = [{k.lower(): v for k, v in r["headers"].items()}.get("idempotency-key")
            for r in server.requests]
    assert sent == [key, key, "mine", None, None]
