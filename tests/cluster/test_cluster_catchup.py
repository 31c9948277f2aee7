"""Catch-up policies on a 3-node CouchDB cluster (issue 25, item 3): the scenario of
tests/acceptance/test_pool_catchup.py, with one process per node, the tasks written
through every node: after a pause of the name, ``all`` runs each occurrence of the pause
once across the three, ``none`` runs none and records each ``missed``."""

from __future__ import annotations

from ..acceptance.test_pool_catchup import paused_series
from .test_cluster_pool import all_docs, no_conflicts_left, post, run_records, start_pool


def test_all_and_none_after_a_name_pause_on_three_nodes(ccli, tmp_path):
    start_pool(ccli, "catchers")
    found = paused_series(ccli, "catchers", tmp_path / "runs.jsonl",
                          lambda docs: post(ccli, docs), lambda ids: all_docs(ccli, ids),
                          lambda: run_records(ccli))
    no_conflicts_left(ccli, list(found["ran"]))
