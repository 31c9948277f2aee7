"""The worker's loop, driven by hand against the in-memory store (:mod:`after.couch.memstore`).

No server, no sleeps: each step sets the instant, fires the timer entries due then
(:meth:`Timer.fire_due`), delivers the feed's changes (:meth:`MemFollower.deliver`) and turns
the loop (:meth:`Worker.turn` with ``now``) until nothing is left to do. The threads that
do I/O are replaced by their synchronous selves: writes are sent and answered on the spot
(their answers reach the loop's inbox, as the writer's thread posts them), the peers' thread
beats when the test says, jobs run at once on the loop's thread (:class:`Inline`). Each
process has its own monotonic clock, so a test can freeze one. What the store does is held
to CouchDB's by ``tests/integration/test_store_contract.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import Future
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from after.config import Settings, runs_db, workers_db
from after.couch import schema
from after.couch.memstore import MemStore
from after.jobs import JobRegistry
from after.rules import task as rules
from after.rules.dates import format_date, parse_date, to_ms, utcnow
from after.worker import Worker, intents, leases, running
from after.worker import partitions as parts
from after.worker.polling import query_due, scan_recent
from after.worker.running import REREAD, RUN, WRITES_AHEAD
from after.worker.runs import Kind
from after.worker.writer import Answer

JOBS = Path(__file__).resolve().parents[2] / "jobs"


class Inline:
    """A job pool that runs each job at once, on the caller's thread: its end is in the
    loop's inbox before the launch returns."""

    def submit(self, fn, *args):
        fn(*args)

    def shutdown(self, **ignored):
        pass


class Manual:
    """A job pool whose jobs run when the test says so (``finish``)."""

    def __init__(self):
        self.queued = []

    def submit(self, fn, *args):
        future = Future()
        self.queued.append((fn, args, future))
        return future

    def finish(self) -> list[str]:
        done, self.queued = self.queued, []
        for fn, args, future in done:
            if future.set_running_or_notify_cancel():
                fn(*args)
        return [args[0] for _, args, _ in done]

    def shutdown(self, **ignored):
        pass


class Loop:
    """One worker process, turned by hand, with a monotonic clock of its own."""

    def __init__(self, store: MemStore, tmp: Path, now: datetime, **settings):
        schema.setup(store)
        self.store, self.now, self.trace = store, now, tmp / "runs.jsonl"
        self.worker = w = Worker(store, "w", JobRegistry(JOBS),
                                 Settings(**{"horizon": 60, "pool": 2, **settings}))
        self.mono = [1000.0]
        w.peers.mono = lambda: self.mono[0]
        w.runner.mono = w.peers.mono
        w.runner.pool = Inline()
        w.writer.send = self._send  # answered at once, posted to the inbox as the writer does
        w.intents.send = lambda writes: self._send(writes, w.intents)
        w.reads.check = lambda held, probes=None: held and w.reads._check(held, probes)  # at once
        w.reads.orphans = lambda owners: w.inbox.put(
            ("orphans", (owners, w.reads.find_orphans(owners))))
        w.reads.scan = lambda name, settings, owned=None: [
            w.inbox.put(("recheck", doc)) for doc in scan_recent(store, name, settings, owned)]
        w.peers.ask = self._ask
        w.poller.start = lambda owned=None: None  # the test polls (poll())
        self.frozen = False
        self.feed = store.follow(w._on_change, since=store.update_seq(),
                                 selector={"worker": "w"})
        self.beat()
        self.settle()  # its first read of the registry: it takes partitions a moment later
        self.mono[0] += 2 * leases.JOIN

    def _send(self, writes, writer=None):
        writer = writer or self.worker.writer
        if writes:
            writer.inflight += len(writes)
            writer._send([(write, 0) for write in writes], [])

    def _ask(self, request):
        kind, value = request
        if kind == "parts":
            self.worker.inbox.put(("parts", (value, self.worker.peers.write_parts(value))))
        elif kind == "confirm":
            self.worker.inbox.put(("peer", (value, self.worker.peers.confirm(value))))

    def beat(self) -> None:
        """What the peers' thread does each beat: the heartbeat, then the registry."""
        peers = self.worker.peers
        registry = peers.beat(self.worker.status(), landed=lambda sent, lapses:
                              self.worker.inbox.put(("beat", (sent, lapses))))
        if registry is not None:
            self.worker.inbox.put(("registry", registry))

    def put(self, docid: str, at: datetime, **fields) -> dict:
        doc = {"_id": docid, "worker": "w", "date": format_date(at), "status": "waiting",
               "job": {"name": "record", "arguments": [str(self.trace)]}, **fields}
        self.store.put(doc)
        return doc

    def step(self, at: datetime | None = None, beat: bool = True) -> None:
        """Move the clock to ``at`` (this process's monotonic clock with it), a second at a
        time, beating each second as the peers' thread does (unless frozen) and turning
        until the loop has nothing left to do."""
        while at is not None and (at - self.now).total_seconds() > 1.0:
            self.step(self.now + timedelta(seconds=1), beat)
        if at is not None:
            self.mono[0] += max(0.0, (at - self.now).total_seconds())
            self.now = at
        if beat and not self.frozen:
            self.beat()
        self.settle()

    def settle(self) -> None:
        for turns in range(100):
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
        self.settle()

    def doc(self, docid: str) -> dict:
        return self.store.get(docid)

    def ran(self) -> list[dict]:
        """The job's own trace: one line per time it ran (any process)."""
        if not self.trace.exists():
            return []
        return [json.loads(line) for line in self.trace.read_text().splitlines()]

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


def owners(store: MemStore) -> dict[int, str | None]:
    return {doc["partition"]: doc["owner"]
            for doc in store.prefixed("w@part:", db=workers_db(store.db))}


def test_a_lone_process_takes_every_partition(loop, now):
    loop.step()
    assert loop.worker.state.owned == set(range(parts.PARTITIONS))
    assert set(owners(loop.store).values()) == {loop.worker.id}


def test_a_task_due_now_runs_once_and_its_end_is_its_one_write(loop, now):
    loop.step()
    loop.put("t", now)
    loop.step()
    doc = loop.doc("t")
    assert doc["status"] == "done", doc
    assert doc["_rev"].startswith("2-")  # created, ended: nothing written before the job
    assert doc[rules.NS]["runs"] == 1 and doc[rules.NS]["last_run"]["outcome"] == rules.OK
    assert [r["id"] for r in loop.ran()] == ["t"]
    [run] = loop.runs("t")
    assert run["outcome"] == rules.OK and run["number"] == 1 and run["worker"] == "w"
    assert run["process"] == loop.worker.id and parse_date(run["scheduled"]) == now
    assert loop.worker.held == {}
    loop.step(later(now, 5))
    loop.poll()  # the safety net finds nothing more to do
    assert len(loop.ran()) == 1 and loop.doc("t")["_rev"] == doc["_rev"]


