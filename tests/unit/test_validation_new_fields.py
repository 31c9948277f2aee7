"""``overlap``, ``priority``, ``catchup`` and the ``paused`` status, generated: whatever JSON
value a user writes there, the Client's validator (after.rules.task.parse) and the design document's
validate_doc_update (under Node.js) accept the same documents and refuse the others with the
same one-line message."""

from __future__ import annotations

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from .test_validation_corpus import python_says, vdu_says

BASE = {"_id": "gen", "worker": "billing", "date": "2026-12-01T09:00:00Z",
        "job": {"name": "report", "arguments": []}, "repeat": {"minutes": 1}}

# JavaScript cannot tell 5.0 from 5 (the corpus says so: the VDU takes an integral float for
# the integer, and shows it so), nor integers past 2**53 apart: those are left out.
FRACTIONS = st.builds(lambda whole, part: whole + part, st.integers(-10**9, 10**9),
                      st.floats(0.001, 0.999)) | st.floats(1e-12, 0.999)
# Two pre-existing limits of the VDU's pyrepr, for every field, found here: it does not know
# which characters Python's repr escapes as unprintable (an unassigned code point shows as
# '\U000149fb'), and it counts a character beyond U+FFFF as two where it cuts a long value
# short. So: letters, marks, digits, punctuation, symbols, spaces and controls of the BMP.
TEXT = st.text(st.characters(categories=("L", "M", "N", "P", "S", "Zs", "Cc"),
                             max_codepoint=0xFFFF), max_size=12)
SCALARS = (st.none() | st.booleans() | st.integers(-2 * 10**6, 2 * 10**6)
           | st.integers(-2**53, 2**53) | FRACTIONS
           | TEXT | st.sampled_from(["skip", "buffer_one", "allow", "Skip"]))
# And a third: JavaScript lists the keys of an object that look like array indices ("2")
# first, Python in the order written; so keys here start with a letter.
KEYS = TEXT.map(lambda text: "k" + text)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(KEYS, inner, max_size=3), max_leaves=6)
RETRIES = st.sampled_from([None, 0, 2, {"limit": 0}, {"delay": 1}])
STATUSES = st.sampled_from(["waiting", "paused", "scheduled", "reschedule"])


# Each example is one Node.js run of 60 documents (seconds on a loaded machine): few examples,
# no shrinking (a failure names its document).
@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(st.lists(st.tuples(VALUES, VALUES, RETRIES, STATUSES), min_size=60, max_size=60))
def test_both_validators_say_the_same_of_any_overlap_and_priority(fields):
    docs = []
    for overlap, priority, retry, status in fields:
        doc = {**BASE, "status": status, "overlap": overlap, "priority": priority}
        if retry is not None:
            doc["retry"] = retry
        docs.append(doc)
    said = vdu_says(docs)
    for doc, vdu in zip(docs, said, strict=True):
        python = python_says(doc)
        assert python == vdu, doc
        assert python is None or "\n" not in python


DST_VALUES = VALUES | st.dictionaries(
    st.sampled_from(["gap", "fold", "Gap", "spring"]),
    st.sampled_from(["shift", "skip", "first", "last", "both", "Both", None, 1]) | VALUES,
    max_size=3)
RULES = st.sampled_from([
    {"cron": "30 2 * * *", "tz": "Europe/Paris"}, {"cron": "*/30 * * * *", "tz": "UTC"},
    {"cron": "30 1 * * *"}, {"days": 1}, {"every": "PT1H"}])


@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(st.lists(st.tuples(DST_VALUES, RULES, STATUSES), min_size=60, max_size=60))
def test_both_validators_say_the_same_of_any_dst_policy(fields):
    docs = [{**BASE, "status": status, "repeat": {**repeat, "dst": dst}}
            for dst, repeat, status in fields]
    said = vdu_says(docs)
    for doc, vdu in zip(docs, said, strict=True):
        assert python_says(doc) == vdu, doc


CATCHUPS = VALUES | st.dictionaries(
    st.sampled_from(["policy", "window", "max", "Policy", "limit"]),
    st.sampled_from(["none", "latest", "all", "All", None, 0, 1, 60, 1000, 1001, -1,
                     316224000, 316224001, 0.5]) | VALUES,
    max_size=3)
OVERLAPS = st.sampled_from([None, "skip", "allow"])
CATCHUP_RULES = st.sampled_from([None, {"minutes": 1}, {"cron": "0 9 * * *"}])


@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(st.lists(st.tuples(CATCHUPS, CATCHUP_RULES, OVERLAPS, STATUSES), min_size=60,
                max_size=60))
def test_both_validators_say_the_same_of_any_catchup(fields):
    """Issue 25: ``catchup``, whatever a user writes there, with or without a repeat and
    with each overlap."""
    docs = []
    for catchup, repeat, overlap, status in fields:
        doc = {**BASE, "status": status, "catchup": catchup, "repeat": repeat}
        if repeat is None:
            del doc["repeat"]
        if overlap is not None:
            doc["overlap"] = overlap
        docs.append(doc)
    said = vdu_says(docs)
    for doc, vdu in zip(docs, said, strict=True):
        python = python_says(doc)
        assert python == vdu, doc
        assert python is None or "\n" not in python
