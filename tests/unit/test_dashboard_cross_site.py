"""Which requests the dashboard's server takes as its own page's (issue 24 item 9): pure,
with generated headers from hostile pages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from after.dashboard.server import cross_site

HOST = "127.0.0.1:8765"
OURS = dict(origin=f"http://{HOST}", fetch_site="same-origin", content_type="application/json")


@pytest.mark.parametrize(("method", "headers", "refused"), [
    ("POST", OURS, False),
    ("POST", {**OURS, "content_type": "application/json; charset=UTF-8"}, False),
    ("POST", {**OURS, "origin": "HTTP://127.0.0.1:8765"}, False),  # case does not matter
    ("POST", {"origin": None, "fetch_site": None, "content_type": "application/json"},
     False),  # no browser: curl, a script with the token
    ("GET", {"origin": "http://evil", "fetch_site": "cross-site", "content_type": None},
     False),  # reads change nothing, and a cross-site page cannot read the answer
    ("HEAD", {"origin": None, "fetch_site": "cross-site", "content_type": None}, False),
    ("POST", {**OURS, "fetch_site": "same-site"}, True),  # another port of 127.0.0.1
    ("POST", {**OURS, "fetch_site": "cross-site"}, True),
    ("POST", {**OURS, "fetch_site": "none"}, True),
    ("POST", {**OURS, "origin": "http://127.0.0.1:8766"}, True),
    ("POST", {**OURS, "origin": "http://localhost:8765"}, True),  # another origin
    ("POST", {**OURS, "origin": "https://127.0.0.1:8765"}, True),
    ("POST", {**OURS, "origin": "null"}, True),  # a sandboxed frame, a file
    ("POST", {**OURS, "content_type": "text/plain"}, True),  # a form
    ("POST", {**OURS, "content_type": "application/x-www-form-urlencoded"}, True),
    ("POST", {**OURS, "content_type": "multipart/form-data; boundary=x"}, True),
    ("POST", {**OURS, "content_type": None}, True),
    ("POST", {**OURS, "content_type": "text/plain; a=application/json"}, True),
    ("PUT", {**OURS, "origin": "http://evil"}, True),
    ("DELETE", {**OURS, "content_type": "text/plain"}, True),
])
def test_only_the_pages_own_requests_may_change_something(method, headers, refused):
    reason = cross_site(method, HOST, **headers)
    assert (reason is not None) == refused
    if refused:
        assert "cross-site" in reason


@given(st.text(max_size=200), st.sampled_from(["POST", "PUT", "DELETE", "PATCH"]))
def test_any_other_origin_is_refused(origin, method):
    reason = cross_site(method, HOST, origin, None, "application/json")
    assert (reason is None) == (origin.strip().lower() == f"http://{HOST}")
    assert reason is None or len(reason) < 200  # what it quotes of the header is bounded


@given(st.text(max_size=80))
def test_any_body_not_declared_json_is_refused(content_type):
    reason = cross_site("POST", HOST, None, "same-origin", content_type)
    media = content_type.split(";", 1)[0].strip().lower()
    assert (reason is None) == (media == "application/json")
