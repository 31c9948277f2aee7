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
