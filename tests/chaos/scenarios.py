"""Hand-made chaos schedules: the smallest scenarios found behind a seed's violation, kept to
be played again (``python -m tests.chaos --scenario NAME``, ``make chaos
CHAOS_SCENARIO=NAME``). Each is a :class:`~tests.chaos.schedule.Plan` like a seed's."""

from __future__ import annotations

from .schedule import Plan, Step, TaskPlan


def _short(count: int, first: float, last: float) -> tuple[TaskPlan, ...]:
    gap = (last - first) / max(1, count - 1)
    return tuple(TaskPlan(f"short-{i:03}", round(first + i * gap, 3), 0.05)
                 for i in range(count))


SCENARIOS = {
    # Slots 1 and 2 frozen past their lease while slot 3 dies; a new process joins slot 3
    # once they are back. Found behind seed 2 (window 15 s): tasks left waiting for ever.
    "lapse-rejoin": Plan(0, 25.0, _short(40, 2.0, 24.0), (
        Step(1.0, "freeze", 1), Step(1.0, "freeze", 2), Step(1.2, "kill", 3),
        Step(7.5, "thaw", 1), Step(7.5, "thaw", 2), Step(9.0, "start", 3),
    ), name="lapse-rejoin"),
    # 30 runs of 1.5 s due at once; two of the three processes killed 0.4 s into them,
    # before the runs are shown running (--visible, 1 s by default). Found behind seeds
    # 2026047303, 884871985, 1283925351 and 27: re-runs with no interrupted record.
    "kill-before-shown": Plan(0, 12.0, tuple(
        TaskPlan(f"at-once-{i:02}", 2.0, 1.5) for i in range(30)), (
        Step(2.4, "kill", 1), Step(2.4, "kill", 2), Step(4.0, "start", 1),
        Step(4.0, "start", 2),
    ), name="kill-before-shown"),
}
