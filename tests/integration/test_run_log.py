"""The worker's log says what follows a failed run: the attempt and when the next one is, or
that no retry is left (after.worker.oplog), on each real server."""

from __future__ import annotations

import logging


def test_a_retried_failure_and_the_last_one_read_differently(harness, caplog):
    caplog.set_level(logging.WARNING, logger="after")
    harness.start("w")
    harness.put("flaky", job="fail", arguments=["boom"], retry={"limit": 1, "delay": 0.2})
    harness.wait_status("flaky", "error")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("task flaky")]
    assert len(lines) == 2, lines
    assert lines[0].startswith("task flaky (job fail): attempt 1 of 2 failed, next at ")
    assert lines[0].endswith(": RuntimeError: boom")
    assert lines[1] == "task flaky (job fail): attempt 2 of 2 failed, no retry left: " \
                       "RuntimeError: boom"
