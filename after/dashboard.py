"""The web dashboard: a page CouchDB serves itself, from a design document's attachments.

``install(store)`` puts ``_design/dashboard`` in the tasks database: the static files of
``after/dashboard/`` as inline attachments, and two views the page queries. The page is then
at ``<server>/<db>/_design/dashboard/index.html`` and talks to CouchDB from the browser with
relative URLs, so the user's own CouchDB session (cookie or basic auth) is the dashboard's
authentication, and there is no other server.

The dashboard lives in a design document of its own, apart from ``_design/after`` (the
validation and the workers' ``due`` view), so updating the page never rebuilds the workers'
index. A hash of everything ``install`` writes is kept in the document: running it again with
unchanged files writes nothing and makes no new revision.

Views (for the page; the workers never query them):

- ``status``: ``[status, worker, job]`` with ``_count``: counts by status (``group_level=1``)
  and the worker and job names for the filters (``group_level=3``).
- ``upcoming``: the instant a task that is to run (``waiting``, ``scheduled``,
  ``reschedule``; not ``running``) is due, in epoch milliseconds (the held occurrence's
  ``after.due`` when a worker holds it, else ``date``), with ``_count``: the timeline and the
  number of overdue tasks.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from .config import Config, mask_url
from .schema import JS_PARSE_DATE  # one date grammar for every view
from .store import Conflict, Store

DESIGN_ID = "_design/dashboard"
STATIC = Path(__file__).resolve().parent / "dashboard"
INDEX = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

STATUS_MAP = r"""function (doc) {
  if (typeof doc.status !== 'string') return;
  var job = doc.job && typeof doc.job.name === 'string' ? doc.job.name : null;
  emit([doc.status, typeof doc.worker === 'string' ? doc.worker : null, job], null);
}"""

UPCOMING_MAP = (
    "function (doc) {\n"
    + JS_PARSE_DATE
    + r"""
  var PENDING = ['waiting', 'scheduled', 'reschedule'];
  if (PENDING.indexOf(doc.status) < 0) return;
  var info = doc.after || {};
  var held = doc.status === 'scheduled' && info.due;
  var due = parseDate(held ? info.due : doc.date);
  if (due === null) return;
  emit(due, {status: doc.status, worker: doc.worker,
             job: doc.job && doc.job.name, date: doc.date});
}"""
)

VIEWS = {
    "status": {"map": STATUS_MAP, "reduce": "_count"},
    "upcoming": {"map": UPCOMING_MAP, "reduce": "_count"},
}


def static_files(folder: Path = STATIC) -> dict[str, bytes]:
    """The page's files by name (sorted), read from ``folder``."""
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in CONTENT_TYPES:
            files[path.name] = path.read_bytes()
    if INDEX not in files:
        raise FileNotFoundError(f"the dashboard's {INDEX} is missing from {folder}")
    return files


def fingerprint(files: dict[str, bytes], views: dict = VIEWS) -> str:
    """A hash of everything the design document holds: the files and the views."""
    digest = hashlib.sha256()
    for name, data in sorted(files.items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    digest.update(json.dumps(views, sort_keys=True).encode())
    return digest.hexdigest()


def design_doc(files: dict[str, bytes]) -> dict:
    attachments = {
        name: {
            "content_type": CONTENT_TYPES[Path(name).suffix],
            "data": base64.b64encode(data).decode("ascii"),
        }
        for name, data in files.items()
    }
    return {
        "_id": DESIGN_ID,
        "language": "javascript",
        "views": VIEWS,
        "dashboard": {"hash": fingerprint(files), "files": sorted(files)},
        "_attachments": attachments,
    }


def install(store: Store, folder: Path = STATIC) -> bool:
    """Put or update ``_design/dashboard`` in the tasks database; False when it was current.

    The tasks database must exist (``after setup`` creates it).
    """
    wanted = design_doc(static_files(folder))
    for _ in range(3):
        current = store.get_or_none(DESIGN_ID)
        if current is not None:
            if (current.get("dashboard") or {}).get("hash") == wanted["dashboard"]["hash"]:
                return False
            wanted["_rev"] = current["_rev"]
        try:
            store.put(wanted)
            return True
        except Conflict:  # another `after setup` at the same moment: look again
            wanted.pop("_rev", None)
    raise Conflict(f"{DESIGN_ID} keeps changing; try again")


def is_installed(store: Store, folder: Path = STATIC) -> bool:
    current = store.get_or_none(DESIGN_ID) or {}
    return (current.get("dashboard") or {}).get("hash") == fingerprint(static_files(folder))


def page_url(cfg: Config) -> str:
    """The page's address (on the first node), with the configured credentials in it (do not
    print this)."""
    return f"{cfg.urls[0]}/{quote(cfg.db, safe='')}/{DESIGN_ID}/{INDEX}"


def url(cfg: Config) -> str:
    """The page's address to show: the password masked."""
    return mask_url(page_url(cfg))


def browser_url(cfg: Config) -> str:
    """The page's address to open in a browser: no credentials at all (the page asks)."""
    parts = urlsplit(page_url(cfg))
    netloc = parts.hostname or ""
    if ":" in netloc:  # IPv6
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
