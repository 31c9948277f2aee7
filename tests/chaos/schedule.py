"""A chaos schedule from a seed: the tasks, and the faults and user requests in time.

Pure: :func:`plan` draws everything from ``random.Random(seed)``, so a seed replays the same
schedule (the same tasks at the same offsets, the same faults on the same targets at the
same offsets). What the processes do in between is not replayed: that is what is tested.

Times are seconds from the schedule's start (the driver posts the tasks just before it).
Workers are the pool's slots 1-3 (slot k's process has node k first); nodes are 1-3.

Faults, at random times across the window, one every 0.8-3 s:

- ``kill`` a worker process (SIGKILL), started again 1-5 s later (``start``);
- ``freeze`` a worker process (SIGSTOP) for 2-8 s (``thaw``: SIGCONT), across its lease;
- ``restart`` a worker process: SIGTERM (a graceful stop, jobs get ``--grace``), then a new
  process in its slot once it exited;
- ``node-kill`` a CouchDB node (SIGKILL), started again 3-8 s later (``node-start``);
- ``node-freeze`` a CouchDB node (SIGSTOP) for 2-8 s (``node-start`` sends SIGCONT);
- just before most node faults (0-0.15 s), a ``cancel`` or a ``reschedule`` of a task due
  about then, sent through the node about to die: the driver does not wait for its answer
  before the fault, so the node may die under the request (then the history says the
  request failed, and the tasks as they ended say whether it was written).

At most two worker slots are faulted at once and one node at a time (two nodes down of
three: every write is a 202 and a frozen node blocks quorum reads for a minute, which this
schedule does not mean to test).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from after.rules.dates import format_date

__all__ = ["Plan", "Step", "TaskPlan", "plan"]

WORKER_FAULTS = ("kill", "freeze", "restart")
NODE_FAULTS = ("node-kill", "node-freeze")
FAULTS = WORKER_FAULTS + NODE_FAULTS
OPS = ("cancel", "reschedule")
#: How often each fault is drawn.
WEIGHTS = {"kill": 3, "freeze": 3, "restart": 2, "node-kill": 2, "node-freeze": 2}
#: Seconds a worker process takes to start (a slot is busy meanwhile).
WORKER_START = 2.0
#: Seconds ``couchdb.sh node-start`` may take (the next node fault waits that long).
NODE_START = 6.0
#: The grace a worker's SIGTERM gives its jobs (``after start --grace``): a restart that
#: comes during a long run cuts it.
GRACE = 3.0


@dataclass(frozen=True)
class TaskPlan:
    """One task: due ``due`` seconds after the start, its job running ``seconds``; a
    repeating one every ``every`` seconds, ``limit`` runs."""

    id: str
    due: float
    seconds: float
    every: float | None = None
    limit: int | None = None

    def doc(self, start: datetime, path: str, worker: str) -> dict:
        doc = {"_id": self.id, "worker": worker, "status": "waiting",
               "date": format_date(start + timedelta(seconds=self.due)),
               "job": {"name": "history", "arguments": [path, self.seconds]}}
        if self.every is not None:
            doc["repeat"] = {"milliseconds": int(self.every * 1000), "limit": self.limit}
        return doc


@dataclass(frozen=True)
class Step:
    """One thing the driver does at ``at``: a fault's beginning or end (``start``,
    ``thaw``, ``node-start``), or a user's request (``cancel``; ``reschedule`` to ``due``,
    seconds after the start) through node ``target``."""

    at: float
    action: str
    target: int
    task: str | None = None
    due: float | None = None

    def show(self) -> str:
        what = {"kill": "SIGKILL worker", "start": "start worker", "freeze": "SIGSTOP worker",
                "thaw": "SIGCONT worker", "restart": "SIGTERM (restart) worker",
                "node-kill": "SIGKILL node", "node-freeze": "SIGSTOP node",
                "node-start": "start node", "cancel": "cancel through node",
                "reschedule": "reschedule through node"}[self.action]
        extra = f" task {self.task}" if self.task else ""
        if self.due is not None:
            extra += f" to t+{self.due:.2f}s"
        return f"t+{self.at:6.2f}s  {what} {self.target}{extra}"


@dataclass(frozen=True)
class Plan:
    seed: int
    window: float
    tasks: tuple[TaskPlan, ...]
    steps: tuple[Step, ...]
    name: str | None = None  # a hand-made scenario's (tests/chaos/scenarios.py)

    @property
    def faults(self) -> list[Step]:
        return [s for s in self.steps if s.action in FAULTS]

    @property
    def ops(self) -> list[Step]:
        return [s for s in self.steps if s.action in OPS]

    @property
    def label(self) -> str:
        return f"scenario {self.name}" if self.name else f"seed {self.seed}"

    @property
    def end(self) -> float:
        """When the last step is due."""
        return max([self.window, *(s.at for s in self.steps)])

    def show(self) -> str:
        kinds = {kind: sum(s.action == kind for s in self.steps) for kind in FAULTS + OPS}
        repeating = sum(t.every is not None for t in self.tasks)
        head = (f"{self.label}: {len(self.tasks)} tasks ({repeating} repeating) over "
                f"{self.window:g} s; {len(self.faults)} faults ("
                + ", ".join(f"{kind} {n}" for kind, n in kinds.items() if n and kind in FAULTS)
                + f"), {len(self.ops)} requests through a node about to die")
        return "\n".join([head, *(f"  {s.show()}" for s in self.steps)])


def plan(seed: int, window: float = 20.0) -> Plan:
    """The schedule of ``seed`` over ``window`` seconds."""
    rng = random.Random(seed)
    tasks = _tasks(rng, window)
    steps: list[Step] = []
    worker_free = {k: 0.0 for k in (1, 2, 3)}
    node_free = 0.0
    targeted: set[str] = set()
    t = rng.uniform(0.5, 2.0)
    while t < window:
        free = [k for k, until in worker_free.items() if until <= t]
        kinds = [kind for kind in WEIGHTS if kind in WORKER_FAULTS and len(free) >= 2
                 or kind in NODE_FAULTS and node_free <= t]  # (never a third slot at once)
        if kinds:
            kind = rng.choices(kinds, weights=[WEIGHTS[kind] for kind in kinds])[0]
            if kind in WORKER_FAULTS:
                k = rng.choice(free)
                if kind == "kill":
                    back = t + rng.uniform(1.0, 5.0)
                    steps += [Step(t, "kill", k), Step(back, "start", k)]
                    worker_free[k] = back + WORKER_START
                elif kind == "freeze":
                    thaw = t + rng.uniform(2.0, 8.0)
                    steps += [Step(t, "freeze", k), Step(thaw, "thaw", k)]
                    worker_free[k] = thaw + 0.5
                else:
                    steps.append(Step(t, "restart", k))
                    worker_free[k] = t + GRACE + WORKER_START + 2.0
            else:
                n = rng.choice((1, 2, 3))
                back = t + rng.uniform(3.0, 8.0) if kind == "node-kill" else \
                    t + rng.uniform(2.0, 8.0)
                steps += [*_op(rng, tasks, targeted, t, n), Step(t, kind, n),
                          Step(back, "node-start", n)]
                node_free = back + NODE_START
        t += rng.uniform(0.8, 3.0)
    steps.sort(key=lambda s: s.at)
    return Plan(seed, window, tuple(tasks), tuple(steps))


def _tasks(rng: random.Random, window: float) -> list[TaskPlan]:
    tasks = [TaskPlan(f"short-{i:03}", round(rng.uniform(1.0, window), 3),
                      round(rng.uniform(0.02, 0.3), 3))
             for i in range(int(window * 1.5))]
    tasks += [TaskPlan(f"long-{i:02}", round(rng.uniform(1.0, max(1.5, window - 3)), 3),
                       round(rng.uniform(3.0, 6.0), 3))
              for i in range(max(2, int(window / 5)))]
    for i in range(3):
        every = rng.choice((1.0, 1.5, 2.0))
        due = round(rng.uniform(0.5, window / 3), 3)
        limit = max(3, int((window - due) / every * 0.8))
        tasks.append(TaskPlan(f"every-{i}", due, round(rng.uniform(0.02, 0.2), 3), every,
                              limit))
    return tasks


def _op(rng: random.Random, tasks: list[TaskPlan], targeted: set[str], t: float,
        node: int) -> list[Step]:
    """Most of the time, a cancel or a reschedule of a task due about ``t`` (or running
    then), sent through ``node`` just before it fails."""
    if rng.random() >= 0.8:
        return []
    near = [task for task in tasks if task.id not in targeted and (
        t - 2.0 <= task.due <= t + 6.0 or task.every is not None
        and task.due <= t <= task.due + task.every * task.limit)]
    if not near:
        return []
    task = rng.choice(near)
    targeted.add(task.id)
    at = max(0.0, t - rng.uniform(0.0, 0.15))
    if task.every is None and rng.random() < 0.5:
        return [Step(at, "reschedule", node, task.id, round(at + rng.uniform(1.0, 5.0), 3))]
    return [Step(at, "cancel", node, task.id)]
