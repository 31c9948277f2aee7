"""Pure helpers of the command line's output (after.cli.common), at a fixed NOW."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from after.cli.common import ago, plural

NOW = datetime(2027, 1, 4, 9, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("stamp, text", [
    ("2027-01-04T08:59:48.000Z", "12s ago"),
    ("2027-01-04T09:00:00.000Z", "0s ago"),
    ("2027-01-04T09:00:00.300Z", "0s ago"),  # another machine's clock a little ahead
    ("2027-01-04T09:00:05.000Z", "0s ago"),
    ("2027-01-04T08:59:59.600Z", "0s ago"),
    (None, "-"),
    ("garbage", "-"),
])
def test_ago_never_prints_a_negative_age(stamp, text):
    assert ago(stamp, NOW) == text


@pytest.mark.parametrize("count, entries, files", [
    (0, "0 dead registry entries", "0 stale pid files"),
    (1, "1 dead registry entry", "1 stale pid file"),
    (2, "2 dead registry entries", "2 stale pid files"),
])
def test_plural(count, entries, files):
    assert plural(count, "dead registry entry", "dead registry entries") == entries
    assert plural(count, "stale pid file") == files
