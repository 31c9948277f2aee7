"""The worker's loop, driven by hand against the in-memory store (:mod:`after.memstore`).

No server, no threads, no sleeps: each step sets the instant, fires the timer entries due
then (:meth:`Timer.fire_due`), delivers the feed's changes (:meth:`MemFollower.deliver`) and
turns the loop (:meth:`Worker.turn` with ``now``) until nothing is left to do; jobs run at
once on the loop's thread (:class:`Inline`). What the store does is held to CouchDB's by
``tests/integration/test_store_contract.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from after import schema
from after import task as rules
from after.config import Settings, runs_db
from after.dates import format_date, parse_date, to_ms, utcnow
from after.holding import RUN
from after.jobs import JobRegistry
from after.memstore import MemStore
from after.polling import query_due
from after.worker import Worker

JOBS = Path(__file__).resolve().parents[2] / "jobs"
OTHER = "w@elsewhere:4242:abcdef"  # another process of the same worker name


class Inline:
    """A job pool that runs each job at once, on the caller's thread: its end is in the
    loop's inbox before the launch returns."""

    def submit(self, fn, *args):
        fn(*args)

    def shutdown(self, **ignored):
        pass


class Vanishing(Inline):
    """A job pool whose threads die at once without a word: no run, no end posted."""

    def __init__(self, runner):
        self.runner = runner

    def submit(self, fn, docid, token, *args):
        self.runner.ended(token)


class Hung:
    """A job pool of ``threads`` threads whose jobs never return: the first runs begin and
    hang, the others wait in its queue (cancellable, as ThreadPoolExecutor's)."""

    def __init__(self, runner, threads: int, at: Callable[[], datetime]):
        self.runner, self.threads, self.at, self.queued = runner, threads, at, []

    def submit(self, fn, docid, token, *args):
        future = Future()
        if self.threads:
            self.threads -= 1
            future.set_running_or_notify_cancel()
            self.runner.begun[token] = to_ms(self.at())
        else:
            self.queued.append((docid, future))
        return future

    def shutdown(self, **ignored):
        pass


class Manual:
    """A job pool whose jobs run when the test says so (``finish``), on its thread."""

    def __init__(self):
        self.queued = []

    def submit(self, fn, *args):
        self.queued.append((fn, args))
        future = Future()
        future.set_running_or_notify_cancel()
        return future

    def finish(self) -> list[str]:
        done, self.queued = self.queued, []
        for fn, args in done:
            fn(*args)
        return [args[0] for _, args in done]

    def shutdown(self, **ignored):
        pass


class Refusing(MemStore):
    """A store whose validation refuses any write of a task to ``running``."""

    def bulk_docs(self, docs, *, db=None, new_edits=True):
        if (db or self.db) != self.db:
            return super().bulk_docs(docs, db=db, new_edits=new_edits)
        allowed = [d for d in docs if d.get("status") != "running"]
        answers = iter(super().bulk_docs(allowed, db=db, new_edits=new_edits))
        return [{"id": d["_id"], "error": "forbidden", "reason": "running: not on this test"}
                if d.get("status") == "running" else next(answers) for d in docs]


class Racing(MemStore):
    """A store where another process's write lands just before the worker's next write of
    the same task (``race[docid]``: a function of the current document)."""

    def __init__(self, db):
        super().__init__(db)
        self.race: dict = {}

    def bulk_docs(self, docs, *, db=None, new_edits=True):
        for doc in docs:
            theirs = self.race.pop(doc.get("_id"), None)
            if theirs is not None:
                self.put(theirs(self.get(doc["_id"])))
        return super().bulk_docs(docs, db=db, new_edits=new_edits)