def test_a_future_task_is_held_with_nothing_written_and_fires_at_its_date(loop, now):
    loop.step()
    due = later(now, 30.25)
    loop.put("t", due)
    loop.step()
    assert loop.doc("t")["_rev"].startswith("1-")
    assert ((RUN, "t"), to_ms(due), None) in loop.worker.timer.snapshot()
    loop.step(due - timedelta(milliseconds=1))
    assert loop.ran() == [] and loop.doc("t")["status"] == "waiting"
    loop.step(due)
    assert loop.doc("t")["status"] == "done" and len(loop.ran()) == 1
    [run] = loop.runs("t")
    assert parse_date(run["scheduled"]) == due and parse_date(run["started"]) >= now


def test_nothing_is_held_before_the_process_owns_a_partition(tmp_path, now):
    store = MemStore("tasks")
    loop = Loop(store, tmp_path, now)
    inbox, later_events = loop.worker.inbox, []
    while not inbox.empty():  # the registry read, held back
        later_events.append(inbox.get_nowait())
    loop.put("t", now)
    loop.feed.deliver()
    loop.worker.turn(wait=0, now=now)
    assert loop.ran() == [] and "t" not in loop.worker.held
    for event in later_events:
        inbox.put(event)
    loop.step()  # the registry read: partitions taken, the task found by the poll
    loop.poll()
    assert [r["id"] for r in loop.ran()] == ["t"]


def test_a_cancel_that_reaches_the_process_before_the_instant_wins(loop, now):
    loop.step()
    loop.put("t", later(now, 10))
    loop.step()
    doc = loop.doc("t")
    loop.store.put({**doc, "status": "cancel"})
    loop.step(later(now, 9.9))
    assert loop.doc("t")["status"] == "canceled"
    loop.step(later(now, 11))
    assert loop.ran() == [] and loop.runs("t") == []


def test_a_long_run_is_shown_running_and_a_cancel_written_meanwhile_ends_it_canceled(
        loop, now):
    pool = loop.worker.runner.pool = Manual()
    loop.step()
    loop.put("t", later(now, 1))
    loop.step(later(now, 1))
    assert loop.doc("t")["status"] == "waiting" and len(pool.queued) == 1
    loop.step(later(now, 2.5))  # past ``visible`` (1 s): shown running
    shown = loop.doc("t")
    assert shown["status"] == "running" and shown["after"]["owner"] == loop.worker.id
    loop.store.put({**shown, "status": "cancel"})
    loop.step()
    assert loop.worker.runner.cancels[loop.worker.state.runs["t"].token].canceled.is_set()
    assert pool.finish() == ["t"]  # the job returned (told: task.canceled)
    loop.step()
    doc = loop.doc("t")
    assert doc["status"] == "canceled" and doc["after"]["runs"] == 1
    assert doc["after"]["last_run"]["outcome"] == "canceled"
    assert [r["outcome"] for r in loop.runs("t")] == ["canceled"]


def test_a_canceled_run_whose_job_goes_on_ends_canceled_after_the_grace(loop, now):
    pool = loop.worker.runner.pool = Manual()
    loop.step()
    loop.put("t", later(now, 1))
    loop.step(later(now, 1))
    loop.step(later(now, 2.5))
    loop.store.put({**loop.doc("t"), "status": "cancel"})
    loop.step(later(now, 3))
    loop.step(later(now, 7.5))  # within the grace (5 s): the run goes on
    assert loop.doc("t")["status"] == "cancel"
    loop.step(later(now, 8.1))
    doc = loop.doc("t")
    assert doc["status"] == "canceled"
    assert doc["after"]["last_run"]["outcome"] == "canceled"
    pool.finish()  # the job returns at last: nothing more is written
    loop.step(later(now, 9))
    assert [r["outcome"] for r in loop.runs("t")] == ["canceled"]
    assert loop.doc("t")["_rev"] == doc["_rev"]


def test_a_field_edited_while_a_short_run_goes_is_kept_and_the_run_ends_done(loop, now):
    pool = loop.worker.runner.pool = Manual()
    loop.step()
    loop.put("t", later(now, 1))
    loop.step(later(now, 1))
    loop.store.put({**loop.doc("t"), "note": "edited while it ran"})  # still "waiting"
    loop.step()
    pool.finish()
    loop.step()
    doc = loop.doc("t")
    assert doc["status"] == "done" and doc["note"] == "edited while it ran"
    assert doc["after"]["runs"] == 1 and len(loop.runs("t")) == 1


def test_two_processes_share_the_partitions_and_each_task_runs_once(tmp_path, now):
    store = MemStore("tasks")
    a, b = Loop(store, tmp_path, now), Loop(store, tmp_path, now)
    for _ in range(3):  # a few beats: each sees the other, the partitions settle
        a.step()
        b.step()
        a.step()
    mine = {a.worker.id: len(a.worker.state.owned), b.worker.id: len(b.worker.state.owned)}
    assert sorted(mine.values()) == [32, 32] and not (a.worker.state.owned &
                                                      b.worker.state.owned)
    assert set(owners(store).values()) == set(mine)
    for i in range(100):
        a.put(f"t{i}", later(now, 5))
    for t in range(1, 7):  # side by side, a second at a time: both beat, neither is dead
        a.step(later(now, t))
        b.step(later(now, t))
    ran = [r["id"] for r in a.ran()]
    assert sorted(ran) == sorted(f"t{i}" for i in range(100))  # each once, by one of them
    by = {r["pid"] for r in a.ran()}
    assert len(by) == 1  # (one test process: both loops share a pid)
    assert a.worker.counts["done"] + b.worker.counts["done"] == 100
    assert min(a.worker.counts["done"], b.worker.counts["done"]) > 25


def test_a_process_that_joins_gets_its_share_from_the_one_that_had_everything(tmp_path, now):
    store = MemStore("tasks")
    a = Loop(store, tmp_path, now)
    a.step()
    assert len(a.worker.state.owned) == parts.PARTITIONS
    b = Loop(store, tmp_path, now)
    for _ in range(3):
        b.step()
        a.step()
        b.step()
    assert len(a.worker.state.owned) == len(b.worker.state.owned) == 32
    assert not a.worker.state.giving


def test_processes_started_together_split_the_partitions_with_no_hand_over(tmp_path, now):
    """A pool started at once (a restart): each process reads the registry again before it
    takes anything, sees the others, and takes its own share; no lease is written twice."""
    store = MemStore("tasks")
    pool = [Loop(store, tmp_path, now) for _ in range(3)]
    for loop in pool:
        loop.step()
    assert sorted(len(loop.worker.state.owned) for loop in pool) == [21, 21, 22]
    assert all(not loop.worker.state.giving for loop in pool)
    leases = store.prefixed("w@part:", db=workers_db(store.db))
    assert {doc["_rev"].split("-")[0] for doc in leases} == {"1"}


