"""after.writes: batches of one turn's writes, sent together, answers sorted in order.

A fake store records each ``_bulk_docs`` request and the threads that sent them; no server."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from after.decide import Kind, Write
from after.store import BadRequest, Unavailable
from after.writes import Writer


@dataclass
class Settings:
    batch: int = 500
    write_concurrency: int = 2
    write_attempts: int = 3
    write_backoff: float = 0.5
    write_backoff_max: float = 30.0


class FakeStore:
    def __init__(self, conflict=(), refuse_request=(), down=False):
        self.requests: list[list[str]] = []
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        self.conflict, self.refuse_request, self.down = set(conflict), set(refuse_request), down

    def bulk_docs(self, docs):
        with self.lock:
            self.requests.append([d["_id"] for d in docs])
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.05)
            if self.down:
                raise Unavailable("down")
            if len(docs) > 1 and self.refuse_request & {d["_id"] for d in docs}:
                raise BadRequest("too large")
            return [{"id": d["_id"], "error": "conflict"} if d["_id"] in self.conflict
                    else {"id": d["_id"], "rev": "2-x", "ok": True} for d in docs]
        finally:
            with self.lock:
                self.in_flight -= 1


def writes(count):
    return [Write(Kind.START, {"_id": f"t{n:04d}", "_rev": "1-x"}) for n in range(count)]


def test_a_turn_of_writes_goes_out_in_requests_sent_together():
    store = FakeStore(conflict={"t0007"})
    sent = Writer(store, Settings(batch=500)).send(writes(1200), now=0.0)
    assert store.most_in_flight == 2
    assert sorted(len(r) for r in store.requests) == [200, 500, 500]
    assert len(sent.written) == 1199 and [w.doc["_id"] for w in sent.conflicted] == ["t0007"]
    assert [w.doc["_id"] for w in sent.written][:3] == ["t0000", "t0001", "t0002"]


def test_few_writes_are_one_request_and_one_concurrency_is_sequential():
    store = FakeStore()
    Writer(store, Settings()).send(writes(100), now=0.0)
    assert store.requests == [[f"t{n:04d}" for n in range(100)]]
    store = FakeStore()
    Writer(store, Settings(write_concurrency=1)).send(writes(1500), now=0.0)
    assert store.most_in_flight == 1 and len(store.requests) == 3


def test_a_refused_request_is_split_and_a_down_server_leaves_writes_pending():
    store = FakeStore(refuse_request={"t0003"})
    sent = Writer(store, Settings(batch=4, write_concurrency=2)).send(writes(8), now=0.0)
    assert len(sent.written) == 8  # the 4 of the refused request, one at a time
    assert [1, 1, 1, 1] == [len(r) for r in store.requests if len(r) == 1]
    writer = Writer(FakeStore(down=True), Settings(batch=4))
    sent = writer.send(writes(8), now=0.0)
    assert sent.written == [] and len(writer.pending) == 8
