"""One corpus of task documents (``tests/cases/documents.json``) fed to both validators:
the Client's (:func:`after.client.check`, which is :func:`after.task.parse` plus the name
checks) and the design document's ``validate_doc_update``, run here under Node.js (the
integration tests PUT the same documents to pouchdb-server and CouchDB)."""

from __future__ import annotations

import json

import pytest

from after import schema
from after.client import check
from after.task import TaskError

from ..js import cases, node

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
    from after.repeat import ISO_DURATION_RE

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
