"""A worker on a replica: a site (a shop, a ship, a factory) whose processes of one worker
name talk to a CouchDB of its own, which replicates with a central one (issue 25 item 7).

The site's CouchDB replicates, continuously and filtered, what the name needs and nothing
else. :func:`replications` builds the ``_replicator`` documents that say so, written into
the site's CouchDB (``after replicate NAME --central URL``: the site pulls and pushes, so the
centre needs no knowledge of its sites, and a site behind a firewall or a ship at sea
reaches out when it can). Four of them:

``tasks-pull``  ``<db>`` centre -> site: the tasks of the name, the shared calendars
                (``calendar:*``), and deletions (a tombstone names no worker, so every
                deletion goes: small, and a task deleted centrally goes at the site too)
``tasks-push``  ``<db>`` site -> centre: the same, so the site's status transitions, counters
                and last runs flow back
``runs-push``   ``<db>_runs`` site -> centre: the run records of the name (and their
                deletions, the site's retention)
``workers``     ``<db>_workers`` site -> centre: the heartbeats of the name's processes (and
                their deletions), so that ``after list``, the dashboard and the warning of
                ``after add`` at the centre see the site's processes while the link is up;
                never a partition lease (:mod:`after.worker.partitions`): the leases say which
                process of the site runs which task, and only the site's processes need them
``pause-pull``  ``<db>_workers`` centre -> site: the name's pause (``NAME@paused``), so that
                ``after pause NAME`` at the centre reaches the site while the link is up

While the link is down each side goes on alone: the site's processes run the tasks they have
on time (everything about a run happens in the site's database), the centre may go on
editing them. When it returns, the replications resume from their checkpoints; a task
written on both sides meanwhile has conflicting revisions, which CouchDB orders the same way
on both sides (the longer history wins, then the higher revision id), and the site's worker
resolves them as it does a cluster's (:func:`after.worker.runs.resolutions`): the winner is
kept, the losers are deleted, and the deletions replicate. So an edit made centrally while
apart survives only if it wins; the site's own writes (a run's end, the next date) usually
have the longer history.

Exactly once holds for a name served from one side only (here: the site). Two processes of
the name on the two sides would each own the name's partitions on their own side's leases
and run the same occurrences twice: never start the name centrally too.

Pure: nothing here does I/O (:meth:`after.client.Client.replicate` writes the documents
through the store, and the command line and the dashboard call the Client).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from after.config import runs_db, workers_db
from after.couch.pausing import pause_id
from after.rules.calendar import PREFIX as CALENDAR_PREFIX
from after.rules.redact import redact_text, redact_url

#: The database the replication documents go into, in the site's CouchDB.
REPLICATOR = "_replicator"
ROLES = ("tasks-pull", "tasks-push", "runs-push", "workers", "pause-pull")


class ReplicaError(ValueError):
    """A replication that cannot be set up as asked; the message says why."""


@dataclass(frozen=True)
class Endpoint:
    """A database on a server: its URL without credentials, and the credentials apart (as
    CouchDB's replicator wants them: ``auth.basic``)."""

    url: str
    user: str | None = None
    password: str | None = None

    def database(self, db: str) -> Endpoint:
        return Endpoint(f"{self.url}/{quote_db(db)}", self.user, self.password)

    def as_json(self) -> dict:
        found: dict = {"url": self.url}
        if self.user is not None:
            found["auth"] = {"basic": {"username": self.user, "password": self.password or ""}}
        return found

    @property
    def safe(self) -> str:
        return redact_url(self.url)


def quote_db(db: str) -> str:
    """A database name as a path segment (CouchDB names may hold ``/``)."""
    return db.replace("/", "%2F")


def endpoint(url: str) -> Endpoint:
    """A server URL (the first of a comma-separated list), its credentials taken out."""
    first = url.split(",")[0].strip()
    parts = urlsplit(first)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ReplicaError(f"{redact_url(first)!r} is not an http(s) URL of a CouchDB server")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    bare = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    if parts.username is None:
        return Endpoint(bare)
    return Endpoint(bare, unquote(parts.username), unquote(parts.password or ""))


def doc_id(db: str, name: str, role: str) -> str:
    """The id of one replication document: deterministic, so that setting it up again
    finds it (and changes nothing when it is right)."""
    return f"{id_prefix(db)}{name}:{role}"


def id_prefix(db: str) -> str:
    """What the ids of database ``db``'s replication documents begin with."""
    return f"after:{db}:"


def tasks_selector(name: str) -> dict:
    """The tasks of ``name``, the shared calendars, and every deletion."""
    return {"$or": [{"worker": name}, {"_id": {"$regex": f"^{re.escape(CALENDAR_PREFIX)}"}},
                    {"_deleted": True}]}


def runs_selector(name: str) -> dict:
    return {"$or": [{"worker": name}, {"_deleted": True}]}


def workers_selector(name: str) -> dict:
    """The heartbeats of ``name``'s processes, and their deletions (not its leases)."""
    return {"$or": [{"type": "worker", "name": name},
                    {"_deleted": True, "_id": {"$regex": f"^{re.escape(name)}@"}}]}


def replications(name: str, db: str, site: str, central: str,
                 central_db: str | None = None) -> list[dict]:
    """The ``_replicator`` documents of worker name ``name`` served at the site whose
    CouchDB is ``site`` (as that server reaches itself), database ``db``, replicating with
    ``central`` (database ``central_db``, ``db`` by default)."""
    here, there = endpoint(site), endpoint(central)
    far = central_db or db

    def one(role: str, source: Endpoint, target: Endpoint, **how) -> dict:
        return {"_id": doc_id(db, name, role), "source": source.as_json(),
                "target": target.as_json(), "continuous": True, **how}

    return [
        one("tasks-pull", there.database(far), here.database(db),
            selector=tasks_selector(name)),
        one("tasks-push", here.database(db), there.database(far),
            selector=tasks_selector(name)),
        one("runs-push", here.database(runs_db(db)), there.database(runs_db(far)),
            selector=runs_selector(name)),
        one("workers", here.database(workers_db(db)), there.database(workers_db(far)),
            selector=workers_selector(name)),
        one("pause-pull", there.database(workers_db(far)), here.database(workers_db(db)),
            doc_ids=[pause_id(name)]),
    ]


#: What a replication document holds that CouchDB writes itself (its state), or that only
#: the server's answer carries: left out when telling whether a stored one is as wanted.
STATE_FIELDS = ("_rev", "_replication_state", "_replication_state_time",
                "_replication_state_reason", "_replication_id", "_replication_stats",
                "owner")


def same(stored: dict, wanted: dict) -> bool:
    """Is the stored replication document the one wanted, its state apart (credentials
    included: a new password is written)?"""
    return {k: v for k, v in stored.items() if k not in STATE_FIELDS} == \
        {k: v for k, v in wanted.items() if k not in STATE_FIELDS}


def name_of(docid: str, db: str) -> str | None:
    """The worker name of a replication document of database ``db`` (its id made by
    :func:`doc_id`), or None for another document."""
    if not docid.startswith(prefix := id_prefix(db)) or docid.rsplit(":", 1)[-1] not in ROLES:
        return None
    return docid[len(prefix):].rsplit(":", 1)[0] or None


def role_of(doc: dict) -> str:
    """The role of a replication document, from its id (``after:<db>:<name>:<role>``)."""
    return doc["_id"].rsplit(":", 1)[-1]


def summary(doc: dict) -> dict:
    """A replication document's ``role``, ``source`` and ``target`` (without credentials)."""
    return {"role": role_of(doc), "source": redact_url(doc["source"]["url"]),
            "target": redact_url(doc["target"]["url"])}


def describe(doc: dict) -> str:
    """One replication, in words, without credentials: ``role: source -> target``."""
    return "{role}: {source} -> {target}".format(**summary(doc))


def status(role: str, doc: dict | None, state: dict | None) -> dict:
    """One replication as ``Client.replication`` answers it: ``role``, ``state`` (CouchDB's
    scheduler's: ``running``, ``pending``, ``crashing``, ...; the document's own
    ``_replication_state`` when the scheduler knows of none; None: not set up),
    ``written`` (documents written by it, when known), ``source`` and ``target`` (URLs
    without credentials) and ``error`` (why it crashes, without credentials, or None)."""
    if doc is None:
        return {"role": role, "state": None, "written": None, "source": None,
                "target": None, "error": None}
    info = (state or {}).get("info")
    info = info if isinstance(info, dict) else {}
    error = info.get("error")
    return {**summary(doc),
            "state": (state or {}).get("state") or doc.get("_replication_state") or "pending",
            "written": info.get("docs_written"),
            "error": redact_text(str(error)) if error else None}
