"""Configuration: After's config.json, environment overrides, masked URLs."""

from __future__ import annotations

import json

import pytest

from after.config import ConfigError, credentials_out_of_argv, load, mask_url, split_urls


def write(tmp_path, **values):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    return path


def test_after_shape_builds_the_url_with_credentials(tmp_path):
    path = write(tmp_path, host="db.local", port=6984, login="admin", password="p@ss:w/rd",
                 db="jobs_db", jobs="myjobs", home="run")
    cfg = load(path, environ={})
    assert cfg.url == "http://admin:p%40ss%3Aw%2Frd@db.local:6984"
    assert cfg.db == "jobs_db"
    assert cfg.jobs == tmp_path / "myjobs"
    assert cfg.home == tmp_path / "run"
    assert cfg.safe_url == "http://admin:***@db.local:6984"
    assert (cfg.runs_db, cfg.workers_db) == ("jobs_db_runs", "jobs_db_workers")


def test_environment_overrides_every_setting(tmp_path):
    path = write(tmp_path, host="db.local", db="from_file")
    env = {"AFTER_COUCHDB_URL": "https://u:secret@couch.example:443/", "AFTER_DB": "envdb",
           "AFTER_JOBS": "/srv/jobs", "AFTER_HOME": "/srv/home"}
    cfg = load(path, environ=env)
    assert cfg.url == "https://u:secret@couch.example:443"
    assert cfg.db == "envdb"
    assert str(cfg.jobs) == "/srv/jobs" and str(cfg.home) == "/srv/home"
    assert "secret" not in cfg.safe_url


def test_after_config_names_the_file(tmp_path):
    path = write(tmp_path, db="named")
    assert load(environ={"AFTER_CONFIG": str(path)}).db == "named"


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load(environ={})
    assert (cfg.url, cfg.db) == ("http://127.0.0.1:5984", "tasks")
    assert cfg.jobs == tmp_path / "jobs"


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"port": "abc"}', "'port' must be a number"),
    ],
)
def test_a_bad_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load(path, environ={})


def test_a_missing_named_file_and_a_bad_url_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.json", environ={})
    with pytest.raises(ConfigError, match=r"not a CouchDB URL: 'ftp://u:\*\*\*@x'"):
        load(environ={"AFTER_COUCHDB_URL": "ftp://u:pw@x"}, path=write(tmp_path))


def test_mask_url():
    assert mask_url("http://admin:s3cret@127.0.0.1:5984") == "http://admin:***@127.0.0.1:5984"
    assert mask_url("http://127.0.0.1:5984") == "http://127.0.0.1:5984"


# -- several node URLs (a cluster, for failover) ------------------------------------------


def test_several_node_urls_are_comma_separated_and_credentials_carry_over():
    assert split_urls("http://admin:pw@db1:5984, http://db2:5984/ ,https://u:x@db3:6984,") == [
        "http://admin:pw@db1:5984", "http://admin:pw@db2:5984", "https://u:x@db3:6984"]
    assert split_urls("http://db1:5984,http://db2:5984") == ["http://db1:5984",
                                                               "http://db2:5984"]
    assert split_urls(["http://a:b@n1:1", "http://n2:2"]) == ["http://a:b@n1:1",
                                                              "http://a:b@n2:2"]
    assert split_urls("http://127.0.0.1:5984") == ["http://127.0.0.1:5984"]
    assert split_urls(" , ") == []


def test_the_environment_and_the_file_take_several_urls(tmp_path):
    env = {"AFTER_COUCHDB_URL": "http://admin:s3cret@10.0.0.1:5984,http://10.0.0.2:5984/"}
    cfg = load(write(tmp_path), environ=env)
    assert cfg.urls == ["http://admin:s3cret@10.0.0.1:5984", "http://admin:s3cret@10.0.0.2:5984"]
    assert cfg.url == ",".join(cfg.urls)
    assert cfg.safe_url == "http://admin:***@10.0.0.1:5984,http://admin:***@10.0.0.2:5984"
    listed = load(write(tmp_path, url=["http://n1:5984", "http://n2:5984"]), environ={})
    assert listed.urls == ["http://n1:5984", "http://n2:5984"]
    joined = load(write(tmp_path, url="http://n1:5984,http://n2:5984"), environ={})
    assert joined.urls == listed.urls


@pytest.mark.parametrize("url, shown", [
    ("http://admin:s3cret@n1:5984,ftp://admin:s3cret@n2", "'ftp://admin:***@n2'"),
    ("http://admin:s3cret@n1:5984,http://admin:s3cret@n2:x", "'http://admin:***@n2:x'"),
    ("http://admin:s3cret@n1:5984,n2:5984", "'n2:5984'"),
])
def test_a_bad_node_url_is_named_alone_and_masked(tmp_path, url, shown):
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path), environ={"AFTER_COUCHDB_URL": url})
    assert shown in str(error.value)
    assert "s3cret" not in str(error.value)


def test_an_empty_url_list_and_a_url_of_the_wrong_type_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no CouchDB URL"):
        load(write(tmp_path), environ={"AFTER_COUCHDB_URL": ","})
    with pytest.raises(ConfigError, match="'url' must be a URL or a list of URLs"):
        load(write(tmp_path, url=5984), environ={})


