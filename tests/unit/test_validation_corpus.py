"""One corpus of task documents (``tests/cases/documents.json``) fed to both validators:
the Client's (:func:`after.client.check`, which is :func:`after.rules.task.parse` plus the name
checks) and the design document's ``validate_doc_update``, run here under Node.js (the
integration tests PUT the same documents to pouchdb-server and CouchDB)."""

from __future__ import annotations

import json
import re

import pytest

from after.client import check
from after.couch import schema
from after.rules.task import TaskError

from ..js import cases, node
from ..strategies import fractional

CORPUS = cases("documents")["cases"]


def build(case: dict) -> dict:
    """The case's document, with what ``grow`` names built."""
    doc = {"_id": "corpus", **case["doc"]}
    for field, spec in case.get("grow", {}).items():
        if "nested" in spec:
            doc[field] = json.loads("[" * spec["nested"] + "]" * spec["nested"])
        else:
            doc[field] = "a" * spec["string"]
    return doc


def python_says(doc: dict) -> str | None:
    try:
        check(doc)
    except TaskError as exc:
        return str(exc)
    return None


def vdu_says(docs: list[dict]) -> list[str | None]:
    script = (f"const validate = {schema.VALIDATE};\n"
              f"const docs = {json.dumps(docs)};\n"
              "console.log(JSON.stringify(docs.map((doc) => {\n"
              "  try { validate(doc, null, {}, {}); return null; }\n"
              "  catch (e) { return e.forbidden === undefined ? String(e) : e.forbidden; }\n"
              "})));")
    return node(script)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c["name"])
def test_the_client_says_what_the_corpus_says(case):
    assert python_says(build(case)) == case["python"]


def test_the_validate_doc_update_says_what_the_corpus_says():
    said = vdu_says([build(case) for case in CORPUS])
    assert {c["name"]: s for c, s in zip(CORPUS, said, strict=True)} == {
        c["name"]: c["vdu"] for c in CORPUS}


@pytest.mark.parametrize("case", [c for c in CORPUS if c["python"] and c["vdu"]],
                         ids=lambda c: c["name"])
def test_where_both_refuse_they_name_the_same_field(case):
    assert case["python"].split(": ")[0] == case["vdu"].split(": ")[0]


def test_the_vdu_reads_durations_with_the_python_grammar():
    """The VDU's duration regex is repeat.py's ISO_DURATION_RE with its groups unnamed: each
    string matches, with the same groups, in both."""
    from after.rules.repeat import ISO_DURATION_RE

    assert f"/^{schema.DURATION_JS}$/.exec(text)" in schema.VALIDATE
    texts = ["P1D", "PT30M", "P1M7D", "PT0.5S", "PT0,5S", "P1W2D", "P1Y2M3W4DT5H6M7S", "P", "PT",
             "P1", "1D", "P1DT", "PT1H1D", "P-1D", "p1d", "P1.5Y", "P1D ", " P1D", "P\u0661D"]
    pattern = json.dumps("^" + schema.DURATION_JS + "$")
    got = node(f"const re = new RegExp({pattern});\n"
               f"console.log(JSON.stringify({json.dumps(texts)}.map((t) => {{\n"
               "  const m = re.exec(t);\n"
               "  return m && m.slice(1).map((g) => g === undefined ? null : g);\n"
               "})));")
    wanted = []
    for text in texts:
        match = ISO_DURATION_RE.fullmatch(text)
        wanted.append(list(match.groups()) if match else None)
    assert got == wanted


def test_the_vdu_is_es5():
    """CouchDB 3.4.3 runs it in QuickJS, pouchdb-server in Node.js: ES5 for both."""
    script = ("import { createRequire } from 'module';\n"
              "const require = createRequire(process.cwd() + '/');\n"
              "let acorn;\n"
              "try { acorn = require('acorn'); }\n"
              "catch (e) { console.log('null'); process.exit(0); }\n"
              f"acorn.parse({json.dumps('var f = ' + schema.VALIDATE + ';')}, "
              "{ecmaVersion: 5});\n"
              "console.log('true');")
    parsed = node(script)
    if parsed is None:
        pytest.skip("acorn is not installed")
    assert parsed is True


