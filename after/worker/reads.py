"""Reads the loop asks for, on a thread of their own: the loop never waits on the server.

:class:`Reads` takes requests from the loop and posts what it read back to the loop's inbox:

- ``check``: the tasks made ready to run in the next seconds, by id with the revision the
  loop holds; whatever changed since (an edit the feed did not show: a task moved to another
  worker name or deleted leaves this name's feed without a change) is posted back as
  ``("recheck", doc)`` or ``("deleted", id)`` to be decided again before it runs;
- ``scan``: the worker name's unfinished tasks among the newest changes
  (:func:`after.worker.polling.scan_recent`), each posted as ``("recheck", doc)``: the tasks
  of partitions just taken, found without the due view, which a server may still be
  indexing after a bulk write;
- ``orphans``: the intents still open of processes found dead (after.worker.intents), each
  with its task as it is now and when its process's lease ended, posted back as
  ``("orphans", (owners, [(intent, task, expires)...]))``; with a ``check``, the intents of
  the dead read by id for the tasks of partitions taken from them (``("probed", [...])``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from after.config import workers_db
from after.couch.store import NotFound, StoreError, describe_error
from after.rules import task as rules
from after.worker import intents, polling
from after.worker import partitions as parts

EARLIEST = datetime.min.replace(tzinfo=UTC)

log = logging.getLogger("after.worker")


class Reads:
    def __init__(self, store, post: Callable[[tuple], None], runs: str | None = None):
        self.store, self.post, self.runs = store, post, runs
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="after-reads", daemon=True)

    def start(self) -> Reads:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)

    def check(self, held: dict[str, str], probes: dict | None = None) -> None:
        """Post back the tasks of ``held`` (id -> revision held) that changed since, and
        ``("confirmed", (found current, to read again))``: a run begins only on a version
        read back so (by id: a quorum read on a cluster). ``probes`` (task id -> (run
        number, dead processes): after.worker.leases.probes): those processes' intents of
        those runs are read by id first, and the open ones posted back before, as
        ``("probed", [(intent, task, expires)...])``."""
        if held:
            self._queue.put(("check", (held, probes or {})))

    def scan(self, name: str, settings, owned=None) -> None:
        """Post back ``name``'s unfinished tasks among the newest changes (of the partitions
        ``owned``; all, if None)."""
        self._queue.put(("scan", (name, settings, owned)))

    def orphans(self, owners: list[str]) -> None:
        """Post back the open intents of ``owners`` (processes found dead), with their tasks."""
        if owners:
            self._queue.put(("orphans", owners))

    def _next(self, waiting: list) -> tuple | None:
        """The next request; the checks queued one after another are one read (each turn
        of the loop asks for what it made ready: one request each, read one at a time on
        a busy cluster, fell behind a burst's posting: 10,000 held, p99 17-30 s)."""
        request = waiting.pop() if waiting else self._queue.get()
        if request is None or request[0] != "check":
            return request
        held, probes = dict(request[1][0]), dict(request[1][1])
        while True:
            try:
                following = self._queue.get_nowait()
            except queue.Empty:
                break
            if following is None or following[0] != "check":
                waiting.append(following)
                break
            held.update(following[1][0])
            probes.update(following[1][1])
        return ("check", (held, probes))

    def _run(self) -> None:
        waiting: list = []
        while (request := self._next(waiting)) is not None:
            kind, value = request
            try:
                if kind == "check":
                    self._check(*value)
                elif kind == "scan":
                    for doc in polling.scan_recent(self.store, *value):
                        self.post(("recheck", doc))
                elif kind == "orphans":
                    self.post(("orphans", (value, self.find_orphans(value))))
            except Exception as exc:  # the next check, or the poll, will see it
                if isinstance(exc, StoreError):
                    log.warning("cannot read %s (%d): %s", kind, len(
                        value[0] if kind == "check" else value), describe_error(exc))
                else:  # (a bug: the loop must hear back all the same, or it waits for ever)
                    log.exception("unexpected error reading %s", kind)
                if kind == "orphans":  # taken as none: the partitions are not held up (each
                    self.post(("orphans", (value, [])))  # due task's are read by id: probes)
                elif kind == "check":  # read again: their runs wait for it
                    self.post(("confirmed", ({}, list(value[0]))))

    def _check(self, held: dict[str, str], probes: dict | None = None) -> None:
        if probes:  # (before the tasks are confirmed: what it finds is decided first)
            found = self.probe(probes)
            if found:
                self.post(("probed", found))
        now = self.store.revisions(list(held))
        current = {docid: rev for docid, rev in held.items() if now.get(docid) == rev}
        changed = [docid for docid in held if docid not in current]
        again = []
        docs = self.store.bulk_get(changed) if changed else {}
        for docid in changed:
            doc = docs.get(docid)
            if doc is None:
                # Deleted, or not on the copies that answered yet: on a cluster the feed
                # shows a write as soon as one copy has it, before the write is answered,
                # and a read that follows at once may find no copy with it (measured: 5 of
                # 300 tasks posted at once, dropped as deleted and run 24 s late by the
                # poll). Read alone from every copy, only a tombstone is a deletion; a task
                # on no copy that answered yet stays held, and is read again.
                try:
                    doc = parts.winner(self.store.leaves(docid))  # (None: all deleted)
                except NotFound:
                    again.append(docid)
                    continue
            if doc is not None and doc.get("_rev") == held[docid]:
                current[docid] = held[docid]  # found as held after all
            elif doc is not None \
                    and rules.rev_number(doc.get("_rev")) < rules.rev_number(held[docid]):
                again.append(docid)  # older than held (a write of ours answered 202, that
                # most copies have not got yet): read again until they have
            else:
                self.post(("recheck", doc) if doc is not None else ("deleted", docid))
        self.post(("confirmed", (current, again)))

    def find_orphans(self, owners: list[str]) -> list[tuple[dict, dict | None, str | None]]:
        """The open intents of ``owners`` in the runs database, each with its task now and
        the ``expires`` of its process's last heartbeat (None when it is gone): a process
        begins no run past it (see :func:`after.worker.intents.orphan`)."""
        found = []
        for owner in owners:
            found += list(self.store.find_all({"process": owner, "outcome": intents.INTENDED},
                                              db=self.runs))
        # On a cluster the query reads each range of its index from one copy: one that lags
        # (its node just came back) shows an intent withdrawn or recorded since as still
        # open, and a record written over it there would stand beside the withdrawal (chaos
        # seed 1934192822: a run recorded twice). Each is read back by id and decided as it
        # is now.
        return self._with_tasks(self._open_by_id([doc["_id"] for doc in found]))

    def probe(self, probes: dict[str, tuple[int, tuple]]
              ) -> list[tuple[dict, dict | None, str | None]]:
        """The open intents, read by id (a quorum read each on a cluster), that the
        processes of ``probes`` (task id -> (run number, processes)) wrote for those runs,
        each with its task and its process's ``expires`` (as :meth:`find_orphans`)."""
        return self._with_tasks(self._open_by_id(
            [docid for task, (number, owners) in probes.items() for owner in owners
             for docid in intents.expected(task, number, owner)]))

    def _open_by_id(self, ids: list[str]) -> list[dict]:
        """Of the intents ``ids``, those open now, read by id (``_bulk_get``, a page at a
        time: a quorum read each on a cluster)."""
        return [doc for doc in self.store.bulk_get(ids, db=self.runs).values()
                if doc.get("outcome") == intents.INTENDED]

    def _with_tasks(self, found: list[dict]) -> list[tuple[dict, dict | None, str | None]]:
        if not found:
            return []
        tasks = self.store.bulk_get(sorted({doc["task"] for doc in found
                                            if isinstance(doc.get("task"), str)}))
        expires = {process: self.last_expires(process) for process in
                   {doc.get("process") for doc in found if isinstance(doc.get("process"), str)}}
        return [(doc, tasks.get(doc.get("task")), expires.get(doc.get("process")))
                for doc in found]

    def last_expires(self, process: str) -> str | None:
        """The ``expires`` of the last heartbeat of ``process`` that landed, read from every
        copy on a cluster: a copy that lags would say an earlier end of its lease, and an
        intent of a run it began before that end would be withdrawn as never begun (None:
        no heartbeat left, or only its deletion)."""
        try:
            leaves = self.store.leaves(process, db=workers_db(self.store.db))
        except NotFound:
            return None
        found = [doc.get("expires") for doc in leaves
                 if not doc.get("_deleted") and isinstance(doc.get("expires"), str)]
        return max(found, key=lambda value: rules.instant(value) or EARLIEST, default=None)
