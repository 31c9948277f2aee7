"""Chaos schedules (tests/chaos/schedule.py): a seed replays the same schedule, within the
bounds the driver relies on."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.chaos import scenarios
from tests.chaos.schedule import FAULTS, OPS, plan


def test_a_seed_replays_its_schedule_and_another_seed_does_not():
    assert plan(1234, 20) == plan(1234, 20)
    assert plan(1234, 20).show() == plan(1234, 20).show()
    assert plan(1234, 20) != plan(1235, 20)
    assert plan(1234, 20).show().startswith("seed 1234: ")


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([10.0, 20.0, 30.0]))
def test_schedules_stay_within_their_bounds(seed, window):
    p = plan(seed, window)
    assert [s.at for s in p.steps] == sorted(s.at for s in p.steps)
    assert all(0 <= s.at < window + 9 for s in p.steps)
    down = {}  # target -> when its fault began
    nodes_down = 0
    for step in p.steps:
        if step.action in ("kill", "freeze"):
            assert step.target not in down
            down[step.target] = step.at
        elif step.action in ("start", "thaw"):
            began = down.pop(step.target)
            if step.action == "thaw":
                assert 2.0 <= step.at - began <= 8.0
        elif step.action in ("node-kill", "node-freeze"):
            nodes_down += 1
            assert nodes_down == 1  # one node at a time
        elif step.action == "node-start":
            nodes_down -= 1
        assert len(down) <= 2  # never the three slots at once
    assert not down and nodes_down == 0  # every fault ends
    for op in p.ops:  # through the node about to die, just before it does
        fault = next(s for s in p.steps if s.action in ("node-kill", "node-freeze")
                     and s.at >= op.at)
        assert fault.target == op.target and fault.at - op.at <= 0.15 + 1e-9
    ids = [t.id for t in p.tasks]
    assert len(ids) == len(set(ids))
    assert len({op.task for op in p.ops}) == len(p.ops)  # a task is asked at most once
    rescheduled = {op.task for op in p.ops if op.action == "reschedule"}
    assert all(t.every is None for t in p.tasks if t.id in rescheduled)


def test_schedules_hold_every_kind_of_fault_and_request_over_seeds():
    kinds = {s.action for seed in range(30) for s in plan(seed, 20).steps}
    assert set(FAULTS) | set(OPS) <= kinds
    counts = [len(plan(seed, 20).faults) for seed in range(30)]
    assert min(counts) >= 4 and sum(counts) / len(counts) >= 6


def test_a_task_plan_becomes_a_task_document():
    p = plan(7, 20)
    start = datetime(2026, 12, 1, 9, tzinfo=UTC)
    repeating = next(t for t in p.tasks if t.every is not None)
    doc = repeating.doc(start, "/tmp/h.jsonl", "chaos")
    assert doc["worker"] == "chaos" and doc["status"] == "waiting"
    assert doc["job"] == {"name": "history", "arguments": ["/tmp/h.jsonl", repeating.seconds]}
    assert doc["repeat"] == {"milliseconds": int(repeating.every * 1000),
                             "limit": repeating.limit}
    one_off = next(t for t in p.tasks if t.every is None)
    assert "repeat" not in one_off.doc(start, "/tmp/h.jsonl", "chaos")


def test_scenarios_are_plans_the_driver_can_play():
    for name, scenario in scenarios.SCENARIOS.items():
        assert scenario.name == name and scenario.show().startswith(f"scenario {name}: ")
        assert all(step.target in (1, 2, 3) for step in scenario.steps)