def test_mask_url_masks_every_node():
    assert mask_url("http://a:s1@n1:1,http://b:s2@n2:2") == "http://a:***@n1:1,http://b:***@n2:2"


@pytest.mark.parametrize("args, kept, url", [
    (["--url", "http://a:pw@h:1", "start", "x"], ["start", "x"], "http://a:pw@h:1"),
    (["--url=http://a:pw@h:1", "start", "x", "-b"], ["start", "x", "-b"], "http://a:pw@h:1"),
    (["--url", "http://h:1", "list"], ["--url", "http://h:1", "list"], None),
    (["--url", "a:pw@h:1", "list"], ["list"], "a:pw@h:1"),
    (["--url", "http://h1:1,http://a:pw@h2:1", "list"], ["list"],
     "http://h1:1,http://a:pw@h2:1"),
    (["add", "--", "--url", "http://a:pw@h"], ["add", "--", "--url", "http://a:pw@h"], None),
    (["list", "--url"], ["list", "--url"], None),
])
def test_credentials_leave_the_command_line(args, kept, url):
    assert credentials_out_of_argv(args) == (kept, url)


def test_worker_settings_come_from_the_file_then_the_environment(tmp_path):
    from after.config import Settings

    path = write(tmp_path, worker={"pool": 16, "lease": 60, "horizon": 120})
    cfg = load(path, environ={"AFTER_WORKER_POOL": "4", "AFTER_WORKER_GRACE": "2.5"})
    assert cfg.worker == Settings(pool=4, lease=60.0, horizon=120.0, grace=2.5)
    assert cfg.with_worker(pool=2, grace=None).worker.pool == 2  # an option wins
    assert cfg.with_worker(pool=None) is cfg


@pytest.mark.parametrize("worker, env, message", [
    ({"pool": "many"}, {}, "worker.pool: expected an integer, not 'many'"),
    ({"pool": 2.5}, {}, "worker.pool: expected an integer"),
    ({"pool": 0}, {}, "worker.pool: must be from 1 to 512, not 0"),
    ({"horizon": True}, {}, "worker.horizon: expected a number"),
    ({"speed": 3}, {}, "worker.speed: not a worker setting"),
    ({"heartbeat": 40}, {}, "worker.heartbeat: must be under half of the lease"),
    ([], {}, "worker: expected an object of worker settings"),
    ({}, {"AFTER_WORKER_LEASE": "soon"}, "AFTER_WORKER_LEASE: expected a number, not 'soon'"),
    ({}, {"AFTER_WORKER_LEASE": "nan"}, "AFTER_WORKER_LEASE: must be at least 1"),
])
def test_a_bad_worker_setting_names_where_it_comes_from(tmp_path, worker, env, message):
    path = write(tmp_path, worker=worker)
    with pytest.raises(ConfigError) as caught:
        load(path, environ=env)
    assert message in str(caught.value)


def test_derived_database_names_have_one_home():
    from after.config import databases, runs_db, workers_db

    assert databases("jobs") == ("jobs", runs_db("jobs"), workers_db("jobs"))
    assert databases("jobs") == ("jobs", "jobs_runs", "jobs_workers")


def test_paths_of_the_file_are_relative_to_it_and_the_environment_to_the_directory(
        tmp_path, monkeypatch):
    """A config file read from elsewhere (AFTER_CONFIG) keeps its jobs folder and home beside
    it; AFTER_JOBS and AFTER_HOME (and --jobs, --home) are relative to where the command
    runs."""
    etc = tmp_path / "etc"
    etc.mkdir()
    path = write(etc, jobs="jobs", home="~/after-home")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    cfg = load(path, environ={})
    assert cfg.jobs == etc / "jobs"
    assert cfg.home == tmp_path / "user" / "after-home"
    cfg = load(path, environ={"AFTER_JOBS": "myjobs", "AFTER_HOME": "var"})
    assert cfg.jobs == elsewhere / "myjobs" and cfg.home == elsewhere / "var"


def test_jobs_modules_from_the_file_or_the_environment(tmp_path):
    path = write(tmp_path, jobs_module=["billing.jobs", "shared"])
    assert load(path, environ={}).jobs_modules == ("billing.jobs", "shared")
    assert load(path, environ={"AFTER_JOBS_MODULE": "a.jobs, b"}).jobs_modules == ("a.jobs",
                                                                                   "b")
    assert load(write(tmp_path, jobs_module="one.jobs"), environ={}).jobs_modules == (
        "one.jobs",)
    assert load(write(tmp_path), environ={}).jobs_modules == ()


@pytest.mark.parametrize("value, message", [
    ("../jobs", "'../jobs' is not a module name"),
    (["a", 3], "expected a module name or a list of them"),
    ("pkg..jobs", "'pkg..jobs' is not a module name"),
    ({"a": 1}, "expected a module name or a list of them"),
])
def test_a_bad_jobs_module_is_refused_naming_where(tmp_path, value, message):
    path = write(tmp_path, jobs_module=value)
    with pytest.raises(ConfigError, match=f"jobs_module: {message}"):
        load(path, environ={})
    if isinstance(value, str):
        with pytest.raises(ConfigError, match=f"^AFTER_JOBS_MODULE: {message}"):
            load(write(tmp_path), environ={"AFTER_JOBS_MODULE": value})