def test_a_process_given_partitions_finds_their_due_tasks_without_the_view(tmp_path, now):
    """B joins A, which had everything and holds tasks due in a moment: A gives B its share
    and drops those tasks; B finds them among the newest changes (a server may take seconds
    to index a backlog for the due view) and runs them at their dates, with no poll."""
    store = MemStore("tasks")
    a = Loop(store, tmp_path, now)
    a.step()
    for i in range(20):
        a.put(f"t{i:02}", later(now, 3))
    a.step()
    assert len(a.worker.held) == 20
    b = Loop(store, tmp_path, now)
    for _ in range(3):
        b.step()
        a.step()
        b.step()
    assert len(b.worker.state.owned) == 32
    mine = {f"t{i:02}" for i in range(20)
            if parts.partition_of(f"t{i:02}") in b.worker.state.owned}
    assert mine and set(b.worker.held) == mine  # (no b.poll())
    for loop in (a, b):
        loop.step(later(now, 3))
    assert sorted(r["id"] for r in a.ran()) == [f"t{i:02}" for i in range(20)]


def test_a_frozen_process_runs_nothing_on_thaw_that_another_took_over(tmp_path, now):
    """A holds every partition and a task due at +10 s, then is frozen (SIGSTOP) for 9 s;
    B finds it dead after a lease, takes its partitions and runs the task at its date. A,
    thawed, sees that its lease may have lapsed: it lets go of everything and runs nothing;
    a lease later it takes its share again."""
    store = MemStore("tasks")
    a = Loop(store, tmp_path, now)
    a.step()
    a.put("t", later(now, 10))
    a.step()
    assert "t" in a.worker.held
    b = Loop(store, tmp_path, now)
    b.step()  # B sees A alive: A owns everything, B takes nothing
    assert b.worker.state.owned == set()
    a.frozen = True
    for t in range(1, 10):
        b.step(later(now, t))  # A's heartbeat unchanged: dead after a lease (6 s)
    # B found the task among the newest changes as it took the partitions (no poll needed)
    assert len(b.worker.state.owned) == parts.PARTITIONS and "t" in b.worker.held
    b.step(later(now, 10))
    assert [r["id"] for r in a.ran()] == ["t"] and b.worker.counts["done"] == 1
    a.frozen = False
    a.mono[0] += 9  # A thaws at +10: its clock says 9 s went by without a heartbeat
    a.now = later(now, 10)
    a.step()
    assert a.worker.state.owned == set() and a.worker.state.away_until
    assert len(a.ran()) == 1 and a.worker.counts["done"] == 0  # A ran nothing
    for t in range(11, 20):
        a.step(later(now, t))
        b.step(later(now, t))
    assert len(a.worker.state.owned) == len(b.worker.state.owned) == 32
    assert len(a.ran()) == 1


def test_a_run_queued_for_a_thread_across_a_freeze_is_not_begun(loop, now):
    pool = loop.worker.runner.pool = Manual()
    loop.step()
    loop.put("t", later(now, 1))
    loop.step(later(now, 1))
    assert len(pool.queued) == 1
    loop.mono[0] += 10  # frozen with the run still queued: past its lease when a thread comes
    pool.finish()
    loop.step(beat=False)
    assert loop.ran() == [] and "t" not in loop.worker.state.runs
    assert loop.doc("t")["status"] == "waiting"  # nothing written: the next owner runs it
    assert loop.worker.counts["handed_back"] == 1


def test_a_store_that_never_answers_holds_up_no_timer(tmp_path, now):
    """Writes go to the writer's threads: a server that never answers them holds up no
    launch (issue 22: no blocking I/O on the loop)."""
    store = MemStore("tasks")
    loop = Loop(store, tmp_path, now)
    loop.step()
    stuck = threading.Event()
    blocked = []

    class Hung:
        def bulk_docs(self, docs, **kw):
            blocked.append(len(docs))
            stuck.wait(30)  # never answers (until the test ends)
            raise RuntimeError("gone")

    from after.worker.writer import Writer

    writer = loop.worker.writer = Writer(Hung(), loop.worker.inbox.put).start()
    try:
        for i, seconds in enumerate((1, 2, 3)):
            loop.put(f"t{i}", later(now, seconds))
        loop.step()
        for seconds in (1, 2, 3):
            loop.step(later(now, seconds))
        assert [r["id"] for r in loop.ran()] == ["t0", "t1", "t2"]  # each on time
        deadline = time.monotonic() + 20  # (the writer's thread takes them up on its own)
        while not (blocked and writer.inflight == 3) and time.monotonic() < deadline:
            loop.step(later(now, 4))
            time.sleep(0.01)
        assert blocked and writer.inflight == 3  # their ends: still waiting for the server
    finally:
        stuck.set()


