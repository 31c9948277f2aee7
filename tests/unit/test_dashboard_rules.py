"""What the dashboard's proxy lets through to CouchDB (a pure rule, no server)."""

from __future__ import annotations

import pytest

from after.dashboard.server import refusal

DBS = {"tasks", "tasks_runs", "tasks_workers"}


@pytest.mark.parametrize("method, path", [
    ("GET", "/tasks"),
    ("GET", "/tasks/"),
    ("HEAD", "/tasks_runs"),
    ("GET", "/tasks/_all_docs"),
    ("POST", "/tasks/_all_docs"),
    ("POST", "/tasks/_find"),
    ("GET", "/tasks_workers/_changes"),
    ("POST", "/tasks/_changes"),
    ("GET", "/tasks/_design/dashboard/_view/status"),
    ("GET", "/tasks/_design/dashboard/_view/upcoming"),
    ("GET", "/tasks/report-1"),
    ("GET", "/tasks/a%2Fb%3Fc"),  # an id with a slash and a question mark, encoded
])
def test_what_the_page_uses_passes(method, path):
    assert refusal(method, path, DBS) is None


@pytest.mark.parametrize("method, path, why", [
    ("GET", "/_config", "only the dashboard's databases"),
    ("GET", "/_users/_all_docs", "only the dashboard's databases"),
    ("POST", "/_session", "only the dashboard's databases"),
    ("GET", "/_node/_local/_config", "only the dashboard's databases"),
    ("GET", "/other/_all_docs", "only the dashboard's databases"),
    ("GET", "/tasks_other", "only the dashboard's databases"),
    ("GET", "/", "only the dashboard's databases"),
    ("GET", "/tasks/../_config", "dot segments"),
    ("GET", "/tasks/%2e%2e/_config", "dot segments"),
    ("GET", "/tasks/./_all_docs", "dot segments"),
    ("DELETE", "/tasks", "DELETE is not allowed"),
    ("PUT", "/tasks", "PUT is not allowed"),
    ("DELETE", "/tasks/report-1", "DELETE is not allowed"),
    ("PUT", "/tasks/report-1", "PUT is not allowed"),  # the page writes through actions
    ("GET", "/tasks/_security", "not something the dashboard uses"),
    ("PUT", "/tasks/_security", "not something the dashboard uses"),
    ("PUT", "/tasks/%5Fsecurity", "not something the dashboard uses"),
    ("PUT", "/tasks/_design/after", "not something the dashboard uses"),
    ("PUT", "/tasks/_design%2Fafter", "not something the dashboard uses"),
    ("PUT", "/tasks/_design/dashboard", "not something the dashboard uses"),
    ("PUT", "/tasks/_local/x", "not something the dashboard uses"),
    ("POST", "/tasks/_bulk_docs", "not something the dashboard uses"),
    ("POST", "/tasks/_purge", "not something the dashboard uses"),
    ("POST", "/tasks/_compact", "not something the dashboard uses"),
    ("GET", "/tasks/_design/after/_view/due", "not something the dashboard uses"),
    ("POST", "/tasks", "POST is not allowed"),
    ("POST", "/tasks/_design/dashboard/_view/status", "POST is not allowed"),
    ("GET", "/tasks/report-1/attachment.txt", "not something the dashboard uses"),
    ("GET", "/tasks//x", "not something the dashboard uses"),
])
def test_everything_else_is_refused_with_a_reason(method, path, why):
    assert why in (refusal(method, path, DBS) or "")