class Freezing(MemStore):
    """A store where, once the worker's write of a task has landed, this process is frozen
    (its monotonic clock jumps ``frozen[docid]`` seconds) while another process takes the
    task over (``then[docid]``, a function of the current document); then the answer comes."""

    def __init__(self, db, mono: list[float]):
        super().__init__(db)
        self.mono, self.frozen, self.then = mono, {}, {}

    def bulk_docs(self, docs, *, db=None, new_edits=True):
        answers = super().bulk_docs(docs, db=db, new_edits=new_edits)
        for doc in docs:
            if doc.get("_id") in self.then and doc.get("status") == "running":
                self.mono[0] += self.frozen.pop(doc["_id"])
                self.put(self.then.pop(doc["_id"])(self.get(doc["_id"])))
        return answers


class Loop:
    """One worker process, its store and its clock, turned by hand. Its heartbeat is
    written once, at the start (as Worker.run does), at monotonic ``mono[0]``."""

    def __init__(self, store: MemStore, tmp: Path, now: datetime, lead: float = 0,
                 mono: list[float] | None = None):
        schema.setup(store)
        self.store, self.now, self.trace = store, now, tmp / "runs.jsonl"
        self.worker = Worker(store, "w", JobRegistry(JOBS),
                             Settings(horizon=60, pool=2, lead=lead))
        self.mono = mono if mono is not None else [1000.0]
        self.worker.peers.mono = lambda: self.mono[0]
        self.worker.peers.beat(self.worker.status(), force=True)
        self.worker.runner.pool = Inline()
        self.reads: list[str] = []  # tasks read back (every leaf) before running them
        leaves = store.leaves
        store.leaves = lambda docid, **kw: self.reads.append(docid) or leaves(docid, **kw)
        self.feed = store.follow(self.worker._on_change, since=store.update_seq(),
                                 selector={"worker": "w"})

    def put(self, docid: str, at: datetime, **fields) -> dict:
        doc = {"_id": docid, "worker": "w", "date": format_date(at), "status": "waiting",
               "job": {"name": "record", "arguments": [str(self.trace)]}, **fields}
        self.store.put(doc)
        return doc

    def step(self, at: datetime | None = None) -> None:
        """Move the clock to ``at``, then turn until the loop has nothing left to do."""
        self.now = at or self.now
        for turns in range(50):
            fired = self.worker.timer.fire_due(to_ms(self.now))
            delivered = self.feed.deliver()
            if turns and not fired and not delivered and self.worker.inbox.empty():
                return
            self.worker.turn(wait=0, now=self.now)  # the first even with nothing to do
        raise AssertionError("the loop never settled")

    def poll(self) -> None:
        """What the poller's thread would post: every task the ``due`` view holds."""
        for doc in query_due(self.store, "w", self.worker.settings, self.now)[0]:
            self.worker.inbox.put(("recheck", doc))
        self.step()

    def doc(self, docid: str) -> dict:
        return self.store.get(docid)

    def ran(self) -> list[dict]:
        """The job's own trace: one line per time it ran."""
        if not self.trace.exists():
            return []
        return [json.loads(line) for line in self.trace.read_text().splitlines()]

    def runs_all(self) -> list[dict]:
        self.worker.recorder.stop()
        docs, _ = self.store.find({"type": "run"}, db=runs_db(self.store.db), limit=1000)
        return docs

    def runs(self, docid: str) -> list[dict]:
        """The task's run records, once the recorder (never started) has written them."""
        self.worker.recorder.stop()
        docs, _ = self.store.find({"task": docid}, db=runs_db(self.store.db), limit=100)
        return sorted(docs, key=lambda r: r["number"])


@pytest.fixture
def now() -> datetime:
    return utcnow().replace(microsecond=0)


@pytest.fixture
def loop(tmp_path, now) -> Loop:
    return Loop(MemStore("tasks"), tmp_path, now)


