"""Sending the worker's task writes: batches, answers sorted, bounded retries.

:class:`Writer` sends :class:`~after.decide.Write` s in ``_bulk_docs`` batches and sorts the
answers for the loop (:class:`Sent`): written, conflicted (to re-read and decide again),
refused by the database (the task ends ``error`` saying why) and failed for another reason
(tried again with backoff a bounded number of times, then given up). A failure of one write
is that write's task's alone: the others of the batch go on.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import task as rules
from .dates import from_ms
from .decide import Kind, Write
from .redact import redact_text
from .store import StoreError, Unavailable, describe_error

log = logging.getLogger("after.worker")


@dataclass
class Sent:
    written: list[Write] = field(default_factory=list)
    conflicted: list[Write] = field(default_factory=list)
    errors: list[Write] = field(default_factory=list)  # ERROR writes for refused ones
    forget: list[str] = field(default_factory=list)  # tasks to forget and decide again
    faults: int = 0  # writes given up


class Writer:
    def __init__(self, store, settings):
        self.store = store
        self.settings = settings
        self.pending: list[Write] = []  # to try again, each after its ``not_before``
        # Batches of one turn go out together: CouchDB validates each request's documents
        # in a JavaScript process of its own, so two requests use two cores.
        self.concurrency = max(1, int(getattr(settings, "write_concurrency", 1)))
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="after-write") \
            if self.concurrency > 1 else None

    def single(self) -> None:
        """One request at a time from now on (on a cluster: see Worker.run)."""
        self.concurrency, pool, self._pool = 1, self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _post_all(self, chunks: list[list[Write]]) -> list:
        """Send each chunk; for each, its results or the exception it raised."""
        def post(chunk):
            try:
                return self.store.bulk_docs([w.doc for w in chunk])
            except (StoreError, ValueError, RecursionError) as exc:
                return exc

        if self._pool is None or len(chunks) < 2:
            return [post(chunk) for chunk in chunks]
        return list(self._pool.map(post, chunks))

    def ready(self, now: float) -> list[Write]:
        """Take the pending writes whose backoff is over (``now`` in epoch seconds)."""
        ready = [w for w in self.pending if w.not_before <= now]
        self.pending = [w for w in self.pending if w.not_before > now]
        return ready

    def send(self, writes: list[Write], now: float) -> Sent:
        sent = Sent()
        writes, later = unique_ids(writes)
        for write in later:
            # Two decisions on one task in the same turn (its feed change and a poll's copy):
            # one request must not carry both (pouchdb-server would branch the document).
            # The later one is decided again once the first has landed.
            if write.kind is not Kind.RESOLVE:
                sent.conflicted.append(write)
            else:
                self.pending.append(write)
        size = self.settings.batch
        if self._pool is not None and len(writes) > size // 2:
            # at least as many chunks as requests in flight, so that they go together
            size = min(size, max(50, -(-len(writes) // self.concurrency)))
        chunks = [writes[i:i + size] for i in range(0, len(writes), size)]
        answers = self._post_all(chunks)
        while chunks:
            chunk = chunks.pop(0)
            answer = answers.pop(0) if answers else None
            try:
                if answer is None:  # a chunk split below: sent on its own
                    answer = self._post_all([chunk])[0]
                if isinstance(answer, BaseException):
                    raise answer
                results = answer
            except Unavailable as exc:
                log.warning("cannot write %d task update(s) yet: %s", len(chunk),
                            describe_error(exc))
                self.later(chunk, describe_error(exc), now, sent, server=True)
                continue
            except (StoreError, ValueError, RecursionError) as exc:
                # The request itself was refused (too large, not JSON...): find the write at
                # fault by sending them one at a time.
                if len(chunk) > 1:
                    chunks[:0] = [[write] for write in chunk]
                    answers[:0] = [None] * len(chunk)
                    continue
                reason = describe_error(exc) if isinstance(exc, StoreError) \
                    else f"{type(exc).__name__}: {exc}"
                self.refused(chunk[0], f"the database refused the update: {reason}", now,
                             sent)
                continue
            for write, result in zip(chunk, results, strict=True):
                self._sort(write, result, now, sent)
        return sent

    def _sort(self, write: Write, result: dict, now: float, sent: Sent) -> None:
        error = result.get("error")
        if write.kind is Kind.RESOLVE:
            return  # done, or someone else resolved it first
        if error is None:
            write.accepted = bool(result.get("accepted"))
            sent.written.append(write)
        elif error == "conflict":
            sent.conflicted.append(write)
        elif error == "forbidden":
            self.refused(write, result.get("reason") or "refused by the database", now, sent)
        else:
            self.later([write], f"{error}: {result.get('reason')}", now, sent)

    def refused(self, write: Write, reason: str, now: float, sent: Sent) -> None:
        """The database will not take this write: the task ends ``error`` saying why (or,
        when even that is refused, it is left alone and forgotten)."""
        docid = write.doc["_id"]
        sent.forget.append(docid)
        reason = redact_text(str(reason))[:500]
        if write.kind is Kind.ERROR:
            log.error("task %s: even its error was refused: %s", docid, reason)
            return
        log.warning("task %s: %s write refused: %s", docid, write.kind.value, reason)
        sent.errors.append(Write(Kind.ERROR, rules.mark_error(write.doc, reason,
                                                               from_ms(int(now * 1000)))))

    def later(self, writes: list[Write], why: str, now: float, sent: Sent,
              server: bool = False) -> None:
        """Writes that failed for another reason than a conflict: tried again with backoff
        a few times, then given up (never requeued for ever). Given up because the server
        is unreachable, the task is forgotten and decided again from what the database
        holds on the next poll; refused for its own sake, it ends ``error``."""
        settings = self.settings
        for write in writes:
            write.attempts += 1
            docid = write.doc["_id"]
            if write.attempts < settings.write_attempts:
                write.not_before = now + min(settings.write_backoff_max,
                                             settings.write_backoff * 2 ** (write.attempts - 1))
                self.pending.append(write)
                continue
            sent.faults += 1
            if server or write.kind in (Kind.ERROR, Kind.RESOLVE):
                log.error("task %s: giving up on its %s write after %d failures (%s); it will "
                          "be decided again from the database", docid, write.kind.value,
                          write.attempts, why)
                sent.forget.append(docid)
                continue
            self.refused(write, f"the database failed this task's update {write.attempts} "
                                f"times: {why}", now, sent)


def unique_ids(writes: list[Write]) -> tuple[list[Write], list[Write]]:
    """The writes with the first of each document id, and the others."""
    first, later, ids = [], [], set()
    for write in writes:
        (later if write.doc["_id"] in ids else first).append(write)
        ids.add(write.doc["_id"])
    return first, later
