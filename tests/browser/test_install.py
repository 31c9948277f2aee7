"""Installing the dashboard's design document, its URL, and `after dashboard` (no browser)."""

from __future__ import annotations

import shutil

from click.testing import CliRunner

from after import dashboard
from after.config import Config


def test_install_is_idempotent(store, tmp_path):
    assert dashboard.install(store) is True
    first = store.get(dashboard.DESIGN_ID)
    assert dashboard.install(store) is False
    assert store.get(dashboard.DESIGN_ID)["_rev"] == first["_rev"]
    assert dashboard.is_installed(store)
    assert set(first["_attachments"]) >= {"index.html", "app.js", "style.css"}

    changed = tmp_path / "static"
    shutil.copytree(dashboard.STATIC, changed)
    (changed / "style.css").write_text("body { color: red; }\n")
    assert dashboard.install(store, changed) is True
    assert store.get(dashboard.DESIGN_ID)["_rev"] != first["_rev"]
    assert dashboard.install(store, changed) is False


def test_the_server_serves_the_files_with_their_types(store):
    dashboard.install(store)
    base = f"{store.db}/_design/dashboard"
    index = store.client.get(f"{base}/index.html")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in index.text
    script = store.client.get(f"{base}/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.text == (dashboard.STATIC / "app.js").read_text()


def test_the_workers_design_document_is_left_alone(store):
    before = store.get("_design/after")
    dashboard.install(store)
    assert store.get("_design/after") == before


def test_url_masks_the_password():
    cfg = Config(url="http://admin:s3cret@couch.example:5984", db="my tasks")
    assert dashboard.url(cfg) == ("http://admin:***@couch.example:5984/my%20tasks/"
                                  "_design/dashboard/index.html")
    assert dashboard.browser_url(cfg) == ("http://couch.example:5984/my%20tasks/"
                                          "_design/dashboard/index.html")


def test_after_dashboard_installs_and_prints_the_url(couch_url, db_name, monkeypatch):
    from after import cli_dashboard  # registers the command on after.cli.main
    from after.cli import main
    from after.store import Store

    opened = []
    monkeypatch.setattr(cli_dashboard, "open_browser", opened.append)
    env = {"AFTER_COUCHDB_URL": couch_url, "AFTER_DB": db_name, "AFTER_CONFIG": ""}
    try:
        result = CliRunner().invoke(main, ["dashboard", "--no-open"], env=env)
        assert result.exit_code == 0, result.output
        address = f"{couch_url}/{db_name}/_design/dashboard/index.html"
        assert result.output.strip().endswith(address)
        assert "installed the dashboard" in result.output
        assert opened == []

        again = CliRunner().invoke(main, ["dashboard"], env=env)
        assert again.exit_code == 0, again.output
        assert "installed" not in again.output
        assert opened == [address]
    finally:
        with Store(couch_url, db_name) as store:
            for db in (db_name, f"{db_name}_runs", f"{db_name}_workers"):
                if store.database_exists(db):
                    store.delete_database(db)


def test_open_browser_never_fails_without_one(monkeypatch):
    from after import cli_dashboard

    monkeypatch.delenv("BROWSER", raising=False)

    def none():
        raise cli_dashboard.webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(cli_dashboard.webbrowser, "get", none)
    assert cli_dashboard.open_browser("http://127.0.0.1:5984/x") is False
