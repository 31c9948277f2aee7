"""Property-based: generated task documents, good and pathological, against a real server.

Each example writes a batch of documents (good tasks mixed with broken and hostile ones) to
the database one worker follows, and checks:

- every good task runs exactly once and ends ``done``;
- every bad one is refused by the server when written (403; or, for numbers the server
  itself cannot read, another 4xx/5xx) or ends ``error`` with a one-line message;
- nothing of the batch stays ``waiting``, ``scheduled`` or ``running``;
- the worker stays alive, and its log has no unexpected-error loop.

``make test`` runs a few examples; ``AFTER_HYPOTHESIS_EXAMPLES=200`` runs more.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from after.rules.dates import format_date, utcnow

EXAMPLES = int(os.environ.get("AFTER_HYPOTHESIS_EXAMPLES", "6"))
ENDED = ("done", "error")


@dataclass
class Case:
    """One generated document: its id, its JSON text, and whether it should run."""

    docid: str
    body: str
    good: bool
    what: str


# -- strategies ---------------------------------------------------------------------------

ids = st.text(
    alphabet=st.one_of(st.sampled_from("/%? &#<>\"'\\+é漢😀\u0000\t"),
                       st.characters(codec="utf-8", exclude_categories=("Cs",))),
    min_size=1, max_size=30,
).filter(lambda s: not s.startswith("_"))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 63),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)

# Values under "after" the worker must tolerate on a task that is otherwise fine.
after_junk = st.dictionaries(
    st.sampled_from(["owner", "due", "anchor", "attempt", "runs", "run", "successes",
                     "failures", "missed", "occurrences", "started", "last_run", "next_run",
                     "error", "claimed", "retry_at", "isolated"]),
    json_values, max_size=4)

good_extras = st.fixed_dictionaries({}, optional={
    "retry": st.one_of(st.integers(0, 3), st.fixed_dictionaries(
        {"limit": st.integers(0, 3), "delay": st.floats(0, 5)})),
    "timeout": st.floats(30, 3600),
    "isolation": st.sampled_from(["thread", "process", None]),
    "priority": st.integers(-10, 10),
    "note": json_values,
    "after": after_junk,
})


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# Breaks a good document: (what, field, JSON text of the value, refused by the server?)
# None for "refused" means either way is right (the worker's parser or the server).
breakers = st.one_of(
    st.tuples(st.just("date"), st.just("date"),
              st.sampled_from(['"tomorrow"', '"2026-13-01"', "12", "[]", "null"]),
              st.just(True)),
    st.tuples(st.just("job name"), st.just("job"),
              st.sampled_from(['{"name": "no such job"}', '{"name": "../etc/passwd"}',
                               '{"name": 7}', '"hello"']),
              st.just(True)),
    st.tuples(st.just("unknown job"), st.just("job"),
              st.sampled_from(['{"name": "os"}', '{"name": "no_such_job_here"}',
                               '{"name": "__import__"}']),
              st.just(None)),
    st.tuples(st.just("repeat"), st.just("repeat"),
              st.sampled_from(['{"dayz": 1}', '"P1e308D"', '{"days": 1e308}',
                               '{"cron": "61 * * * *"}', '"P' + "9" * 40 + 'D"', "-1"]),
              st.just(None)),
    st.tuples(st.just("numbers"), st.sampled_from(["timeout", "max_delay"]),
              st.sampled_from(["1e308", "-1", "0", '"30"', "[60]", "true"]),
              st.just(None)),
    st.tuples(st.just("retry"), st.just("retry"),
              st.sampled_from(["-1", "1" + "0" * 30, '{"delay": 1e12}', '{"limit": 1e308}',
                               '{"backoff": "sideways"}', '"3"']),
              st.just(None)),
    st.tuples(st.just("deep"), st.sampled_from(["note", "job.arguments", "after"]),
              st.integers(65, 3000).map(nested), st.just(True)),
    st.tuples(st.just("long string"), st.sampled_from(["note", "worker"]),
              st.just('"' + "x" * 1_200_000 + '"'), st.just(True)),
    st.tuples(st.just("huge number"), st.just("note"),
              st.sampled_from(["1" + "0" * 5000, "-1e400", "1e999"]), st.just(True)),
    st.tuples(st.just("isolation"), st.just("isolation"),
              st.sampled_from(['"fork"', '"Process"', '""', "1", "true", '["process"]',
                               '{"process": true}']), st.just(True)),
    st.tuples(st.just("status"), st.just("status"),
              st.sampled_from(['"running!"', "1", '{"s": "waiting"}']), st.just(True)),
)


@st.composite
def cases(draw, path: str) -> list[Case]:
    batch = f"p{uuid.uuid4().hex[:6]}-"
    out: list[Case] = []
    for _ in range(draw(st.integers(1, 8))):
        docid = batch + draw(ids)
        if any(c.docid == docid for c in out):
            continue
        doc = {"worker": "w",
               "date": format_date(utcnow() + timedelta(seconds=draw(st.floats(-5, 1)))),
               "job": {"name": "record", "arguments": [path]}, "status": "waiting",
               **draw(good_extras)}
        out.append(Case(docid, json.dumps(doc), True, "good"))
    for _ in range(draw(st.integers(0, 6))):
        docid = batch + "bad-" + draw(ids)
        if any(c.docid == docid for c in out):
            continue
        what, field, value, _refused = draw(breakers)
        doc = {"worker": "w", "date": format_date(utcnow()),
               "job": {"name": "record", "arguments": [path]}, "status": "waiting",
               "note": None}
        text = json.dumps(doc)
        if field == "job.arguments":
            text = text.replace(json.dumps([path]), value)
        else:
            placeholder = "\u0001PLACEHOLDER\u0001"
            doc[field.split(".")[0]] = placeholder
            text = json.dumps(doc).replace(json.dumps(placeholder), value)
        out.append(Case(docid, text, False, what))
    return out


# -- the property ---------------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data())
def test_generated_documents_never_stick_nor_stop_the_worker(data, harness, store, caplog):
    caplog.set_level(logging.INFO, logger="after")
    worker = harness.workers[0][0] if harness.workers else harness.start()
    batch = data.draw(cases(str(harness.record_file)))
    refused: dict[str, int] = {}
    for case in batch:
        response = store.client.put(f"{quote(store.db, safe='')}/{quote(case.docid, safe='')}",
                                    content=case.body.encode())
        if response.status_code >= 400:
            refused[case.docid] = response.status_code
    for case in batch:
        if case.good:
            assert case.docid not in refused, (case, refused)
        elif case.docid in refused:
            status = refused[case.docid]
            assert status == 403 or case.what == "huge number", (case.what, status)

    written = [c.docid for c in batch if c.docid not in refused]
    docs = harness.wait(lambda: (lambda got: got if all(
        got.get(i, {}).get("status") in ENDED for i in written) else None)(
        store.bulk_get(written)), timeout=40, what="every written task to end")

    runs = Counter(line["id"] for line in harness.recorded())
    for case in batch:
        if case.docid in refused:
            continue
        doc = docs[case.docid]
        if case.good:
            assert doc["status"] == "done", (case, doc.get("after"))
            assert runs[case.docid] == 1, (case.docid, runs[case.docid])
        else:
            assert doc["status"] == "error", (case.what, doc.get("after"))
            message = doc["after"]["error"]
            assert message and "\n" not in message and len(message) <= 500, message
            assert runs[case.docid] == 0
    assert worker in [w for w, _, _ in harness.workers]
    assert all(thread.is_alive() for _, thread, _ in harness.workers)
    assert "unexpected error in the worker loop" not in caplog.text
    harness.wait(lambda: not worker.held and not worker.pending, timeout=5,
                 what="the worker to let go of every ended task")
