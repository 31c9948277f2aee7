"""after.couch.store.Store._hedged: a request in flight to a node the store moves away from
is sent again to the node used now (no server: each node's answer is given by the test; a
frozen node of a real cluster is in tests/cluster/test_failover.py)."""

from __future__ import annotations

import threading
import time

import pytest

from after.couch.store import Store, StoreError


class Nodes:
    """Node 0 keeps every request until released (a SIGSTOPped node); node 1 answers."""

    def __init__(self):
        self.release, self.sent = threading.Event(), []

    def call(self, node):
        self.sent.append(node.index)
        if node.index == 0:
            self.release.wait(10)
            return "from 0"
        return "from 1"


def in_thread(fn):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("value", fn()), daemon=True)
    thread.start()
    return thread, box


def test_a_write_waiting_on_a_node_the_store_moved_away_from_is_sent_to_the_next():
    store = Store("http://127.0.0.1:9/t,http://127.0.0.1:10/t")
    nodes = Nodes()
    thread, box = in_thread(lambda: store._hedged(nodes.call))
    time.sleep(0.3)
    assert thread.is_alive() and nodes.sent == [0]  # waits on node 0 while nothing moved
    began = time.monotonic()
    store.failed(store.nodes[0], "a heartbeat found it frozen")
    thread.join(2)
    assert box == {"value": "from 1"} and nodes.sent == [0, 1]
    assert time.monotonic() - began < 1.0
    nodes.release.set()


def test_the_first_answer_of_the_two_is_taken_and_a_failure_of_one_is_not_the_answer():
    store = Store("http://127.0.0.1:9/t,http://127.0.0.1:10/t")
    sent = []

    def call(node):
        sent.append(node.index)
        if node.index == 1:
            raise StoreError("refused on node 1")
        time.sleep(0.5)
        return "from 0"

    thread, box = in_thread(lambda: store._hedged(call))
    time.sleep(0.15)
    store.failed(store.nodes[0], "slow")
    thread.join(3)
    assert box == {"value": "from 0"} and sent == [0, 1]


def test_a_failure_with_no_move_is_raised_and_one_node_sends_once():
    store = Store("http://127.0.0.1:9/t,http://127.0.0.1:10/t")

    def refused(node):
        raise StoreError("bad request")

    with pytest.raises(StoreError, match="bad request"):
        store._hedged(refused)
    single, sent = Store("http://127.0.0.1:9/t"), []
    assert single._hedged(lambda node: sent.append(threading.current_thread()) or "ok") == "ok"
    assert sent == [threading.current_thread()]  # (no thread of its own)
