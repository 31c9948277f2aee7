"""Sending the worker's task writes, off its loop: batches, answers, bounded retries.

The loop hands :class:`~after.worker.runs.Write` s to :meth:`Writer.send` and goes on; the
writer's threads send them in ``_bulk_docs`` batches (at most ``batch`` documents a request,
``concurrency`` requests in flight: the heartbeat, on its own connection, never waits behind
more) and post each batch's answers back to the loop as ``("written", [(write, Answer)...])``.
A conflict's answer carries the task as it is now (read on the writer's thread, so the loop
never waits on the server); a write the server refused says why; one that failed for another
reason is tried again with backoff a bounded number of times, then given up. A failure of one
write is that write's task's alone: the others of the batch go on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from after.couch.store import StoreError, Unavailable, describe_error
from after.rules.redact import redact_text
from after.worker.runs import Write

log = logging.getLogger("after.worker")


@dataclass
class Answer:
    """What became of one write."""

    ok: bool = False
    accepted: bool = False  # written, not confirmed by a quorum (202 on a cluster)
    conflict: bool = False
    fresh: dict | None = None  # after a conflict: the task now (None: deleted, or unread)
    refused: str | None = None  # the database's reason (validation)
    failed: str | None = None  # given up after repeated failures


class Writer:
    def __init__(self, store, post: Callable[[tuple], None], *, batch: int = 500,
                 concurrency: int = 1, attempts: int = 6, backoff: float = 0.5,
                 backoff_max: float = 30.0, db: str | None = None):
        self.store, self.post, self.batch = store, post, max(1, batch)
        self.db = db  # the database written (None: the store's, the tasks')
        self.attempts, self.backoff, self.backoff_max = attempts, backoff, backoff_max
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"after-write-{n}",
                                          daemon=True) for n in range(max(1, concurrency))]
        self._lock = threading.Lock()
        self.inflight = 0  # writes handed over and not answered yet (read by the loop)

    def start(self) -> Writer:
        for thread in self._threads:
            thread.start()
        return self

    def send(self, writes: list[Write]) -> None:
        if not writes:
            return
        with self._lock:
            self.inflight += len(writes)
        for write in writes:
            self._queue.put((write, 0))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop once what was handed over is answered (or ``timeout`` passes)."""
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            if thread.ident is not None:  # (started)
                thread.join(max(0.0, deadline - time.monotonic()) + 0.1)

    # -- the threads ------------------------------------------------------------------------

    def _take(self, delayed: list) -> list[tuple[Write, int]] | None:
        """The next batch: what is queued and what waited out its backoff (``delayed``:
        ``(not_before, item)``), up to ``batch`` writes; waits for the first."""
        while True:
            now = time.monotonic()
            ready = [item for at, item in delayed if at <= now]
            if ready:
                delayed[:] = [(at, item) for at, item in delayed if at > now]
                first = ready.pop(0)
                for item in ready:
                    self._queue.put(item)
                break
            wait = min(at for at, _ in delayed) - now if delayed else None
            try:
                first = self._queue.get(timeout=wait)
            except queue.Empty:
                continue
            break
        if first is None:
            return None
        batch, ids = [first], {first[0].docid}
        while len(batch) < self.batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)
                break
            if item[0].docid in ids:  # (the loop never sends one task twice; be sure)
                self._queue.put(item)
                break
            batch.append(item)
            ids.add(item[0].docid)
        return batch

    def _run(self) -> None:
        delayed: list = []  # (not_before, item): writes waiting out a backoff
        while True:
            batch = self._take(delayed)
            if batch is None:
                for _, (write, _tries) in delayed:
                    self._answer([(write, Answer(failed="the worker stopped"))])
                return
            try:
                self._send(batch, delayed)
            except Exception:  # the writes must not die of a bug: give each back as failed
                log.exception("unexpected error writing %d task update(s)", len(batch))
                self._answer([(w, Answer(failed="unexpected error")) for w, _ in batch])

    def _answer(self, answers: list[tuple[Write, Answer]]) -> None:
        if answers:
            with self._lock:
                self.inflight -= len(answers)
            self.post(("written", answers))

    def _send(self, batch: list[tuple[Write, int]], delayed: list) -> None:
        try:
            results = self.store.bulk_docs([w.doc for w, _ in batch], db=self.db)
        except Unavailable as exc:
            self._later(batch, describe_error(exc), delayed, server=True)
            return
        except (StoreError, ValueError, RecursionError) as exc:
            if len(batch) > 1:  # the request itself refused (too large...): one at a time
                for item in batch:
                    self._send([item], delayed)
                return
            reason = describe_error(exc) if isinstance(exc, StoreError) \
                else f"{type(exc).__name__}: {exc}"
            self._answer([(batch[0][0], Answer(refused=f"the database refused the update: "
                                                       f"{redact_text(reason)[:500]}"))])
            return
        answers, conflicted, again = [], [], []
        for (write, tries), result in zip(batch, results, strict=True):
            error = result.get("error")
            if error is None:
                answers.append((write, Answer(ok=True, accepted=bool(result.get("accepted")))))
            elif error == "conflict":
                conflicted.append(write)
            elif error == "forbidden":
                answers.append((write, Answer(refused=redact_text(
                    str(result.get("reason") or "refused by the database"))[:500])))
            else:
                again.append(((write, tries), f"{error}: {result.get('reason')}"))
        if conflicted:
            answers.extend(self._reread(conflicted))
        self._answer(answers)
        for item, why in again:
            self._later([item], why, delayed)

    def _reread(self, writes: list[Write]) -> list[tuple[Write, Answer]]:
        """The tasks whose writes conflicted, as they are now (one request)."""
        try:
            current = self.store.bulk_get([w.docid for w in writes], db=self.db)
        except (StoreError, ValueError) as exc:
            log.warning("cannot re-read %d conflicting task(s) yet: %s", len(writes),
                        describe_error(exc))
            current = {}
        return [(w, Answer(conflict=True, fresh=current.get(w.docid))) for w in writes]

    def _later(self, batch: list[tuple[Write, int]], why: str, delayed: list,
               server: bool = False) -> None:
        """Failed for another reason than a conflict: tried again after a backoff, a few
        times, then given up. Given up because the server cannot be reached, the task is
        decided again from the database (``failed``); because of the write itself (an error
        of that one document), it is refused: the task ends ``error`` saying why."""
        retry, given_up = [], []
        for write, tries in batch:
            (retry if tries + 1 < self.attempts else given_up).append((write, tries + 1))
        if given_up and server:
            log.error("giving up on %d task update(s) after %d failures (%s); they will be "
                      "decided again from the database", len(given_up), self.attempts, why)
            self._answer([(w, Answer(failed=why)) for w, _ in given_up])
        elif given_up:
            self._answer([(w, Answer(refused=redact_text(
                f"the database failed this task's update {tries} times: {why}")[:500]))
                for w, tries in given_up])
        if retry:
            tries = min(t for _, t in retry)
            log.warning("cannot write %d task update(s) yet: %s", len(retry), why)
            at = time.monotonic() + min(self.backoff_max, self.backoff * 2 ** (tries - 1))
            delayed.extend((at, item) for item in retry)
