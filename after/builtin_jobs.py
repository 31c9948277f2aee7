"""The built-in jobs ``http`` and ``webhook``.

Both return the response as a dict the worker records in the run record, and raise
``HttpJobFailed`` (carrying that same dict, or None when there was no response) when the
call fails, so that the task's ``retry`` applies. Credentials never appear in what they
return or raise: URLs, headers and JSON bodies go through ``after.rules.redact``.
"""

from __future__ import annotations

import base64
import json as _json
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx

from after.couch import tls
from after.rules.jobnames import JobError
from after.rules.redact import RedactingFilter, redact, redact_headers, redact_text, redact_url

#: The header that carries the occurrence id, so that an endpoint sees each occurrence once.
IDEMPOTENCY_KEY = "Idempotency-Key"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
#: Bytes of a response body kept in the result.
BODY_LIMIT = 64 * 1024


class HttpJobFailed(Exception):
    """The call failed: unexpected status (``response`` is the result dict), or no
    response at all (network error, timeout: ``response`` is None)."""

    def __init__(self, message: str, response: dict | None = None):
        super().__init__(message)
        self.response = response


class HttpArgumentError(JobError, ValueError):
    """The task's arguments for ``http``/``webhook`` are wrong: retrying will not help."""


def _check_url(url: Any) -> str:
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        shown = redact_url(url) if isinstance(url, str) else type(url).__name__
        raise HttpArgumentError(f"http: url must be an http:// or https:// URL, got {shown!r}")
    return url


def _check_expected(expected: Any) -> tuple[int, ...] | None:
    if expected is None:
        return None
    values = [expected] if not isinstance(expected, (list, tuple)) else list(expected)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599
                             for v in values):
        raise HttpArgumentError(
            f"http: expected_status must be a status code or a list of them, got {expected!r}")
    return tuple(values)


def _read_body(response: httpx.Response, deadline: float) -> tuple[bytes, bool]:
    """At most BODY_LIMIT bytes of the body, and whether there was more.

    httpx's timeout bounds each read; ``deadline`` bounds the whole call, so a server that
    trickles bytes cannot hold the job forever.
    """
    data = bytearray()
    for chunk in response.iter_bytes():
        if time.perf_counter() > deadline:
            raise httpx.ReadTimeout("deadline passed while reading the body")
        data += chunk
        if len(data) > BODY_LIMIT:
            return bytes(data[:BODY_LIMIT]), True
    return bytes(data), False


def _decode_body(response: httpx.Response, data: bytes, truncated: bool) -> Any:
    try:
        text = data.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:  # an unknown charset in Content-Type
        text = data.decode("utf-8", errors="replace")
    if not truncated and "json" in response.headers.get("content-type", "").lower() and text:
        try:
            return redact(_json.loads(text))
        except ValueError:
            pass
    return redact_text(text)


# httpx logs each request's URL at INFO: never let it log a credential. httpcore's DEBUG
# traces print raw headers (Authorization, cookies): they are never wanted in our logs.
logging.getLogger("httpx").addFilter(RedactingFilter())
logging.getLogger("httpcore").setLevel(logging.INFO)

def http(task, url, method="GET", headers=None, body=None, json=None, expected_status=None,
         timeout=30, follow_redirects=False):
    """Call an HTTP endpoint; fail unless the status is expected (default: any 2xx).

    Sends the run's occurrence id (``task.occurrence``) as ``Idempotency-Key`` unless
    ``headers`` names that header (any case): its value wins, and ``null`` sends none."""
    url = _check_url(url)
    method_name = method.upper() if isinstance(method, str) else method
    if method_name not in METHODS:
        raise HttpArgumentError(f"http: method must be one of {', '.join(METHODS)}, "
                                f"got {method!r}")
    if body is not None and json is not None:
        raise HttpArgumentError("http: give body or json, not both")
    if body is not None and not isinstance(body, (str, bytes)):
        raise HttpArgumentError(f"http: body must be a string (use json for a JSON body), "
                                f"got {type(body).__name__}")
    if headers is not None and not isinstance(headers, Mapping):
        raise HttpArgumentError(f"http: headers must be an object, got {type(headers).__name__}")
    expected = _check_expected(expected_status)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise HttpArgumentError(f"http: timeout must be a positive number of seconds, "
                                f"got {timeout!r}")
    shown_url = redact_url(url)
    send_headers = {str(k): str(v) for k, v in (headers or {}).items() if v is not None}
    occurrence = getattr(task, "occurrence", None)
    if occurrence and not any(str(k).lower() == IDEMPOTENCY_KEY.lower() for k in headers or {}):
        send_headers[IDEMPOTENCY_KEY] = str(occurrence)
    started = time.perf_counter()
    try:
        with httpx.Client(timeout=timeout, follow_redirects=bool(follow_redirects),
                          verify=tls.context()) as client:
            try:
                request = client.build_request(method_name, url, headers=send_headers,
                                               content=body, json=json)
            except (TypeError, ValueError) as exc:  # e.g. a non-ASCII header, a set in json
                raise HttpArgumentError(f"http: cannot build the request to {shown_url}: "
                                        f"{type(exc).__name__}") from None
            response = client.send(request, stream=True)
            try:
                data, truncated = _read_body(response, started + timeout)
            finally:
                response.close()
    except httpx.TimeoutException:
        raise HttpJobFailed(f"timeout after {timeout:g}s calling {shown_url}") from None
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        detail = redact_text(str(exc)) or type(exc).__name__
        raise HttpJobFailed(f"{type(exc).__name__} calling {method_name} {shown_url}: "
                            f"{detail}") from None
    result = {
        "status": response.status_code,
        "headers": redact_headers(response.headers),
        "body": _decode_body(response, data, truncated),
        "truncated": truncated,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "method": method_name,
        "url": redact_url(str(response.url)),
    }
    ok = (response.status_code in expected) if expected else response.is_success
    if not ok:
        wanted = "2xx" if expected is None else " or ".join(map(str, expected))
        raise HttpJobFailed(f"HTTP {response.status_code} from {method_name} {result['url']} "
                            f"(expected {wanted})", response=result)
    return result


def webhook(task, url, data=None, headers=None, expected_status=None, timeout=30):
    """POST data as JSON to url, with basic auth from headers user/pass (After's webhook)."""
    if headers is not None and not isinstance(headers, Mapping):
        raise HttpArgumentError(f"webhook: headers must be an object, "
                                f"got {type(headers).__name__}")
    send = dict(headers or {})
    user, password = send.pop("user", None), send.pop("pass", None)
    if user is not None or password is not None:
        pair = f"{'' if user is None else user}:{'' if password is None else password}"
        send["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return http(task, url, method="POST", headers=send, json=data,
                expected_status=expected_status, timeout=timeout)


#: The built-in jobs, by name; :mod:`after.jobs` registers them (this module imports nothing
#: of it).
JOBS = {"http": http, "webhook": webhook}
