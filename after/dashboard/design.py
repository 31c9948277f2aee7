"""The web dashboard's parts in the database and in the package.

The page itself is static files in ``after/dashboard/`` that ``after dashboard`` serves on
127.0.0.1, proxying the database requests the page makes (:mod:`after.dashboard.server`,
which says why it is not served by CouchDB). What the page needs in the database is two
views, which ``install(store)`` puts in ``_design/dashboard`` of the tasks database
(``after setup`` and ``after dashboard`` call it).

The views live in a design document of their own, apart from ``_design/after`` (the
validation and the workers' ``due`` view), so changing them never rebuilds the workers'
index. A hash of the views is kept in the document: installing them again unchanged writes
nothing and makes no new revision. (Earlier versions also kept the page there, as
attachments; the first install of this version drops them.)

Views (for the page; the workers never query them):

- ``status``: ``[status, worker, job]`` with ``_count``: counts by status (``group_level=1``)
  and the worker and job names for the filters (``group_level=3``).
- ``upcoming``: the instant a task that is to run (``waiting``, ``scheduled``,
  ``reschedule``; not ``running``) is due, in epoch milliseconds (the held occurrence's
  ``after.due`` when a worker holds it, else ``date`` moved by the repeat's ``jitter``, as
  the workers move it: :data:`after.rules.occurrence.JS_JITTER`), with ``_count``: the timeline
  and the number of overdue tasks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from after.couch.schema import JS_PARSE_DATE  # one date grammar for every view
from after.couch.store import Conflict, Store
from after.rules.occurrence import JS_JITTER

DESIGN_ID = "_design/dashboard"
STATIC = Path(__file__).resolve().parent  # the page: the static files beside this module
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
    + JS_JITTER
    + r"""
  var PENDING = ['waiting', 'scheduled', 'reschedule'];
  if (PENDING.indexOf(doc.status) < 0) return;
  var info = doc.after || {};
  var held = doc.status === 'scheduled' && info.due;
  var due = parseDate(held ? info.due : doc.date);
  if (due === null) return;
  var jitter = doc.repeat && typeof doc.repeat === 'object' ? doc.repeat.jitter : 0;
  if (!held && typeof jitter === 'number' && jitter > 0)  // held: info.due is jittered
    due += jitterMs(doc._id, due, jitter);
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


def fingerprint(views: dict = VIEWS) -> str:
    """A hash of what the design document holds: the views."""
    return hashlib.sha256(json.dumps(views, sort_keys=True).encode()).hexdigest()


def design_doc(views: dict = VIEWS) -> dict:
    return {
        "_id": DESIGN_ID,
        "language": "javascript",
        "views": views,
        "dashboard": {"hash": fingerprint(views)},
    }


def install(store: Store, views: dict = VIEWS) -> bool:
    """Put or update ``_design/dashboard`` in the tasks database; False when it was current.

    The tasks database must exist (``after setup`` creates it). Writing a design document
    takes a database admin; reading whether it is current does not.
    """
    wanted = design_doc(views)
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


def is_installed(store: Store, views: dict = VIEWS) -> bool:
    current = store.get_or_none(DESIGN_ID) or {}
    return (current.get("dashboard") or {}).get("hash") == fingerprint(views)
