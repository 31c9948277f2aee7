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
``AFTER_HOME``            pid and log files
========================  ==========================================================

Relative paths in the config file are relative to the file's folder.

The URL (``AFTER_COUCHDB_URL``, ``--url``, or ``url`` in the file: a string, or a list of
strings) may name several nodes of one CouchDB cluster, comma separated:
``http://admin:secret@db1:5984,http://db2:5984``. The store uses the first that answers and
moves to the next when its node stops answering (see :mod:`after.store`). A URL without
credentials uses those of the first URL that has some.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Config:
    url: str = "http://127.0.0.1:5984"
    db: str = "tasks"
    jobs: Path = field(default_factory=lambda: Path("jobs").resolve())
    home: Path = field(default_factory=lambda: Path("var").resolve())

    @property
    def safe_url(self) -> str:
        return mask_url(self.url)

    @property
    def urls(self) -> list[str]:
        """The node URLs, in order (one for a single server)."""
        return split_urls(self.url)

    @property
    def runs_db(self) -> str:
        return f"{self.db}_runs"

    @property
    def workers_db(self) -> str:
        return f"{self.db}_workers"



def mask_url(url: str) -> str:
    """The URL (or comma-separated URLs) with passwords and secret query parameters
    masked, for output."""
    from .redact import redact_url

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
    urls = split_urls(url)
    if not urls:
        raise ConfigError("no CouchDB URL given (expected http://host:port)")
    for node in urls:
        check_url(node)
    return Config(
        url=",".join(urls),
        db=env.get("AFTER_DB") or str(values["db"]),
        jobs=(base / (env.get("AFTER_JOBS") or values["jobs"])).resolve(),
        home=(base / (env.get("AFTER_HOME") or values["home"])).resolve(),
    )


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"not a CouchDB URL: {mask_url(url)!r} (expected http://host:port)")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"not a CouchDB URL: {mask_url(url)!r} (bad port)") from None


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
    from .redact import redact_text

    return redact_text(url) != url
