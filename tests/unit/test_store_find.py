"""after.couch.store.Store.find_all over the answers pouchdb-server gives (no server: the
query's answers are given; the requests a real server gets are in tests/integration)."""

from __future__ import annotations

from after.couch.store import Store


class Pages:
    """A database whose ``_find`` answers the pages given, recording each page's skip."""

    def __init__(self, pages: list[list]):
        self.pages, self.skips = pages, []

    def find(self, selector, *, limit, skip, **options):
        self.skips.append(skip)
        return {"docs": self.pages[len(self.skips) - 1]}


def test_a_null_in_a_find_answer_is_left_out_and_paging_still_counts_it():
    """pouchdb-server's ``_find`` sends ``null`` for a document deleted between its index
    and its read (an intent withdrawn while a successor queries the open ones): left out,
    and the next page still starts after it (a page short of one is not the last)."""
    database = Pages([[{"_id": "a"}, None], [{"_id": "c"}]])
    store = Store("http://127.0.0.1:9/t")
    store._couchdb3 = lambda call, db: call(database)
    assert [doc["_id"] for doc in store.find_all({"x": 1}, page=2)] == ["a", "c"]
    assert database.skips == [0, 2]
