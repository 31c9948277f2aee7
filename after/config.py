"""Configuration: After's ``config.json`` plus environment overrides.

``config.json`` keeps the shape of the original After (``login``, ``password``, ``host``,
``port``, ``db``) and adds ``jobs`` (the jobs folder) and ``home`` (where pid and log files
go). Every setting can be overridden by an environment variable:

========================  ==========================================================
``AFTER_CONFIG``          the config file (default ``./config.json`` when it exists)
``AFTER_COUCHDB_URL``     the full server URL, credentials allowed; several node URLs
                          of one cluster, comma separated, for failover
``AFTER_DB``              the tasks database
``AFTER_JOBS``            the jobs folder
``AFTER_JOBS_MODULE``     installed modules of jobs (``pkg.jobs``), comma separated
``AFTER_HOME``            pid and log files
``AFTER_WORKER_<FIELD>``  a worker setting (``AFTER_WORKER_POOL=16``), see below
========================  ==========================================================

Relative paths in the config file (``jobs``, ``home``) are relative to the file's folder,
wherever the command runs; those of the environment and of the command line are relative to
the current directory.

A worker process's settings (:class:`Settings`: ``horizon``, ``poll``, ``pool``, ``lease``,
``heartbeat``, ``grace``, ``keep_runs``...) come from, in this order: ``after start``'s options,
the ``AFTER_WORKER_<FIELD>`` variables, the ``worker`` object of ``config.json``
(``{"worker": {"pool": 16, "lease": 60}}``), and the defaults typed once, in :class:`Settings`.

The runs and workers databases are named after the tasks database (:func:`runs_db`,
:func:`workers_db`); nothing else builds those names.

The URL (``AFTER_COUCHDB_URL``, ``--url``, or ``url`` in the file: a string, or a list of
strings) may name several nodes of one CouchDB cluster, comma separated:
``http://admin:secret@db1:5984,http://db2:5984``. The store uses the first that answers and
moves to the next when its node stops answering (see :mod:`after.couch.store`). A URL without
credentials uses those of the first URL that has some.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

DEFAULTS = {
    "host": "127.0.0.1",
    "port": 5984,
    "login": "",
    "password": "",
    "db": "tasks",
    "jobs": "jobs",
    "home": "var",
}


class ConfigError(Exception):
    """The configuration cannot be used; the message says why."""


class BadURL(ConfigError):
    """The CouchDB URL given is no http(s)://host[:port] URL (a usage error)."""


def runs_db(db: str) -> str:
    """The database of the run records of the tasks database ``db``."""
    return f"{db}_runs"


def workers_db(db: str) -> str:
    """The database of the worker processes' heartbeats of the tasks database ``db``."""
    return f"{db}_workers"


def databases(db: str) -> tuple[str, str, str]:
    """The tasks database and the two named after it."""
    return db, runs_db(db), workers_db(db)


@dataclass(frozen=True)
class Settings:
    """How a worker process behaves; every field has a sensible default, typed here only."""

    horizon: float = 300.0  # hold tasks due within this many seconds
    poll: float = 30.0  # re-query the due view this often (the feed's safety net)
    pool: int = 8  # job threads
    heartbeat: float = 1.0  # seconds between heartbeats (under half the lease)
    lease: float = 6.0  # a heartbeat unchanged this long: its process has lost what it held
    grace: float = 30.0  # on stop, how long running jobs may take to finish
    keep_runs: int = 100  # run records kept per task
    batch: int = 500  # most documents written in one request
    feed_heartbeat: float = 5.0
    write_attempts: int = 6  # a write failing (not a conflict) this many times is given up
    write_backoff: float = 0.5  # first wait before trying a failed write again, doubling...
    write_backoff_max: float = 30.0  # ... up to this, in seconds
    self_check: float = 2.0  # seconds between checks that nothing of ours is stuck
    write_concurrency: int = 2  # task write requests in flight at once
    # A run going on this long is shown ``running`` in its task (a shorter one goes from
    # ``waiting`` to its end in one write): so ``after show`` and the dashboard see it, and
    # another process that takes its partition over leaves it to this one.
    visible: float = 1.0
    # Retention (after.couch.retention): seconds a finished one-off task, and a finished copy of
    # an extra run (after run, after backfill), is kept; 0: for ever. Applied every
    # retain_every seconds by the first live process of a name.
    retain: float = 0.0
    retain_extra: float = 30 * 24 * 3600.0
    retain_every: float = 600.0


