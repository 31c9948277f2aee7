"""Occurrences: their ids (idempotency keys), their jitter, and the one-off runs of one.

Pure functions, no I/O, no clock.

- :func:`key`: the **occurrence id** of a run, a UUID derived from the task's id and the
  occurrence's scheduled (nominal, unjittered) date, to the millisecond. Every attempt,
  retry and re-run after a crash of that occurrence has the same one; every other occurrence
  another. A manual run (``after run ID``) is an extra occurrence with an id of its own (its
  date is when it was asked for, and ``manual`` is part of what is hashed), so an endpoint
  that honours ``Idempotency-Key`` never mistakes it for a scheduled one; a backfill of an
  occurrence has that occurrence's id (it *is* that occurrence).
- :func:`jitter_ms`: how far an occurrence moves, in [0, jitter) milliseconds, derived from
  the task's id and the occurrence's nominal date: every process (and the dashboard's view,
  from :data:`JS_JITTER`) computes the same. A 32-bit FNV-1a hash of the UTF-8 bytes of
  ``id + "\\n" + epoch_ms``, finished with MurmurHash3's fmix32 (so ids that differ by one
  character spread), read as a fraction of 2**32: ``floor(h / 2**32 * jitter * 1000)``,
  the same IEEE double arithmetic in Python and JavaScript.
- :func:`extra_id`: the id of the one-off task document that runs an extra occurrence of a
  task (``<task>:manual:<date>``, ``<task>:backfill:<date>``): deterministic, so that a
  second request for the same occurrence is a 409 and nothing runs twice.

Why an extra run is a task document of its own, rather than a field or a counter on the
task: every guarantee of a task then holds for it with no new code in the worker. It is
claimed through ``_rev`` by exactly one process of the name (a pool of any size), taken over
and run again when its process dies (at least once, with the same occurrence id, which
depends on the occurrence, not on the document's revision), retried by the task's ``retry``,
refused by the validator when malformed. The task's own document, and so its schedule, is
never written: a request for an extra run can never conflict with, delay or move the
schedule, even while the task runs. Its deterministic id makes a backfill idempotent by
construction (CouchDB's 409), including two backfills asked at once from two machines; it
is one plain HTTP ``PUT`` for a user without the client; and it stays, ``done``, as the
record that the occurrence was asked for. The cost: one small document per extra run (a
backfill is bounded to ``MAX_BACKFILL`` occurrences at a time), and its run record names
the task as ``parent`` (``after runs`` lists both).

The occurrences a backfill does not copy are those the task still runs itself: its overdue
``date`` (or the one its catch-up runs: the latest due, or under ``all`` each one due) or
the run going (:func:`after.rules.task.own_occurrences`): the backfill yields
to the task, not the task to the copy, since the task's own run already is that
occurrence's (with its retries, ``max_delay`` and run number), and the worker never has to
look for copies before it starts a run (issue 24: a paused name, backfilled to now and
resumed, ran that occurrence twice with one occurrence id).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from after.rules.dates import format_date, to_ms

#: The kinds of extra runs: one asked for now, and a past occurrence run again.
MANUAL, BACKFILL = "manual", "backfill"
KINDS = (MANUAL, BACKFILL)
#: Most occurrences one backfill may run.
MAX_BACKFILL = 1000
#: The last instant a date can be (Python's and the validators' calendar ends in 9999).
LAST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)

_NAMESPACE = uuid.UUID("5f0c2a4e-6d1b-4c55-9a43-0a5e7d1f3b21")


def key(task_id: str, date: datetime, kind: str | None = None) -> str:
    """The occurrence id: the same for every attempt of one occurrence of ``task_id``."""
    extra = "\n" + MANUAL if kind == MANUAL else ""
    return str(uuid.uuid5(_NAMESPACE, f"{task_id}\n{to_ms(date)}{extra}"))


def extra_id(task_id: str, kind: str, date: str) -> str:
    """The id of the task document that runs occurrence ``date`` (as written) of ``task_id``."""
    return f"{task_id}:{kind}:{date}"


def extra_doc(parent: dict, kind: str, date: datetime) -> dict:
    """The one-off task that runs ``parent``'s job once for occurrence ``date``: due at
    ``date`` (a past one runs at once), the parent's worker, job, retry and timeout, no
    repeat and no ``max_delay`` (a backfill is late by design)."""
    when = format_date(date)
    doc = {
        "_id": extra_id(parent["_id"], kind, when),
        "worker": parent.get("worker"),
        "date": when,
        "job": parent.get("job"),
        "status": "waiting",
        "occurrence": {"task": parent["_id"], "kind": kind, "date": when},
    }
    for name in ("retry", "timeout", "priority", "concurrency", "isolation"):
        if parent.get(name) is not None:
            doc[name] = parent[name]
    return doc


def _fmix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def _hash(text: str) -> int:
    h = 0x811C9DC5
    for byte in text.encode("utf-8", "surrogatepass"):
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return _fmix(h)


def jitter_ms(task_id: str, nominal_ms: int, jitter: float) -> int:
    """Milliseconds in [0, jitter * 1000) the occurrence at ``nominal_ms`` moves by."""
    if not jitter:
        return 0
    offset = int(_hash(f"{task_id}\n{nominal_ms}") / 4294967296 * (jitter * 1000) // 1)
    return min(offset, max(0, int(-(-jitter * 1000 // 1)) - 1))  # never jitter itself


def jittered(task_id: str, nominal: datetime, jitter: float) -> datetime:
    """``nominal`` moved by its jitter (to the millisecond); at most the calendar's last
    millisecond (an occurrence in the last year of year 9999 cannot move past it)."""
    if not jitter:
        return nominal
    try:
        return nominal + timedelta(milliseconds=jitter_ms(task_id, to_ms(nominal), jitter))
    except OverflowError:
        return LAST


#: :func:`jitter_ms` in JavaScript (ES5: no Math.imul, no TextEncoder), for the views.
JS_JITTER = r"""
function jitterMs(id, nominal, jitter) {
  if (!jitter) return 0;
  function mul(a, b) {  // 32-bit multiply, like Math.imul, unsigned
    var ah = (a >>> 16) & 0xffff, al = a & 0xffff;
    return ((al * b) + (((ah * b) & 0xffff) << 16)) >>> 0;
  }
  var bytes = unescape(encodeURIComponent(id + '\n' + nominal)), h = 0x811c9dc5, i;
  for (i = 0; i < bytes.length; i++) h = mul((h ^ bytes.charCodeAt(i)) >>> 0, 0x01000193);
  h = (h ^ (h >>> 16)) >>> 0; h = mul(h, 0x85ebca6b);
  h = (h ^ (h >>> 13)) >>> 0; h = mul(h, 0xc2b2ae35);
  h = (h ^ (h >>> 16)) >>> 0;
  var offset = Math.floor(h / 4294967296 * (jitter * 1000));
  return Math.min(offset, Math.max(0, Math.ceil(jitter * 1000) - 1));
}
"""
