"""Hypothesis strategies shared by the tests that hold two validators to each other."""

from __future__ import annotations

from hypothesis import strategies as st

#: Floats with a fractional part (JSON's 5.0 is 5 to JavaScript, so the VDU shows it as 5):
#: mapped rather than filtered, as a filter inside lists of many values makes hypothesis
#: give up (FailedHealthCheck). Below 1e12, ``f + 0.25`` always has a fractional part.
fractional = st.floats(-1e12, 1e12, allow_nan=False).map(
    lambda f: f + 0.25 if f.is_integer() else f)
