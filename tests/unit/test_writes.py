"""after.worker.writer: task writes sent off the loop, in batches, answered by posting.

A fake store records each ``_bulk_docs`` request and the threads that sent them; no server."""

from __future__ import annotations

import queue
import threading
import time

from after.couch.store import BadRequest, Unavailable
from after.worker.runs import Kind, Write
from after.worker.writer import Writer


class FakeStore:
    def __init__(self, conflict=(), refuse_request=(), down=0, refuse_doc=(), delay=0.02):
        self.requests: list[list[str]] = []
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        self.conflict, self.refuse_request = set(conflict), set(refuse_request)
        self.refuse_doc, self.down, self.delay = set(refuse_doc), down, delay

    def bulk_docs(self, docs, db=None):
        with self.lock:
            self.requests.append([d["_id"] for d in docs])
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            if self.down:
                self.down -= 1
                raise Unavailable("down")
            if len(docs) > 1 and self.refuse_request & {d["_id"] for d in docs}:
                raise BadRequest("too large")
            return [{"id": d["_id"], "error": "conflict"} if d["_id"] in self.conflict
                    else {"id": d["_id"], "error": "forbidden", "reason": "no"}
                    if d["_id"] in self.refuse_doc
                    else {"id": d["_id"], "rev": "2-x", "ok": True} for d in docs]
        finally:
            with self.lock:
                self.in_flight -= 1

    def bulk_get(self, ids, db=None):
        return {docid: {"_id": docid, "_rev": "3-theirs"} for docid in ids}


def writes(count):
    return [Write(Kind.FINISH, {"_id": f"t{n:04d}", "_rev": "1-x"}) for n in range(count)]


def answers(inbox: queue.SimpleQueue, count: int, timeout: float = 10) -> dict:
    """The answers posted, by task id, once there are ``count``."""
    got, deadline = {}, time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        try:
            kind, value = inbox.get(timeout=0.1)
        except queue.Empty:
            continue
        assert kind == "written"
        for write, answer in value:
            assert write.docid not in got, "answered twice"
            got[write.docid] = answer
    return got


def test_writes_go_out_in_batches_and_each_is_answered_once():
    store, inbox = FakeStore(conflict={"t0007"}), queue.SimpleQueue()
    writer = Writer(store, inbox.put, batch=500, concurrency=2).start()
    writer.send(writes(1200))
    got = answers(inbox, 1200)
    writer.stop()
    assert len(got) == 1200 and writer.inflight == 0
    assert all(len(r) <= 500 for r in store.requests) and store.most_in_flight <= 2
    assert sum(len(r) for r in store.requests) == 1200
    assert got["t0007"].conflict and got["t0007"].fresh == {"_id": "t0007", "_rev": "3-theirs"}
    assert all(a.ok for k, a in got.items() if k != "t0007")


def test_one_thread_sends_one_request_at_a_time():
    store, inbox = FakeStore(), queue.SimpleQueue()
    writer = Writer(store, inbox.put, batch=100, concurrency=1).start()
    for write in writes(300):
        writer.send([write])
    answers(inbox, 300)
    writer.stop()
    assert store.most_in_flight == 1


def test_a_refused_request_is_split_and_a_refused_document_says_why():
    store, inbox = FakeStore(refuse_request={"t0003"}, refuse_doc={"t0005"}), \
        queue.SimpleQueue()
    writer = Writer(store, inbox.put, batch=4, concurrency=1).start()
    writer.send(writes(8))
    got = answers(inbox, 8)
    writer.stop()
    assert [len(r) for r in store.requests].count(1) >= 4  # the refused request, one by one
    assert got["t0005"].refused == "no" and not got["t0005"].ok
    assert sum(a.ok for a in got.values()) == 7


def test_a_server_that_comes_back_gets_the_writes_and_one_that_stays_down_gives_up():
    store, inbox = FakeStore(down=2), queue.SimpleQueue()
    writer = Writer(store, inbox.put, batch=10, concurrency=1, attempts=4, backoff=0.01).start()
    writer.send(writes(5))
    got = answers(inbox, 5)
    assert all(a.ok for a in got.values()) and len(store.requests) == 3
    store.down = 10
    writer.send(writes(2))
    got = answers(inbox, 2)
    writer.stop()
    assert all(a.failed == "down" for a in got.values())
    assert len(store.requests) == 3 + 4  # tried 4 times, then given up


def test_the_writer_posts_while_a_slow_server_answers():
    """The caller never waits: send returns at once, whatever the server's delay."""
    store, inbox = FakeStore(delay=0.5), queue.SimpleQueue()
    writer = Writer(store, inbox.put, batch=10, concurrency=1).start()
    started = time.monotonic()
    writer.send(writes(5))
    assert time.monotonic() - started < 0.05 and writer.inflight == 5
    answers(inbox, 5)
    writer.stop()