#: The range of each setting a user is likely to set: (least, most); None is unbounded.
SETTING_RANGES: dict[str, tuple[float, float | None]] = {
    "horizon": (1, None), "poll": (0.1, None), "pool": (1, 512), "lease": (1, None),
    "heartbeat": (0.1, None), "grace": (0, None), "keep_runs": (1, None),
    "batch": (1, 10000), "feed_heartbeat": (0.1, None),
    "write_concurrency": (1, 16), "visible": (0, None),
    "write_attempts": (1, None), "write_backoff": (0, None), "write_backoff_max": (0, None),
    "self_check": (0.1, None),
    "retain": (0, None), "retain_extra": (0, None), "retain_every": (1, None),
}


def settings(values: dict, where: str = "worker") -> Settings:
    """:class:`Settings` from ``values`` (names to numbers, or to strings of numbers as the
    environment gives them), each checked against its type and range; raises ConfigError
    naming ``where.field``."""
    kinds = {f.name: f.type for f in fields(Settings)}
    checked: dict = {}
    for name, value in values.items():
        if name not in kinds:
            raise ConfigError(f"{where}.{name}: not a worker setting (one of "
                              f"{', '.join(kinds)})")
        checked[name] = _setting(name, value, kinds[name], f"{where}.{name}")
    result = Settings(**checked)
    if result.heartbeat * 2 >= result.lease:
        raise ConfigError(f"{where}.heartbeat: must be under half of the lease "
                          f"({result.heartbeat:g} >= {result.lease:g} / 2)")
    return result


def _setting(name: str, value, kind: str, label: str) -> int | float:
    number = value
    if isinstance(value, str):
        try:
            number = int(value) if kind == "int" else float(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, int | float) or (
            kind == "int" and not isinstance(number, int)):
        raise ConfigError(f"{label}: expected {'an integer' if kind == 'int' else 'a number'}"
                          f", not {value!r}")
    low, high = SETTING_RANGES[name]
    if number != number or number < low or (high is not None and number > high):
        bound = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"
        raise ConfigError(f"{label}: must be {bound}, not {value!r}")
    return int(number) if kind == "int" else float(number)


def settings_from(section, environ: dict, where: str = "worker") -> Settings:
    """The ``worker`` section of config.json with the ``AFTER_WORKER_<FIELD>`` overrides."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: expected an object of worker settings")
    values = dict(section)
    for f in fields(Settings):
        variable = f"AFTER_WORKER_{f.name.upper()}"
        if environ.get(variable):  # checked here, to name the variable when it is wrong
            values[f.name] = _setting(f.name, environ[variable], f.type, variable)
    return settings(values, where)


@dataclass(frozen=True)
class Config:
    url: str = "http://127.0.0.1:5984"
    db: str = "tasks"
    jobs: Path = field(default_factory=lambda: Path("jobs").resolve())
    home: Path = field(default_factory=lambda: Path("var").resolve())
    worker: Settings = field(default_factory=Settings)
    jobs_modules: tuple[str, ...] = ()  # installed modules of jobs (after.jobmodules)

    def with_worker(self, **overrides) -> Config:
        """This configuration with some worker settings replaced (``after start``'s
        options), checked like the others."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self
        values = {f.name: getattr(self.worker, f.name) for f in fields(Settings)}
        return replace(self, worker=settings({**values, **given}, "option"))

    @property
    def safe_url(self) -> str:
        return mask_url(self.url)

    @property
    def urls(self) -> list[str]:
        """The node URLs, in order (one for a single server)."""
        return split_urls(self.url)

    @property
    def runs_db(self) -> str:
        return runs_db(self.db)

    @property
    def workers_db(self) -> str:
        return workers_db(self.db)


def mask_url(url: str) -> str:
    """The URL (or comma-separated URLs) with passwords and secret query parameters
    masked, for output."""
    from after.rules.redact import redact_url

    return redact_url(url)  # a list of nodes is masked URL by URL


def split_urls(url: str | list | tuple) -> list[str]:
    """The node URLs of ``url``: one URL, several comma separated, or a list of them.

    Blank entries are dropped and trailing slashes removed. A URL without credentials takes
    those of the first URL that has some (the nodes of one cluster share their admins)."""
    parts = url if isinstance(url, (list, tuple)) else str(url).split(",")
    urls = [str(part).strip().rstrip("/") for part in parts]
    urls = [u for u in urls if u]
    userinfo = next((_userinfo(u) for u in urls if _userinfo(u)), "")
    if userinfo:
        urls = [u if _userinfo(u) or not urlsplit(u).netloc else _with_userinfo(u, userinfo)
                for u in urls]
    return urls


def _userinfo(url: str) -> str:
    netloc = urlsplit(url).netloc
    return netloc.rpartition("@")[0] if "@" in netloc else ""