def later(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def test_a_task_due_now_is_claimed_run_once_and_ends_done_with_a_run_record(loop, now):
    loop.put("t", now)
    loop.step()
    doc = loop.doc("t")
    assert doc["status"] == "done", doc
    assert doc[rules.NS]["runs"] == 1 and doc[rules.NS]["last_run"]["outcome"] == rules.OK
    assert [r["id"] for r in loop.ran()] == ["t"]
    [run] = loop.runs("t")
    assert run["outcome"] == rules.OK and run["number"] == 1 and run["worker"] == "w"
    assert run["process"] == loop.worker.id
    assert parse_date(run["scheduled"]) == now
    assert loop.worker.held == {} and loop.worker.counts["claimed"] == 1
    loop.step(later(now, 5))
    loop.poll()  # the safety net finds nothing more to do
    assert len(loop.ran()) == 1 and loop.doc("t")["_rev"] == doc["_rev"]


def test_a_future_task_is_held_and_fires_at_its_date(loop, now):
    due = later(now, 30.25)
    loop.put("t", due)
    loop.step()
    doc = loop.doc("t")
    assert doc["status"] == "scheduled" and doc[rules.NS]["owner"] == loop.worker.id
    assert loop.worker.timer.snapshot() == [((RUN, "t"), to_ms(due), None)]
    loop.step(due - timedelta(milliseconds=1))
    assert loop.ran() == [] and loop.doc("t")["status"] == "scheduled"
    loop.step(due)
    assert loop.doc("t")["status"] == "done" and len(loop.ran()) == 1
    [run] = loop.runs("t")
    assert parse_date(run["scheduled"]) == due and parse_date(run["started"]) >= now


def test_a_claim_that_loses_to_another_process_is_decided_again_not_run(tmp_path, now):
    store = Racing("tasks")
    loop = Loop(store, tmp_path, now)
    # the other process started a moment ago: its heartbeat is written, not yet in the cache
    store.put({"_id": OTHER, "type": "worker", "name": "w"}, db=f"{store.db}_workers")
    loop.put("t", now)
    store.race["t"] = lambda doc: rules.claim(doc, OTHER, now, now)
    loop.feed.deliver()
    loop.worker.turn(wait=0, now=now)  # one turn: the claim conflicts, is re-read, decided
    doc = loop.doc("t")
    assert doc["status"] == "scheduled" and doc[rules.NS]["owner"] == OTHER, doc
    assert [d["_rev"] for d in loop.worker.awaiting[OTHER]] == [doc["_rev"]]
    assert loop.ran() == [] and "t" not in loop.worker.held
    loop.worker.peers.confirm(OTHER)  # what the peers' thread does when asked
    loop.worker.inbox.put(("peer", OTHER))
    loop.step()
    assert loop.worker.awaiting == {}
    assert loop.ran() == [] and loop.runs("t") == []
    assert "t" not in loop.worker.held and (RUN, "t") not in loop.worker.timer
    assert loop.worker.counts["claimed"] == 0
    loop.step(later(now, 5))
    loop.poll()
    assert loop.ran() == [] and loop.doc("t")["_rev"] == doc["_rev"]


def test_a_process_back_from_a_lapse_of_its_lease_hands_back_what_it_held_then_holds_off(
        tmp_path, now):
    """Starts written in the lead window, then SIGSTOP for longer than the lease: another
    process took one task over meanwhile, and may go on taking over on the word that this
    one is dead for a moment after it is back. On thaw (its heartbeat first), this process
    hands back what it held, begins nothing, and holds off for a lease: the task taken
    over stays the other's (the hand-back conflicts), the other is ``waiting`` again, and
    runs here, once, when the holding off is over."""
    loop = Loop(MemStore("tasks"), tmp_path, now, lead=2)
    for docid in ("frozen", "fresh"):
        loop.put(docid, later(now, 10))
    loop.step()
    loop.step(later(now, 8.5))  # inside the lead window: both starts are written
    assert loop.doc("frozen")["status"] == "running" == loop.doc("fresh")["status"]
    assert loop.worker.held["frozen"].waiting_to_launch
    theirs = rules.start(rules.claim(loop.doc("frozen"), OTHER, later(now, 10), now), OTHER,
                         later(now, 12), 1)
    loop.store.put(theirs)  # taken over while this process was frozen
    loop.mono[0] += 30  # frozen for 30 s, past the lease (6 s)
    loop.worker.peers.beat(loop.worker.status())  # on thaw, the heartbeat goes first
    assert loop.worker.peers.lapses == 1
    loop.worker.timer.fire_due(to_ms(later(now, 10)))
    loop.worker.turn(wait=0, now=later(now, 10))  # the timer first: before the feed's news
    loop.step(later(now, 10))
    assert loop.ran() == [] and loop.worker.held == {} and loop.worker.away()
    assert loop.doc("frozen")["_rev"] == theirs["_rev"]
    assert loop.doc("fresh")["status"] == "waiting"
    loop.poll()  # holding off: it claims nothing
    assert loop.doc("fresh")["status"] == "waiting" and loop.ran() == []
    for _ in range(6):  # a lease later, its heartbeats going on every second
        loop.mono[0] += 1
        loop.worker.peers.beat(loop.worker.status())
    assert loop.worker.peers.lapses == 1
    loop.step(later(now, 16))
    assert not loop.worker.away()
    loop.poll()
    assert [r["id"] for r in loop.ran()] == ["fresh"] and loop.doc("fresh")["status"] == "done"
    assert loop.doc("frozen")["_rev"] == theirs["_rev"]


@pytest.mark.parametrize("lead", [0, 2])
def test_a_start_answered_after_the_process_thawed_is_handed_back_not_run(tmp_path, now,
                                                                          lead):
    """Frozen (SIGSTOP) between a start's request and its answer, past the lease: another
    process took the task over meanwhile, and the heartbeat written on thaw says nothing of
    that time. The start is handed back, never begun (CI once saw 10 tasks run twice so:
    the answer read as written 'just now'); the hand-back of the one taken over conflicts,
    and it stays the other's."""
    mono = [1000.0]
    store = Freezing("tasks", mono)
    loop = Loop(store, tmp_path, now, lead=lead, mono=mono)
    loop.put("t", later(now, 10))
    loop.put("ok", later(now, 10))
    loop.step()
    assert loop.doc("t")["status"] == "scheduled"

    def takeover(doc):
        loop.worker.peers.beat(loop.worker.status())  # the heartbeat, on thaw
        return rules.start(rules.claim(doc, OTHER, later(now, 10), now), OTHER,
                           later(now, 12), 1)

    store.frozen["t"], store.then["t"] = 30, takeover
    loop.step(later(now, 10 - lead / 2))  # the start (ahead, with a lead) is written
    loop.step(later(now, 10))
    assert loop.ran() == [] and loop.reads == []
    assert loop.doc("t")[rules.NS]["owner"] == OTHER and loop.doc("t")["status"] == "running"
    assert loop.doc("ok")["status"] == "waiting"  # both were in the request the freeze held up


@pytest.mark.parametrize("frozen", [False, True])
def test_a_run_queued_for_a_thread_while_the_process_froze_is_not_begun_but_handed_back(
        tmp_path, now, frozen):
    """A run waits in the job threads' queue; the process is frozen past its lease and
    another process takes the task over. On thaw a thread comes to the queued run: it does
    not begin it (the lease it was launched under may have run out), and the loop hands
    the task back, which conflicts with the new owner's write: the task is theirs, run
    nowhere here. Not frozen, the same run begins as usual."""
    loop = Loop(MemStore("tasks"), tmp_path, now)
    loop.worker.runner.pool = pool = Manual()
    loop.put("t", now)
    loop.step()
    assert loop.doc("t")["status"] == "running" and len(pool.queued) == 1
    if frozen:
        theirs = rules.start(rules.claim(loop.doc("t"), OTHER, now, now), OTHER,
                             later(now, 7), 1)
        loop.store.put(theirs)
        loop.mono[0] += 30
        loop.worker.peers.beat(loop.worker.status())  # on thaw, the heartbeat goes first
    assert pool.finish() == ["t"]  # a thread comes to it
    loop.step(later(now, 7))
    if not frozen:
        assert [r["id"] for r in loop.ran()] == ["t"] and loop.doc("t")["status"] == "done"
        assert loop.worker.counts["handed_back"] == 0
        return
    assert loop.ran() == [] and loop.worker.counts["handed_back"] == 1
    assert loop.doc("t")["_rev"] == theirs["_rev"]
    assert loop.doc("t")[rules.NS]["owner"] == OTHER
    assert loop.worker.runner.active == set() and "t" not in loop.worker.held


def test_starts_are_written_ahead_for_more_tasks_than_the_pool_has_threads(tmp_path, now):
    """A fence holds no job thread until its due instant (the pool queues the launches
    then): 5 tasks due at one instant are all started ahead by a pool of 2. Reserving a
    thread per fence wrote 2 per turn, and a 500-task burst ran 1.1 s late."""
    loop = Loop(MemStore("tasks"), tmp_path, now, lead=2)
    for i in range(5):
        loop.put(f"t{i}", later(now, 10))
    loop.step()
    loop.step(later(now, 8.5))  # inside the lead window
    assert [loop.doc(f"t{i}")["status"] for i in range(5)] == ["running"] * 5
    assert all(loop.worker.held[f"t{i}"].waiting_to_launch for i in range(5))
    loop.step(later(now, 10))
    assert sorted(r["id"] for r in loop.ran()) == [f"t{i}" for i in range(5)]
    assert [loop.doc(f"t{i}")["status"] for i in range(5)] == ["done"] * 5


def test_runs_started_ahead_that_no_thread_begins_are_handed_back_not_left_running(
        tmp_path, now):
    """Both threads hang on the first two of 5 runs started ahead: the other three wait in
    the pool's queue, then are handed back (``waiting``); a timeout counts from when a thread
    began the run, never from the queue (issue 13: nothing ``running`` with no job behind
    it, no timeout recorded for a run that never started)."""
    loop = Loop(MemStore("tasks"), tmp_path, now, lead=2)
    pool = loop.worker.runner.pool = Hung(loop.worker.runner, 2, lambda: loop.now)
    for i in range(5):
        loop.put(f"t{i}", later(now, 10), timeout=1)
    loop.step()
    loop.step(later(now, 8.5))
    assert [loop.doc(f"t{i}")["status"] for i in range(5)] == ["running"] * 5
    loop.step(later(now, 10))  # two begin and hang, three queued
    assert sorted(docid for docid, _ in pool.queued) == ["t2", "t3", "t4"]
    loop.step(later(now, 10.9))
    assert [loop.doc(f"t{i}")["status"] for i in range(5)] == ["running"] * 5
    loop.step(later(now, 11.5))  # the two begun time out; the queued ones do not
    statuses = [loop.doc(f"t{i}")["status"] for i in range(5)]
    assert statuses[2:] == ["running"] * 3 and statuses[:2] != ["running"] * 2, statuses
    loop.step(later(now, 12))  # 2 s in the queue: taken back, never to begin
    for i in (2, 3, 4):
        doc = loop.doc(f"t{i}")
        assert doc["status"] == "waiting" and "owner" not in doc[rules.NS], doc
        assert "attempt" not in doc[rules.NS] and f"t{i}" not in loop.worker.held
    assert all(future.cancelled() for _, future in pool.queued)
    assert loop.worker.counts["handed_back"] == 3
    assert {r["task"] for r in loop.runs_all()} == {"t0", "t1"}  # no record for the others


def test_tasks_due_beyond_what_the_pool_can_begin_are_left_waiting_then_claimed_in_order(
        tmp_path, now):
    """Five due, a pool of 2 and no run measured yet: two are claimed and started, the
    others are not claimed at all (no write: another process may take them) and start as
    threads free up, higher priority first; one another process claims meanwhile is let go."""
    loop = Loop(MemStore("tasks"), tmp_path, now)
    pool = loop.worker.runner.pool = Manual()
    for i in range(4):
        loop.put(f"t{i}", later(now, -4 + i))
    loop.step()
    assert [loop.doc(f"t{i}")["status"] for i in range(4)] == ["running"] * 2 + ["waiting"] * 2
    assert [loop.doc(f"t{i}")["_rev"][:2] for i in (2, 3)] == ["1-", "1-"]  # never written
    loop.put("urgent", later(now, -0.5), priority=5)  # due last, but first in line
    theirs = rules.claim(loop.doc("t2"), OTHER, now, now)
    loop.store.put(theirs)  # another process of the name takes t2
    loop.step()
    assert sorted(loop.worker.mem.queued) == ["t3", "urgent"]
    assert sorted(pool.finish()) == ["t0", "t1"]
    loop.step()  # two threads free: the queue, in order
    assert [loop.doc(d)["status"] for d in ("urgent", "t3")] == ["running"] * 2
    assert loop.doc("t2")[rules.NS]["owner"] == OTHER
    assert [args[0] for _, args in pool.queued] == ["urgent", "t3"]
    pool.finish()
    loop.step()
    assert [r["id"] for r in loop.ran()] == ["t0", "t1", "urgent", "t3"]
    assert all(loop.doc(d)["status"] == "done" for d in ("t0", "t1", "urgent", "t3"))
    assert loop.worker.counts["corrected"] == 0 and not loop.worker.mem.queued


def test_a_write_the_database_refuses_ends_the_task_in_error(tmp_path, now):
    loop = Loop(Refusing("tasks"), tmp_path, now)
    loop.put("t", now)
    loop.step()
    doc = loop.doc("t")
    assert doc["status"] == "error", doc
    assert "running: not on this test" in doc[rules.NS]["error"]
    assert loop.ran() == [] and loop.worker.held == {}
    loop.step(later(now, 5))
    loop.poll()
    assert loop.ran() == [] and loop.doc("t")["_rev"] == doc["_rev"]


def test_the_self_check_corrects_a_task_running_with_nothing_behind_it(loop, now):
    loop.worker.runner.pool = Vanishing(loop.worker.runner)
    loop.put("t", now)
    loop.step()
    assert loop.doc("t")["status"] == "running" and loop.ran() == []
    every = loop.worker.settings.self_check
    loop.step(later(now, every / 2))  # not checked again yet
    assert "t" in loop.worker.held and loop.worker.counts["corrected"] == 0
    loop.step(later(now, every))  # found by two checks in a row
    assert loop.worker.counts["corrected"] == 1
    assert "t" not in loop.worker.held and loop.worker.poll_now.is_set()
    loop.worker.runner.pool = Inline()
    loop.poll()  # the poll the self-check asked for: the task is decided again, and runs
    doc = loop.doc("t")
    assert doc["status"] == "done" and len(loop.ran()) == 1, doc
    assert [r["outcome"] for r in loop.runs("t")] == [rules.OK]


def test_a_held_task_canceled_is_dropped_and_never_runs(loop, now):
    due = later(now, 30)
    loop.put("t", due)
    loop.step()
    assert (RUN, "t") in loop.worker.timer
    doc = loop.doc("t")
    loop.store.put({**doc, "status": "cancel"})  # the user's write, as curl would
    loop.step(later(now, 1))
    doc = loop.doc("t")
    assert doc["status"] == "canceled" and "owner" not in doc[rules.NS], doc
    assert loop.worker.held == {} and (RUN, "t") not in loop.worker.timer
    loop.step(due)
    loop.poll()
    assert loop.ran() == [] and loop.doc("t")["_rev"] == doc["_rev"]


def test_a_repeating_task_runs_each_occurrence_at_its_date_until_its_limit(loop, now):
    loop.put("t", now, repeat={"seconds": 10, "limit": 2})
    loop.step()
    doc = loop.doc("t")
    second = later(now, 10)
    assert doc["status"] == "scheduled" and parse_date(doc["date"]) == second, doc
    assert loop.worker.timer.snapshot() == [((RUN, "t"), to_ms(second), None)]
    assert len(loop.ran()) == 1
    loop.step(second - timedelta(milliseconds=1))
    assert len(loop.ran()) == 1
    loop.step(second)
    assert loop.doc("t")["status"] == "done" and len(loop.ran()) == 2
    assert [parse_date(r["scheduled"]) for r in loop.runs("t")] == [now, second]
    assert loop.worker.held == {} and len(loop.worker.timer) == 0
