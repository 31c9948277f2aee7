"""The gauges of missed and doubled occurrences (after.metrics.AuditGauges): an audit made
at most once a minute, at a scrape, with a clock passed in; no server."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from after.audit import VERDICTS
from after.metrics import AUDIT_EVERY, AUDIT_WINDOW, AuditGauges

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def counts(**given) -> dict:
    return {verdict: given.get(verdict, 0) for verdict in VERDICTS} | {"extra": 0}


def test_the_audit_is_made_at_most_once_a_minute_and_its_window_is_bounded():
    clock, asked = [NOW], []
    answers = iter([counts(missed=1, never=2, twice=1), counts(twice=3)])

    def audit(start, end, now):
        asked.append((start, end, now))
        return next(answers)

    gauges = AuditGauges(audit, clock=lambda: clock[0])
    assert (gauges.missed(), gauges.twice()) == (3.0, 1.0)
    clock[0] = NOW + AUDIT_EVERY - timedelta(seconds=1)
    assert (gauges.missed(), gauges.twice()) == (3.0, 1.0)  # the same audit
    assert asked == [(NOW - AUDIT_WINDOW, NOW, NOW)]
    clock[0] = NOW + AUDIT_EVERY
    assert (gauges.twice(), gauges.missed()) == (3.0, 0.0)
    assert len(asked) == 2 and asked[1][2] == NOW + AUDIT_EVERY


def test_an_audit_that_fails_keeps_the_last_counts_and_is_tried_again_later():
    clock, calls = [NOW], []

    def audit(start, end, now):
        calls.append(now)
        if len(calls) in (1, 3):
            raise OSError("the database is unreachable")
        return counts(never=4)

    gauges = AuditGauges(audit, clock=lambda: clock[0])
    assert math.isnan(gauges.missed()) and math.isnan(gauges.twice())  # none made yet
    assert len(calls) == 1  # not again at once
    clock[0] += AUDIT_EVERY
    assert gauges.missed() == 4.0
    clock[0] += AUDIT_EVERY
    assert gauges.missed() == 4.0 and len(calls) == 3  # failed: the last counts