def _with_userinfo(url: str, userinfo: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{userinfo}@{parts.netloc}", parts.path, parts.query,
                       parts.fragment))


def url_from_file(values: dict) -> str:
    login = values.get("login") or ""
    password = values.get("password") or ""
    credentials = ""
    if login:
        credentials = quote(str(login), safe="")
        if password:
            credentials += ":" + quote(str(password), safe="")
        credentials += "@"
    return f"http://{credentials}{values['host']}:{int(values['port'])}"


def load(path: str | os.PathLike | None = None, environ: dict | None = None) -> Config:
    """Read the config file (if any) and apply the environment overrides."""
    env = os.environ if environ is None else environ
    explicit = path or env.get("AFTER_CONFIG")
    config_path = Path(explicit) if explicit else Path("config.json")
    values = dict(DEFAULTS)
    base = Path.cwd()
    if config_path.exists():
        try:
            loaded = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{config_path}: not valid JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_path}: expected a JSON object")
        values.update({k: v for k, v in loaded.items() if v is not None})
        base = config_path.resolve().parent
    elif explicit:
        raise ConfigError(f"config file {config_path} does not exist")
    try:
        url = env.get("AFTER_COUCHDB_URL") or values.get("url") or url_from_file(values)
    except (TypeError, ValueError):
        raise ConfigError(f"{config_path}: 'port' must be a number") from None
    if not isinstance(url, (str, list, tuple)):
        raise ConfigError(f"{config_path}: 'url' must be a URL or a list of URLs")
    for node in (url if isinstance(url, (list, tuple)) else str(url).split(",")):
        if str(node).strip():
            check_url(str(node).strip().rstrip("/"))  # before split_urls parses them
    urls = split_urls(url)
    if not urls:
        raise ConfigError("no CouchDB URL given (expected http://host:port)")
    for node in urls:
        check_url(node)
    return Config(
        url=",".join(urls),
        db=env.get("AFTER_DB") or str(values["db"]),
        jobs=_path(env.get("AFTER_JOBS"), values["jobs"], base),
        home=_path(env.get("AFTER_HOME"), values["home"], base),
        worker=settings_from(values.get("worker"), env, f"{config_path}: worker"),
        jobs_modules=jobs_modules(env.get("AFTER_JOBS_MODULE") or values.get("jobs_module"),
                                  "AFTER_JOBS_MODULE" if env.get("AFTER_JOBS_MODULE")
                                  else f"{config_path}: jobs_module"),
    )


def _path(given: str | None, in_file, base: Path) -> Path:
    """A folder of the environment or the command line (relative to the current
    directory), else the config file's (relative to the file's folder)."""
    if given:
        return Path(given).expanduser().resolve()
    return (base / Path(str(in_file)).expanduser()).resolve()


def jobs_modules(value, where: str) -> tuple[str, ...]:
    """``"pkg.jobs"``, ``"a.jobs,b.jobs"`` or a list of module names, checked."""
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{where}: expected a module name or a list of them")
    names = tuple(i.strip() for i in items if i.strip())
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"{where}: {name!r} is not a module name (like pkg.jobs)")
    return names


def check_url(url: str) -> None:
    """BadURL unless ``url`` is ``http(s)://[user:password@]host[:port][/...]``; the
    message shows the URL with its password masked."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed [
        raise BadURL(f"not a CouchDB URL: {mask_url(url)!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadURL(f"not a CouchDB URL: {mask_url(url)!r} (expected http://host:port)")
    try:
        _ = parts.port
    except ValueError:
        raise BadURL(f"not a CouchDB URL: {mask_url(url)!r} (bad port)") from None


def credentials_out_of_argv(args: list[str]) -> tuple[list[str], str | None]:
    """``args`` without a ``--url`` that carries a password, and that URL (else None).

    A command line is visible to every user of the machine (``ps``) for the whole life of
    the process; the environment is not. The caller moves the URL to ``AFTER_COUCHDB_URL``
    and runs itself again without it.
    """
    kept: list[str] = []
    found = None
    items = iter(enumerate(args))
    for index, arg in items:
        if arg == "--":
            kept.extend(args[index:])
            break
        value = None
        if arg == "--url" and index + 1 < len(args):
            value = args[index + 1]
            next(items)
        elif arg.startswith("--url="):
            value = arg[len("--url="):]
        if value is None:
            kept.append(arg)
        elif has_password(value):
            found = value
        else:
            kept.extend(["--url", value])
    return kept, found


def has_password(url: str) -> bool:
    """True when some part of ``url`` (one URL, or several comma separated) has userinfo
    with a password, or looks like it (a mistyped URL)."""
    from after.rules.redact import redact_text

    return redact_text(url) != url