def test_generated_isolation_values_get_the_same_message_from_both():
    """Any JSON value as ``isolation``: the Client and the VDU accept the same ones and say
    the same of the others (one Node.js run for the whole generated batch). Strings of
    assigned characters of the Basic Multilingual Plane: the VDU's repr cannot tell which
    code points are assigned without Unicode's tables (an unassigned one, U+0378 or
    U+90F25, is escaped by Python and not by it), for every field's message alike; floats
    that are not whole numbers; object keys that are not array indexes."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 53, 2 ** 53),
                        fractional,
                        st.text(st.characters(max_codepoint=0xFFFF,
                                              exclude_categories=("Cn", "Co", "Cs")),
                                max_size=80),
                        st.sampled_from(["thread", "process"]))
    values = st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=12),
        st.dictionaries(st.text(st.characters(max_codepoint=0xFFFF,
                                              exclude_categories=("Cn", "Co", "Cs")),
                                max_size=8).filter(lambda k: not re.fullmatch(r"0|[1-9]\d*", k)),
                        inner, max_size=12)),  # JavaScript lists "7" first of {"a", "7"}
        max_leaves=20)
    drawn: list = []

    @settings(max_examples=300, database=None, deadline=None)
    @given(values)
    def collect(value):
        drawn.append(value)

    collect()
    base = {"_id": "gen", "worker": "w", "date": "2026-12-01T09:00:00Z", "job": {"name": "j"},
            "status": "waiting"}
    docs = [{**base, "isolation": value} for value in drawn]
    said = vdu_says(docs)
    for doc, vdu in zip(docs, said, strict=True):
        assert python_says(doc) == vdu, doc["isolation"]
    assert said.count(None) >= 1 and len(set(said)) > 20


def test_generated_dates_at_the_calendars_edges_get_the_same_message_from_both():
    """Issue 24 item 11: year 0 passed the VDU and failed in the worker. Dates drawn near
    the ends of the calendar (years 0, 1, 9998 to 9999, with offsets that may take them out
    in UTC, fields just out of range) as ``date`` and as ``repeat.until`` (just before or
    after the date): both validators accept the same and say the same of the others, and
    what they accept the worker can read."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from after.rules.dates import parse_date

    two = st.integers(0, 99).map("{:02d}".format)
    stamps = st.builds(
        lambda y, mo, d, h, mi, s, frac, tz: f"{y:04d}-{mo}-{d}T{h}:{mi}:{s}{frac}{tz}",
        st.sampled_from([0, 1, 2, 1970, 9998, 9999]),
        st.sampled_from(["00", "01", "02", "12", "13"]), st.sampled_from(["00", "01", "28",
                                                                         "29", "31", "32"]),
        st.sampled_from(["00", "12", "23", "24"]), st.sampled_from(["00", "59", "60"]), two,
        st.sampled_from(["", ".5", ".999", ".9999999"]),
        st.one_of(st.sampled_from(["", "Z", "+00:00", "-00:00", "+23:59", "-23:59", "+24:00",
                                   "+0100", "-01", "+00:60"]),
                  st.builds(lambda sign, h, m: f"{sign}{h}:{m}", st.sampled_from("+-"),
                            two, two)))
    dates = st.one_of(stamps, stamps.map(lambda t: t[:10]))
    drawn: list = []

    @settings(max_examples=400, database=None, deadline=None)
    @given(dates, st.one_of(st.none(), dates))
    def collect(date, until):
        drawn.append((date, until))

    collect()
    base = {"_id": "gen", "worker": "w", "job": {"name": "j"}, "status": "waiting"}
    docs = [{**base, "date": date, **({"repeat": {"seconds": 1, "until": until}} if until
                                      else {})} for date, until in drawn]
    said = vdu_says(docs)
    for doc, vdu in zip(docs, said, strict=True):
        python = python_says(doc)
        assert python == vdu, (doc["date"], doc.get("repeat"))
        if python is None:
            parse_date(doc["date"])  # the worker reads what both let through
    assert said.count(None) >= 5 and len(set(said)) > 20
