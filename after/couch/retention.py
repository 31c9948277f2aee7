"""Retention: finished tasks that go, by the workers' setting or by ``after purge``.

Without it nothing is ever deleted: every one-off task and every extra run's copy
(``weekday-billing:manual:2026-12-05T12:59:11.819Z``) stays in the tasks database for ever.

Two settings of the worker (:class:`after.config.Settings`) say how long a finished task is
kept once it finished, in seconds (0: for ever):

- ``retain``: one-off tasks (no ``repeat``) that are ``done``, ``error`` or ``canceled``;
  0 by default: an application may read them;
- ``retain_extra``: the one-off copies of ``after run`` and ``after backfill`` (the tasks
  with an ``occurrence``), 30 days by default. Their run records stay: they are the parent
  task's history (``after runs PARENT``). A backfill asked again once its copies are gone
  runs those occurrences again.

A worker applies them to its own name, on a thread of its own (:class:`Retainer`), every
``retain_every`` seconds; of the processes of a name, only the first live one (in id order)
does, so they do not all delete the same tasks. ``after purge`` deletes finished tasks by
status, age and worker name, whatever the settings (a dry run unless ``--yes``).

When a task finished: its last run's end, or when it was canceled; its ``date`` when it
records neither (a task that could not run). Deleting a task deletes its run records too,
but an extra copy's (see above). Deleted documents leave tombstones until the database is
compacted (docs/deploy.rst).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from after.config import runs_db, workers_db
from after.couch.registry import registry, state
from after.couch.store import Store, StoreError, describe_error
from after.rules import task as rules
from after.rules.dates import to_ms, utcnow

log = logging.getLogger("after.retention")

#: Most tasks deleted in one round of a worker's retention (the rest in the next ones).
ROUND = 2000


def finished_at(doc: dict) -> datetime | None:
    """When a finished task finished (see the module's docstring); None when unreadable."""
    info = rules.info(doc)
    last = info.get("last_run") if isinstance(info.get("last_run"), dict) else {}
    stamps = [rules.instant(info.get("canceled")), rules.instant(last.get("ended"))]
    found = [stamp for stamp in stamps if stamp is not None]
    return max(found) if found else rules.instant(doc.get("date"))


def is_extra(doc: dict) -> bool:
    """A one-off copy of ``after run`` or ``after backfill`` (it has an ``occurrence``)."""
    return isinstance(doc.get("occurrence"), dict)


@dataclass(frozen=True)
class Policy:
    """What a worker's retention deletes: seconds kept (0: for ever)."""

    retain: float = 0.0  # finished one-off tasks
    retain_extra: float = 0.0  # finished copies of extra runs

    @property
    def active(self) -> bool:
        return bool(self.retain or self.retain_extra)

    def keep_for(self, doc: dict) -> float:
        """Seconds ``doc`` is kept once finished (0: for ever, or not the policy's)."""
        if is_extra(doc):
            return self.retain_extra
        if doc.get("repeat") is None:
            return self.retain
        return 0.0


def expired(doc: dict, now: datetime, policy: Policy) -> bool:
    """True when the policy deletes ``doc`` at ``now``: finished, of a kind it keeps for a
    while, and finished longer ago than that."""
    keep = policy.keep_for(doc)
    if not keep or doc.get("status") not in rules.FINISHED:
        return False
    ended = finished_at(doc)
    return ended is not None and now - ended >= timedelta(seconds=keep)


def older(doc: dict, now: datetime, age: float) -> bool:
    """True when a finished ``doc`` finished ``age`` seconds before ``now`` or earlier."""
    ended = finished_at(doc)
    return doc.get("status") in rules.FINISHED and ended is not None \
        and now - ended >= timedelta(seconds=age)


# -- reading and deleting -------------------------------------------------------------------


def finished(store: Store, statuses: Iterable[str] = rules.FINISHED,
             worker: str | None = None) -> Iterator[dict]:
    """The tasks in ``statuses`` (finished ones), of ``worker`` or of every name, through
    the ``[worker, status, date]`` and ``[status, date]`` indexes, a page at a time."""
    for status in dict.fromkeys(statuses):
        selector: dict = {"status": status, "date": {"$gt": None}}
        sort = [{"status": "asc"}, {"date": "asc"}]
        if worker is not None:
            selector = {"worker": worker, **selector}
            sort.insert(0, {"worker": "asc"})
        yield from store.find_all(selector, sort=sort)


def delete(store: Store, docs: list[dict], runs_db: str, *, batch: int = 500) -> tuple[int, int]:
    """Delete ``docs`` (each with its ``_rev``: one changed meanwhile is left, a 409) and
    the run records of those that are no extra copy; returns (tasks, run records)
    deleted."""
    tasks = runs = 0
    for first in range(0, len(docs), batch):
        chunk = docs[first:first + batch]
        results = store.bulk_docs([{"_id": d["_id"], "_rev": d["_rev"], "_deleted": True}
                                   for d in chunk])
        gone = {r["id"] for r in results if not r.get("error")}
        tasks += len(gone)
        for doc in chunk:
            if doc["_id"] in gone and not is_extra(doc):
                runs += delete_runs(store, doc["_id"], runs_db)
    return tasks, runs


def delete_runs(store: Store, task_id: str, runs_db: str) -> int:
    """Delete the run records of a task (ids ``TASK#NUMBER#...``); how many went."""
    records = store.prefixed(f"{task_id}#", db=runs_db)
    if not records:
        return 0
    results = store.bulk_docs([{"_id": r["_id"], "_rev": r["_rev"], "_deleted": True}
                               for r in records], db=runs_db)
    return sum(1 for r in results if not r.get("error"))


# -- the worker's thread ----------------------------------------------------------------------


class Retainer:
    """A worker's retention, on a thread of its own: every ``every`` seconds (the first
    time a tenth of that after its start), if this process is the first live one of its
    name, delete its name's finished tasks the policy no longer keeps (at most
    :data:`ROUND` a round). Never raises: a failure is logged and tried at the next round.
    ``first_live()`` says whether this process is the first live one of its name."""

    def __init__(self, store: Store, name: str, policy: Policy, every: float, runs_db: str,
                 first_live):
        self.store, self.name, self.policy, self.every = store, name, policy, every
        self.runs_db, self.first_live = runs_db, first_live
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.deleted = 0  # tasks deleted so far, for tests and logs

    @classmethod
    def of(cls, worker, store: Store) -> Retainer:
        """The retention of a :class:`~after.worker.Worker` (its name, settings and
        process id) through ``store``."""
        settings, workers = worker.settings, workers_db(store.db)

        def first() -> bool:
            docs = registry(store, workers, worker.name)
            return first_live(docs, worker.id, to_ms(utcnow()))

        return cls(store, worker.name, Policy(settings.retain, settings.retain_extra),
                   settings.retain_every, runs_db(store.db), first)

    def start(self) -> Retainer:
        if self.policy.active:
            self._thread = threading.Thread(target=self._run, name="after-retention",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        wait = self.every / 10
        while not self._stop.wait(wait):
            wait = self.every
            try:
                if self.first_live():
                    self.round(utcnow())
            except (StoreError, ValueError) as exc:
                log.warning("retention of %s: %s (tried again in %g s)", self.name,
                            describe_error(exc), self.every)
            except Exception:  # a bug must not end the worker; said once a round
                log.exception("retention of %s failed", self.name)

    def round(self, now: datetime) -> tuple[int, int]:
        """One round (see the class); returns (tasks, run records) deleted."""
        gone: list[dict] = []
        for doc in finished(self.store, worker=self.name):
            if self._stop.is_set():
                return 0, 0
            if expired(doc, now, self.policy):
                gone.append(doc)
                if len(gone) >= ROUND:
                    break
        if not gone:
            return 0, 0
        tasks, runs = delete(self.store, gone, self.runs_db)
        self.deleted += tasks
        log.info("retention of %s: deleted %d finished task(s) and %d run record(s)",
                 self.name, tasks, runs)
        return tasks, runs


def first_live(docs: list[dict], me: str, now_ms: int) -> bool:
    """True when ``me`` is the first, in id order, of the live processes in ``docs`` (the
    heartbeats of one name), or when none is live yet."""
    live = sorted(d["_id"] for d in docs if state(d, now_ms) == "live")
    return not live or live[0] == me
