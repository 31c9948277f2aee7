"""Chaos on the 3-node cluster, checked Jepsen's way (tests/chaos; ``make chaos`` runs
random seeds for as long as it is given). Three fixed seeds of 15 s each, chosen so that
together they hold every kind of fault and request (kill, freeze and restart of worker
processes; kill and freeze of nodes; a cancel and a reschedule through the node about to
die): each must keep every occurrence once (or re-run only after a fault cut its run, and
recorded so), lose none and leave none stuck. A failure prints the seed's schedule, what
was applied and every violation with its evidence; ``AFTER_CHAOS_SEED=N make chaos
CHAOS_WINDOW=15`` replays it."""

from __future__ import annotations

import pytest

from tests.chaos import driver
from tests.chaos.schedule import plan

SEEDS = (27, 13, 6)
WINDOW = 15.0


def test_the_fixed_seeds_hold_every_kind_of_fault_and_request():
    kinds = {step.action for seed in SEEDS for step in plan(seed, WINDOW).steps}
    assert {"kill", "freeze", "restart", "node-kill", "node-freeze", "cancel",
            "reschedule"} <= kinds


@pytest.mark.parametrize("seed", SEEDS)
def test_a_chaos_seed_runs_every_occurrence_once(cluster, seed, tmp_path):
    outcome = driver.play(cluster, seed, WINDOW, tmp_path)
    assert outcome.report is not None, outcome.text()
    assert outcome.faults >= 4, outcome.text()  # faults were applied: the run proves something
    assert outcome.report.runs >= 30, outcome.text()
    assert outcome.ok, outcome.text()