def test_a_gate_whose_server_never_answers_holds_up_no_other_task(loop, now):
    """The gates' I/O is on a thread of their own (issue 22: no blocking I/O on the loop):
    a capped task whose slots cannot be read holds up neither the loop nor a task due at the
    same instant; once the server answers, it runs."""
    answer = threading.Event()
    caps = loop.worker.gates.gates.caps
    real = caps.store

    class Hung:
        def __getattr__(self, name):
            def call(*args, **kwargs):
                answer.wait(30)  # never answers (until the test lets it)
                return getattr(real, name)(*args, **kwargs)
            return call

    caps.store = Hung()
    loop.step()
    try:
        loop.put("capped", later(now, 1), concurrency={"key": "k", "limit": 1})
        loop.put("t", later(now, 1))
        loop.step()
        loop.step(later(now, 1))
        assert [r["id"] for r in loop.ran()] == ["t"]  # on time; the other waits for its slot
        assert "capped" in loop.worker.state.gated
        loop.step(later(now, 2))  # and the loop goes on turning
    finally:
        answer.set()
    deadline = time.monotonic() + 10
    while len(loop.ran()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
        loop.settle()
    assert [r["id"] for r in loop.ran()] == ["t", "capped"]


def test_a_paused_name_starts_nothing_and_resumes_from_what_is_due(loop, now):
    from after.couch import pausing

    loop.step()
    loop.put("t", later(now, 2))
    loop.step()
    pausing.pause(loop.store, workers_db(loop.store.db), "w", now)
    loop.step(later(now, 1))
    assert loop.worker.state.paused and "t" not in loop.worker.held
    loop.step(later(now, 3))
    assert loop.ran() == []
    pausing.resume(loop.store, workers_db(loop.store.db), "w")
    loop.step(later(now, 4))
    loop.poll()
    assert [r["id"] for r in loop.ran()] == ["t"]


def test_a_graceful_stop_gives_the_partitions_up_and_leaves_held_tasks_unwritten(loop, now):
    from after.worker.stop import shutdown

    loop.step()
    loop.put("t", later(now, 30))
    loop.step()
    loop.worker.request_stop()
    assert shutdown(loop.worker) == 0
    assert loop.doc("t")["_rev"].startswith("1-")
    assert set(owners(loop.store).values()) == {None}
    beats = [d for d in loop.store.prefixed("w@", db=workers_db(loop.store.db))
             if d.get("type") == "worker"]
    assert beats == []


def test_a_run_begins_once_its_intent_is_written_and_its_record_is_written_over_it(loop, now):
    loop.step()
    delayed = []
    send = loop.worker.intents.send
    loop.worker.intents.send = delayed.extend  # the runs database slow to answer
    loop.put("t", later(now, 1))
    loop.step(later(now, 1.5))
    assert loop.ran() == [] and len(delayed) == 1  # due, but its intent not written yet
    intent = delayed[0].doc
    assert intent["outcome"] == "intended" and intent["task"] == "t"
    send(delayed)
    loop.worker.intents.send = send
    loop.settle()
    assert [r["id"] for r in loop.ran()] == ["t"]
    [run] = loop.runs("t")
    assert run["_id"] == intent["_id"] and run["outcome"] == "done"  # over the intent


def test_a_run_whose_intent_cannot_be_written_waits_for_it_and_begins_once_it_lands(loop,
                                                                                     now):
    """The runs database unreachable (the writer gave the intent up after its retries): the
    run does not begin with no intent behind it (had its process died then, it would have
    run again with no record of this one); the intent is sent again, and the run begins
    once it lands, once."""
    loop.step()
    sent, given_up = [], []
    send, intents = loop.worker.intents.send, loop.worker.intents

    def unreachable(writes):  # answered by the test: the writer's retries take a while
        sent.extend(writes)
        intents.inflight += len(writes)

    intents.send = unreachable
    loop.put("t", later(now, 1))
    for t in (1, 2, 3):
        loop.step(later(now, t))
        given_up += sent
        intents._answer([(write, Answer(failed="simulated: unreachable")) for write in sent])
        sent.clear()
    loop.settle()
    assert loop.ran() == [] and len(given_up) == 3  # due, its intent sent again each time
    assert len(sent) == 1 and {write.token for write in given_up + sent} == {sent[0].token}
    intents.send = send  # the database is back: the intent sent again lands
    intents.inflight -= len(sent)
    send(sent)
    loop.step(later(now, 4))
    assert [r["id"] for r in loop.ran()] == ["t"]
    [run] = loop.runs("t")
    assert run["_id"] == given_up[0].doc["_id"] and run["outcome"] == "done"


def test_a_task_read_from_a_copy_that_lags_is_read_back_and_not_run(tmp_path, now):
    """Chaos seed 204211593: a process started right after a CouchDB node came back found
    four tasks due on that node's copies, which lagged: they had been run and ended done
    seconds before, through the other nodes. It ran them again. A run now begins only on a
    version read back by id (a quorum read on a cluster) and found current."""
    store = MemStore("tasks")
    schema.setup(store)
    job = {"name": "record", "arguments": [str(tmp_path / "runs.jsonl")]}  # (Loop.trace)
    stale = {"_id": "t", "worker": "w", "date": format_date(later(now, -5)),
             "status": "waiting", "job": job}
    store.put(stale)
    store.put({**stale, "status": "done"})  # run and ended through the other nodes
    loop = Loop(store, tmp_path, now)  # (its feed starts after both)
    loop.step()
    check, asked = loop.worker.reads.check, []
    # the read back answers after the instant
    loop.worker.reads.check = lambda held, probes=None: asked.append(held)
    loop.worker.inbox.put(("recheck", stale))  # the lagging copy's version, found due
    loop.step(later(now, 1))
    assert loop.ran() == [] and asked == [{"t": stale["_rev"]}]
    check(asked.pop())
    loop.step(later(now, 2))
    assert loop.ran() == [] and "t" not in loop.worker.state.held
    assert loop.doc("t")["status"] == "done" and loop.doc("t")["_rev"].startswith("2-")


def test_a_task_shown_running_on_a_copy_that_lags_is_read_back_and_not_taken_over(
        tmp_path, now):
    """Chaos seed 204211593, replayed: a copy whose node just came back showed a task as
    still ``running`` on a process since dead; it had ended done seconds before, through
    the other nodes. Taken over on that version, it ran again. A decision that writes is now
    made on a version read back by id and found current."""
    store = MemStore("tasks")
    schema.setup(store)
    job = {"name": "record", "arguments": [str(tmp_path / "runs.jsonl")]}  # (Loop.trace)
    gone = "w:gone-host:1:deadbeef"  # a process with no heartbeat: dead
    stale = {"_id": "t", "worker": "w", "date": format_date(later(now, -5)),
             "status": "running", "job": job,
             rules.NS: {"owner": gone, "started": format_date(later(now, -4)),
                        "token": "deadbeef.1", "runs": 0}}
    store.put(stale)
    store.put({**stale, "status": "done"})  # ended through the other nodes
    loop = Loop(store, tmp_path, now)
    loop.step()
    check, asked, sent = loop.worker.reads.check, [], []
    # the read back answers later
    loop.worker.reads.check = lambda held, probes=None: asked.append(held)
    send = loop.worker.writer.send
    loop.worker.writer.send = lambda writes: (sent.extend(writes), send(writes))
    loop.worker.inbox.put(("recheck", stale))  # the lagging copy's version
    loop.step(later(now, 1))
    assert asked == [{"t": stale["_rev"]}]
    check(asked.pop())
    loop.step(later(now, 2))
    # on a cluster, a write on the stale revision could land on the lagging copy (a
    # conflict that may win): none is made
    assert [write.doc.get("_rev") for write in sent] == []
    assert loop.ran() == [] and not loop.worker.state.unconfirmed
    assert loop.doc("t")["status"] == "done" and loop.doc("t")["_rev"].startswith("2-")
    assert loop.runs("t") == []


def test_a_task_shown_running_on_a_dead_process_is_taken_over_once_read_back(loop, now):
    """The same version, current: read back, it is taken over (recorded interrupted) and run
    again, once."""
    loop.step()
    gone = "w:gone-host:1:deadbeef"
    loop.put("t", later(now, -5), status="running",
             **{rules.NS: {"owner": gone, "started": format_date(later(now, -4)),
                           "token": "deadbeef.1", "runs": 0}})
    loop.step(later(now, 1))
    loop.step(later(now, 2))
    assert [r["id"] for r in loop.ran()] == ["t"] and loop.doc("t")["status"] == "done"
    assert [run["outcome"] for run in loop.runs("t")] == ["interrupted", "done"]


def test_a_run_made_ready_ahead_and_begun_late_is_shown_running_from_when_it_began(loop, now):
    """Chaos seed 1845147512: a run cut by a stop past its grace was begun again by the next
    owner 3 s late, as the same attempt; shown running (then taken over) with the instant
    it was due as its start, the audit found two runs of one attempt at once."""
    loop.step()
    loop.worker.runner.pool = Manual()  # the job begins and goes on
    check, asked = loop.worker.reads.check, []
    # the read back answers 2 s after its instant
    loop.worker.reads.check = lambda held, probes=None: asked.append(held)
    loop.put("t", later(now, 1))
    loop.step(later(now, 3))
    assert "t" not in loop.worker.state.runs
    check(asked.pop())
    loop.worker.reads.check = check
    loop.settle()  # begun now, 2 s after its instant
    loop.step(later(now, 5))  # shown running a second later
    doc = loop.doc("t")
    assert doc["status"] == "running"
    assert parse_date(doc[rules.NS]["started"]) == later(now, 3)


def test_a_read_back_that_fails_is_tried_again_and_the_run_waits_for_it(loop, now):
    loop.step()
    check, asked, failed = loop.worker.reads.check, [], 0
    # the server slow to answer, then failing
    loop.worker.reads.check = lambda held, probes=None: asked.append(held)
    loop.put("t", later(now, 1))
    for t in (1, 2):
        loop.step(later(now, t))
        for held in asked:  # as the reads' thread posts a read that failed
            loop.worker.inbox.put(("confirmed", ({}, list(held))))
            failed += 1
        asked.clear()
        loop.settle()
        assert asked == []  # not read again at once: a struggling server is not pressed
    loop.step(later(now, 2 + REREAD))
    assert loop.ran() == [] and failed == 2 and asked == [{"t": loop.doc("t")["_rev"]}]
    loop.worker.reads.check = check
    check(asked.pop())  # read again: it answers
    loop.step(later(now, 3))
    assert [r["id"] for r in loop.ran()] == ["t"] and loop.doc("t")["status"] == "done"


def test_a_run_held_long_ahead_keeps_no_copy_of_its_task_until_just_before_its_instant(
        loop, now):
    """Its intent goes out at once; the task as its run sees it is made ARM_AHEAD before its
    instant (a burst held a minute ahead is thousands of them), the same as made at first."""
    loop.step()
    loop.put("t", later(now, 60))
    loop.step(later(now, 1))
    run = loop.worker.state.held["t"].armed
    assert run.doc is None and run.intent.get("_rev")
    [intent] = loop.store.find({"task": "t"}, db=runs_db(loop.store.db))[0]
    loop.step(later(now, 58.5))
    assert run.doc[rules.NS]["token"] == run.token == intent["token"]
    assert run.doc[rules.NS]["run"] == intent["number"] == 1 and run.context is not None
    loop.step(later(now, 61))
    assert [r["id"] for r in loop.ran()] == ["t"] and loop.doc("t")["status"] == "done"


def test_ends_wait_for_room_in_the_writer_and_are_not_taken_for_lost_meanwhile(tmp_path,
                                                                                now):
    """Runs that end at once in a burst are turned into writes (the task and its record,
    3 KB) only as the writer has room: the rest wait as runs that ended, and the self-check
    does not take them for runs with no thread behind them."""
    loop = Loop(MemStore(), tmp_path, now, batch=1, pool=4)
    writer, held = loop.worker.writer, []
    loop.step()

    def slow(writes):  # the server is slow: nothing is answered until the test says
        writer.inflight += len(writes)
        held.extend(writes)

    writer.send = slow
    for n in range(10):
        loop.put(f"t{n}", later(now, 1))
    loop.step(later(now, 1))
    assert len(loop.ran()) == 10  # every job ran
    assert len(held) == WRITES_AHEAD and len(loop.worker.state.ends) == 10 - WRITES_AHEAD
    for t in range(2, 12):  # self-checks, two in a row and more, while nothing is answered
        loop.step(later(now, t))
    assert loop.worker.state.counts["corrected"] == 0 and len(loop.worker.state.runs) == 10
    writer.send = lambda writes: loop._send(writes)
    while held:  # the server answers
        answered, held[:] = list(held), []
        writer._send([(write, 0) for write in answered], [])
        loop.settle()
    loop.step(later(now, 13))
    assert all(loop.doc(f"t{n}")["status"] == "done" for n in range(10))
    assert Counter(r["id"] for r in loop.ran()) == {f"t{n}": 1 for n in range(10)}
    assert all(len(loop.runs(f"t{n}")) == 1 for n in range(10))
    # an end that waited was not shown running meanwhile: its end is the task's one write
    assert all(loop.doc(f"t{n}")["_rev"].startswith("2-") for n in range(10))


def test_an_intent_is_withdrawn_when_its_run_will_not_begin(loop, now):
    loop.step()
    loop.put("t", later(now, 1))
    loop.step(later(now, 0.5))
    [intent] = loop.store.find({"task": "t"}, db=runs_db(loop.store.db))[0]
    loop.store.put({**loop.doc("t"), "status": "cancel"})
    loop.step(later(now, 0.8))
    assert loop.doc("t")["status"] == "canceled"
    assert loop.store.find({"task": "t"}, db=runs_db(loop.store.db))[0] == []
    assert intent["outcome"] == "intended"


def test_a_withdrawal_the_database_could_not_take_is_sent_again(loop, now):
    """An intent withdrawn (its run will not begin) whose withdrawal the writer gave up on
    (the runs database unreachable) is withdrawn again, not left open: left open, it would
    be decided as a run that may have begun once its process is found dead."""
    loop.step()
    loop.put("t", later(now, 1))
    loop.step(later(now, 0.5))
    send, intents, sent = loop.worker.intents.send, loop.worker.intents, []

    def unreachable(writes):
        sent.extend(writes)
        intents.inflight += len(writes)

    intents.send = unreachable
    loop.store.put({**loop.doc("t"), "status": "cancel"})
    loop.step(later(now, 0.8))
    [withdrawal] = sent
    sent.clear()
    intents._answer([(withdrawal, Answer(failed="simulated: unreachable"))])
    loop.settle()
    assert [write.doc for write in sent] == [withdrawal.doc]  # sent again
    intents.send = send
    intents.inflight -= 1
    send(sent)
    loop.settle()
    assert loop.store.find({"task": "t"}, db=runs_db(loop.store.db))[0] == []


@pytest.mark.parametrize("probed", [True, False])
def test_an_intent_found_for_a_task_that_runs_here_already_is_left_as_it_is(loop, now,
                                                                            probed):
    """Found (by id, or by the query of a partition taken again after a lapse) after this
    process's own run of the task began: the task is not taken over under its own run."""
    loop.worker.runner.pool = Manual()
    loop.step()
    loop.put("t", now)
    loop.step(later(now, 0.5))
    assert "t" in loop.worker.state.runs
    task = loop.doc("t")
    intent = {"_id": intents.expected("t", 1, "w@gone:1:x")[0], "_rev": "1-x", "task": "t",
              "number": 1, "process": "w@gone:1:x", "scheduled": format_date(now),
              "outcome": "intended"}
    leases.orphans(loop.worker, [], [(intent, task, None)], later(now, 0.5), probed=probed)
    assert loop.worker.state.outbox == {} and "t" in loop.worker.state.runs
    loop.worker.runner.pool.finish()
    loop.step(later(now, 2))
    assert [r["id"] for r in loop.ran()] == ["t"] and loop.doc("t")["status"] == "done"
    assert [r["outcome"] for r in loop.runs("t")] == ["done"]


def test_a_task_let_go_and_held_again_before_its_intent_is_withdrawn_gets_the_next_id(loop,
                                                                                      now):
    """An intent's id counts the times its run was made ready (a successor computes it);
    a task let go (its partition given up, say) and held again starts that count again, and
    its new intent can meet the old one, whose withdrawal is not written yet: made ready
    anew under the next id, it runs once, and no intent is left open."""
    loop.step()
    w, held_back = loop.worker, []
    loop.put("t", later(now, 5))
    loop.step(later(now, 1))
    [first] = loop.store.find({"task": "t"}, db=runs_db(loop.store.db))[0]
    send = w.intents.send
    w.intents.send = lambda writes: (
        held_back.extend(x for x in writes if x.kind is Kind.UNINTENT),
        send([x for x in writes if x.kind is not Kind.UNINTENT]))
    running.drop(w, "t")  # let go: its intent's withdrawal is slow to be written
    w.inbox.put(("recheck", loop.doc("t")))  # and held again
    loop.step(later(now, 2))
    assert held_back and w.state.held["t"].rearms == 1
    w.intents.send = send
    send(held_back)  # the withdrawal lands, after the new intent
    loop.step(later(now, 6))
    assert [r["id"] for r in loop.ran()] == ["t"] and loop.doc("t")["status"] == "done"
    [record] = loop.runs("t")
    assert record["_id"] == intents.expected("t", 1, w.id)[1] != first["_id"]
    assert loop.store.find({"outcome": "intended"}, db=runs_db(loop.store.db))[0] == []


def test_a_run_a_dead_process_may_have_begun_is_recorded_interrupted_and_run_again_isolated(
        tmp_path, now):
    """A runs a task, its intent written, and dies (a job that ended its process, say) before
    anything else is written. B takes A's partitions, reads A's open intents: the run is
    recorded interrupted (over its intent) and run again in a child process of its own."""
    store = MemStore("tasks")
    a = Loop(store, tmp_path, now)
    a.worker.runner.pool = Manual()  # the job begins, and never ends: the process dies
    a.step()
    a.put("t", later(now, 1))
    a.step(later(now, 1))
    assert "t" in a.worker.state.runs
    b = Loop(store, tmp_path, now)
    b.worker.runner.pool = Inline()
    a.frozen = True  # dead: no more heartbeats, nothing more written
    for t in range(2, 10):
        b.step(later(now, t))
    b.poll()
    b.step(later(now, 10))
    doc = store.get("t")
    assert doc["status"] == "done" and doc["after"]["isolated"], doc
    runs = b.runs("t")
    assert [(r["outcome"], r["process"]) for r in runs] == [
        ("interrupted", a.worker.id), ("done", b.worker.id)]
    assert runs[1]["isolation"] == "process"


@pytest.mark.parametrize("rearms", [0, 2])
def test_a_dead_process_intent_the_query_missed_is_found_by_id_as_its_task_is_read_back(
        tmp_path, now, rearms):
    """On a cluster, the query of a dead process's open intents (``_find``) reads one copy
    of each range, and a copy that lags (its node just came back) can miss one. A made its
    run ready (again, ``rearms`` times: a newer version of the task each time), began it and
    died; B's query finds nothing: reading A's intent of that run by id as B reads the task
    back, B records it interrupted and runs it again, once."""
    store = MemStore("tasks")
    a = Loop(store, tmp_path, now)
    a.worker.runner.pool = Manual()  # the job begins, and never ends: the process dies
    a.step()
    a.put("t", later(now, 3))
    for n in range(rearms):  # a newer version each time: its run made ready anew
        a.step(later(now, 0.5 + n / 10))
        store.put({**store.get("t"), "note": n})
    a.step(later(now, 3))
    assert "t" in a.worker.state.runs
    [intent] = a.store.find({"task": "t"}, db=runs_db(a.store.db))[0]
    assert intent["_id"] == intents.expected("t", 1, a.worker.id)[rearms]
    b = Loop(store, tmp_path, now)
    b.worker.runner.pool = Inline()
    b.worker.reads.find_orphans = lambda owners: []  # the query read a copy that lags
    a.frozen = True  # dead: no more heartbeats, nothing more written
    for t in range(4, 12):
        b.step(later(now, t))
    b.poll()
    b.step(later(now, 12))
    assert b.doc("t")["status"] == "done"
    assert [(r["outcome"], r["process"]) for r in b.runs("t")] == [
        ("interrupted", a.worker.id), ("done", b.worker.id)]
    assert len(b.ran()) == 1  # (A's run never ended: its job was a Manual one)


def test_a_process_back_from_a_short_lapse_gives_up_what_is_someone_elses_now(tmp_path, now):
    """Found by the chaos checker (scenario lapse-rejoin): A's lease lapses for a moment (no
    one finds it dead); C joins meanwhile; A, back, lets go of everything in memory, but
    the leases still name it: it must give C its share, or C never gets it."""
    store = MemStore("tasks")
    a, b = Loop(store, tmp_path, now), Loop(store, tmp_path, now)
    for t in range(1, 4):
        a.step(later(now, t))
        b.step(later(now, t))
    assert len(a.worker.state.owned) == len(b.worker.state.owned) == 32
    a.frozen = True
    a.mono[0] += 5.5  # past its own lease's margin, short of the others' verdict (6 s)
    a.step(later(now, 4))
    assert a.worker.state.owned == set() and a.worker.state.away_until  # it let go
    a.frozen = False
    c = Loop(store, tmp_path, now)
    for t in range(5, 20):
        for loop in (a, b, c):
            loop.step(later(now, t))
    shares = sorted(len(loop.worker.state.owned) for loop in (a, b, c))
    assert shares == [21, 21, 22], shares
    assert set(owners(store).values()) == {a.worker.id, b.worker.id, c.worker.id}


def test_a_run_that_goes_on_through_a_freeze_keeps_the_interrupted_record_of_the_takeover(
        tmp_path, now):
    """Found by the chaos checker (seed 13): A is frozen past its lease mid-run; B takes the
    run over (recorded interrupted, over its intent) and runs it again. A thaws and its run
    ends: its end is not written over B's takeover, and its record does not overwrite the
    interrupted one (kept beside it, ``late``)."""
    store = MemStore("tasks")
    a = Loop(store, tmp_path, now)
    pool = a.worker.runner.pool = Manual()
    a.step()
    a.put("t", later(now, 1))
    a.step(later(now, 1))
    [(job, args, future)] = pool.queued  # begun by a thread before the freeze
    pool.queued = []
    assert future.set_running_or_notify_cancel()
    a.worker.runner.begun[args[1]] = to_ms(later(now, 1))
    b = Loop(store, tmp_path, now)
    a.frozen = True
    for t in range(2, 10):
        b.step(later(now, t))
    b.poll()
    b.step(later(now, 10))
    assert store.get("t")["status"] == "done"
    b.runs("t")  # (B's records written, as its recorder's thread would have by now)
    a.frozen = False
    a.mono[0] += 9
    a.now = later(now, 10)
    lease, a.worker.runner.lease = a.worker.runner.lease, lambda: float("inf")
    job(*args)  # its job, begun before the freeze (its lease checked then), ends on thaw
    a.worker.runner.lease = lease
    a.step()
    a.runs("t")
    records = sorted(b.runs("t"), key=lambda r: (r["number"], r["_id"]))
    outcomes = [(r["outcome"], r["process"] == a.worker.id, bool(r.get("late")))
                for r in records]
    assert outcomes == [("interrupted", True, False), ("done", True, True),
                        ("done", False, False)], outcomes
    doc = store.get("t")
    assert doc["status"] == "done" and doc["after"]["runs"] == 2


@pytest.mark.parametrize("taker_first", [True, False], ids=["taker_first", "taker_late"])
def test_a_run_taken_over_while_its_process_was_frozen_is_told_to_stop_on_thaw(tmp_path, now,
                                                                             taker_first):
    """Issue 24, item 8: A is frozen past its lease mid-run; B takes the run over and runs it
    again. A thaws with its job still going: B's takeover, on A's feed, tells A's job to
    stop (task.canceled), so that two runs overlap no longer than the job takes to see it.
    A records its run ``interrupted``, as B does, whether B's record lands first (A's goes
    beside it, ``late``: when A's run really ended) or A's does (B's, the same verdict, is
    dropped; chaos seed 2078180153: B was killed before its record was written, and A's
    said ``canceled``). Nothing of A's is written over the task."""
    store = MemStore("tasks")
    a = Loop(store, tmp_path, now)
    pool = a.worker.runner.pool = Manual()
    a.step()
    a.put("t", later(now, 1))
    a.step(later(now, 1))
    [(job, args, future)] = pool.queued  # begun by a thread before the freeze
    pool.queued = []
    assert future.set_running_or_notify_cancel()
    token = args[1]
    a.worker.runner.begun[token] = to_ms(later(now, 1))
    b = Loop(store, tmp_path, now)
    b_pool = b.worker.runner.pool = Manual()  # B's run again: going when A thaws
    a.frozen = True
    for t in range(2, 10):
        b.step(later(now, t))
    b.poll()
    b.step(later(now, 10))
    assert len(b_pool.queued) == 1  # run again by B
    if taker_first:
        b.runs("t")  # (B's records written, as its recorder's thread would have by now)
    taken = store.get("t")
    assert taken["after"]["runs"] == 1 and taken["after"]["last_run"]["outcome"] == \
        "interrupted"
    a.frozen = False
    assert not a.worker.runner.cancels[token].canceled.is_set()
    a.mono[0] += 9  # A thaws at +10: its clock says 9 s went by without a heartbeat
    a.now = later(now, 10)
    a.step()  # B's takeover comes in on its feed
    assert a.worker.runner.cancels[token].canceled.is_set()  # its job is told to stop
    lease, a.worker.runner.lease = a.worker.runner.lease, lambda: float("inf")
    job(*args)  # the job sees task.canceled and returns
    a.worker.runner.lease = lease
    for t in (10.5, 11):
        a.step(later(now, t))
        b.step(later(now, t))
    b_pool.finish()
    b.step()
    a.runs("t")  # (A's records written, as its recorder's thread would have by now)
    if not taker_first:
        assert [r["outcome"] for r in a.runs("t") if r["process"] == a.worker.id] == \
            ["interrupted"]  # A's own record says so, before B's is written
    records = sorted(b.runs("t"), key=lambda r: (r["number"], r["_id"]))
    outcomes = [(r["outcome"], r["process"] == a.worker.id, bool(r.get("late")))
                for r in records]
    assert outcomes == [("interrupted", True, False), *[("interrupted", True, True)] *
                        taker_first, ("done", False, False)], outcomes
    own = [r for r in records if r["process"] == a.worker.id and (r.get("late") or
                                                                  not taker_first)]
    assert [r["error"]["message"].split(" while")[0] for r in own] == \
        ["interrupted: taken over by another process"]
    doc = store.get("t")
    assert doc["status"] == "done" and doc["after"]["runs"] == 2


def test_a_debounced_task_runs_once_a_quiet_window_after_its_last_rewrite(loop, now):
    """Issue 25, item 5: ``"debounce": 5``: written at 0, rewritten at 2 and at 4 (each
    time due now, as an event's writer does), it runs once, at 9: five seconds after the
    last rewrite; with the last version's arguments."""
    loop.step()
    doc = loop.put("t", now, debounce=5)
    loop.step()
    for t, note in ((2, "second"), (4, "third")):
        loop.step(later(now, t))
        assert loop.ran() == []
        doc = {**loop.doc("t"), "date": format_date(later(now, t)),
               "job": {"name": "record", "arguments": [str(loop.trace), note]}}
        loop.store.put(doc)
        loop.step()
    loop.step(later(now, 8.9))
    assert loop.ran() == [] and loop.doc("t")["status"] == "waiting"
    loop.step(later(now, 9))
    [run] = loop.ran()
    assert run["args"] == ["third"]
    [record] = loop.runs("t")
    assert record["outcome"] == "done"
    loop.step(later(now, 20))
    assert len(loop.ran()) == 1 and loop.worker.state.versions == {}


class Answers202:
    """A cluster with too few copies up: every write lands, answered 202."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def put(self, doc, *, db=None):
        return {**self._store.put(doc, db=db), "status": 202}

    def bulk_docs(self, docs, *, db=None, new_edits=True):
        answers = self._store.bulk_docs(docs, db=db, new_edits=new_edits)
        return [{**a, "accepted": True} if "error" not in a else a for a in answers]


def test_while_the_cluster_answers_202_no_partition_is_taken_or_given_up(tmp_path, now):
    """A owns everything; the cluster loses its quorum. B, started then, takes nothing and
    A gives nothing up (a give would be taken by no one); A keeps running its tasks. When
    writes are confirmed again, B gets its share."""
    store = MemStore("tasks")
    a = Loop(store, tmp_path, now)
    a.step()
    assert len(a.worker.state.owned) == parts.PARTITIONS
    a.worker.peers.store = Answers202(store)
    b = Loop(store, tmp_path, now)
    b.worker.peers.store = Answers202(store)
    for t in range(1, 4):
        a.step(later(now, t))
        b.step(later(now, t))
    assert a.worker.state.degraded and b.worker.state.degraded
    assert len(a.worker.state.owned) == parts.PARTITIONS and not a.worker.state.giving
    assert b.worker.state.owned == set()
    a.put("t", later(now, 5))
    for t in range(4, 7):
        a.step(later(now, t))
        b.step(later(now, t))
    assert [r["id"] for r in a.ran()] == ["t"]
    a.worker.peers.store = b.worker.peers.store = store
    for t in range(7, 12):
        a.step(later(now, t))
        b.step(later(now, t))
        a.step(later(now, t))
    assert not b.worker.state.degraded
    assert len(a.worker.state.owned) == len(b.worker.state.owned) == 32


class GivesAnswered202:
    """A cluster whose nodes are just back: a write of leases given up lands on a copy
    that lags and is answered 202 (once); the others are confirmed."""

    def __init__(self, store):
        self._store, self.answered = store, 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def bulk_docs(self, docs, *, db=None, new_edits=True):
        answers = self._store.bulk_docs(docs, db=db, new_edits=new_edits)
        if self.answered or not new_edits or any(doc.get("owner") for doc in docs):
            return answers
        self.answered += 1
        return [{**a, "accepted": True} if "error" not in a else a for a in answers]


def test_a_give_answered_202_never_frees_the_lease_of_the_process_that_took_it(tmp_path,
                                                                              now):
    """Found on the cluster (the 202 test, after the nodes came back): A gave up B's share,
    answered 202; B took it. A, reading the leases again, must not write them free over
    B's versions: B would run their tasks under leases that say no one does, and another
    process could take them."""
    store = MemStore("tasks")
    a = Loop(store, tmp_path, now)
    a.step()
    b = Loop(store, tmp_path, now)
    a.worker.peers.store = GivesAnswered202(store)
    a.step(later(now, 1))
    assert a.worker.peers.store.answered and len(a.worker.state.owned) == 32
    for t in range(2, 5):
        b.step(later(now, t))
        a.step(later(now, t))
    assert len(b.worker.state.owned) == 32 and not a.worker.state.giving
    assert Counter(owners(store).values()) == {a.worker.id: 32, b.worker.id: 32}


def ran_and_died(tmp_path, now) -> MemStore:
    """A store where process A ran task t (due a second after ``now``) and died, or froze
    for good, before its end was written: t's open intent names A."""
    store = MemStore("tasks")
    a = Loop(store, tmp_path, now)
    a.worker.runner.pool = Manual()
    a.step()
    a.put("t", later(now, 1))
    a.step(later(now, 1))
    a.worker.runner.pool.finish()
    assert [r["id"] for r in a.ran()] == ["t"]
    return store


def test_a_run_whose_process_died_is_found_by_the_second_successor_too(tmp_path, now):
    """A runs t and dies before its end is written. B takes A's partitions and dies before
    it reads A's open intents. C, taking them from B, reads the intents of every process it
    knows dead, A's among them: t is recorded interrupted and run again, never run a second
    time as if for the first. (Found by the simulation, tests/sim.)"""
    store = ran_and_died(tmp_path, now)
    b = Loop(store, tmp_path, later(now, 1))
    b.worker.reads.orphans = lambda owners: None  # B dies before it reads A's intents
    c = Loop(store, tmp_path, later(now, 1))
    for t in range(2, 10):
        b.step(later(now, t))
        c.step(later(now, t))
    assert b.worker.state.owned  # B took A's partitions (some of them)
    for t in range(10, 20):  # B is gone too
        c.step(later(now, t))
    c.poll()
    c.step(later(now, 20))
    assert len(c.worker.state.owned) == parts.PARTITIONS
    doc = c.doc("t")
    assert doc["status"] == "done"
    outcomes = sorted(r["outcome"] for r in c.runs("t"))
    assert outcomes == ["done", "interrupted"], outcomes  # the first run recorded


def test_a_partition_is_not_handed_over_before_its_dead_owner_runs_are_decided(tmp_path,
                                                                               now):
    """Chaos seed 1890512489: A ran t and froze before its end was written; B took A's
    partitions and, before it had read A's open intents, handed half of them to C, which
    joined. C took them from a live process and read no intents: t ran again as run 1, with
    no interrupted record. B now gives a partition up only once A's runs in it are decided."""
    store = ran_and_died(tmp_path, now)
    b = Loop(store, tmp_path, later(now, 1))
    asked = []
    b.worker.reads.orphans = asked.append  # B's read of A's intents is slow
    for t in range(2, 10):
        b.step(later(now, t))
    assert len(b.worker.state.owned) == parts.PARTITIONS and b.worker.state.checking
    c = Loop(store, tmp_path, later(now, 9))
    for t in range(10, 14):
        b.step(later(now, t))
        c.step(later(now, t))
    checking = set(b.worker.state.checking)
    assert checking <= b.worker.state.owned and not checking & c.worker.state.owned
    for owners in asked:  # the read answers
        b.worker.inbox.put(("orphans", (owners, b.worker.reads.find_orphans(owners))))
    for t in range(14, 20):
        b.step(later(now, t))
        c.step(later(now, t))
    assert sorted([len(b.worker.state.owned), len(c.worker.state.owned)]) == [32, 32]
    assert b.doc("t")["status"] == "done"
    c.worker.recorder.stop()  # t's partition may be C's by now: C ran it and holds its record
    outcomes = sorted(r["outcome"] for r in b.runs("t"))
    assert outcomes == ["done", "interrupted"], outcomes  # the first run recorded, once


def test_overlap_allow_runs_of_a_killed_process_are_recorded_interrupted_once(tmp_path, now):
    """Issue 24, item 7: a task every 2 s, overlap allow, limit 12, each run going on for a
    while; the process running runs 3 and 4 dies. Each of the two is recorded interrupted
    once (with its own occurrence), never once more per later run's end, and the task ends
    done with nothing left under after.going."""
    store = MemStore("tasks")
    a = Loop(store, tmp_path, now)
    a.worker.runner.pool = Manual()
    a.step()
    a.put("t", later(now, 2), repeat={"seconds": 2, "limit": 12}, overlap="allow")
    for t in range(2, 8):  # runs 1 and 2 end; 3 (at +6) goes on, and 4 (at +8) begins
        a.step(later(now, t))
        if t < 6:
            a.worker.runner.pool.finish()
            a.step(later(now, t))
    a.step(later(now, 8))
    going = rules.info(a.doc("t")).get("going") or {}
    assert len(going) >= 1, a.doc("t")
    b = Loop(store, tmp_path, later(now, 8))  # A dies with its runs going
    b.worker.runner.pool = Manual()
    for t in range(9, 60):
        b.step(later(now, t))
        b.worker.runner.pool.finish()
        b.step(later(now, t))
        if t % 5 == 0:
            b.poll()
    doc = b.doc("t")
    assert doc["status"] == "done", doc
    assert not rules.info(doc).get("going"), rules.info(doc).get("going")
    records = b.runs("t")
    numbers = Counter(r["number"] for r in records
                      if r["outcome"] not in ("intended", "missed", "skipped"))
    assert sorted(numbers) == list(range(3, 13)) and set(numbers.values()) == {1}, numbers
    interrupted = [r for r in records if r["outcome"] == "interrupted"]
    assert len(interrupted) == len(going), [(r["number"], r.get("scheduled")) for r in records]
    assert len({r["scheduled"] for r in interrupted}) == len(interrupted)
