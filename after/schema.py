"""``after setup``: the databases, indexes and design document the scheduler relies on.

- ``<db>``: the tasks. Its design document ``_design/after`` holds
  - ``validate_doc_update``, which refuses with a 403 naming the field a task that is meant to
    run (status ``waiting``, ``scheduled``, ``running`` or ``reschedule``) but cannot: no
    ``worker``, no ``date`` or one that is not ISO 8601, no ``job.name`` or one that is not a
    job name, an unknown ``status``, or a shape no task needs and a worker cannot afford: nesting
    deeper than ``MAX_DEPTH`` levels, a string longer than ``MAX_STRING`` characters, a number
    that is not finite (``1e400``, an integer of hundreds of digits). Finished tasks (``done``, ``error``, ``canceled``) and
    ``cancel`` requests are let through, so a worker can always record an error on a task that
    was broken before the database was set up. A write that moves a runnable task to another
    runnable status and keeps its ``worker``, ``date`` and ``job`` as they were (the worker's
    claims and starts) is let through at once: those were validated when they were written,
    so only a write that changes them (a user's) is checked in full.
  - the view ``due``, keyed ``[worker, status, due_ms]``: the date normalised to epoch
    milliseconds at index time, so a worker asks for exactly "my waiting tasks due before T"
    whatever offset or precision each document wrote its date with. (A Mango index on the raw
    ``date`` string cannot do that: ``+02:00`` offsets and fractions do not sort as instants.)
    A date the view cannot read is keyed 0, so the worker sees it at once and marks it
    ``error``.
- Mango indexes on ``[worker, status, date]`` and ``[status, date]`` for listing tasks.
- ``<db>_runs``: one record per run (history), indexed by ``[task, number]``.
- ``<db>_workers``: one heartbeat document per worker process.

Running it again changes nothing that is already right (idempotent).
"""

from __future__ import annotations

import random
import time

from .jsonsafe import MAX_DEPTH, MAX_STRING
from .store import Conflict, Store

DESIGN_ID = "_design/after"

# Mirrors after.dates.ISO_DATE_RE: keep them the same grammar.
JS_PARSE_DATE = r"""
function parseDate(value) {
  if (typeof value !== 'string') return null;
  var m = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}(?::?\d{2})?)?)?$/.exec(value);
  if (!m) return null;
  var y = +m[1], mo = +m[2], d = +m[3], h = +(m[4] || 0), mi = +(m[5] || 0), s = +(m[6] || 0);
  var ms = m[7] ? +((m[7] + '00').substr(0, 3)) : 0;
  if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59) return null;
  var t = Date.UTC(y, mo - 1, d, h, mi, s, ms);
  var check = new Date(t);
  if (check.getUTCDate() !== d || check.getUTCMonth() !== mo - 1) return null;
  var tz = m[8];
  if (tz && tz !== 'Z') {
    var sign = tz.charAt(0) === '-' ? -1 : 1;
    var digits = tz.substr(1).replace(':', '');
    var oh = +digits.substr(0, 2), om = +(digits.substr(2, 2) || 0);
    if (oh > 23 || om > 59) return null;
    t -= sign * (oh * 60 + om) * 60000;
  }
  return t;
}
"""

# Walks the document with a stack of its own (no recursion): the first thing wrong, or null.
JS_SHAPE = r"""
function shape(doc) {
  var stack = [[doc, '', 1]];
  while (stack.length) {
    var top = stack.pop(), v = top[0], path = top[1], depth = top[2];
    var name = path || 'the document';
    if (name.length > 60) name = name.substr(0, 57) + '...';
    if (typeof v === 'number') {
      if (!isFinite(v)) return name + ': not a finite number';
    } else if (typeof v === 'string') {
      if (v.length > MAX_STRING)
        return name + ': a string of ' + v.length + ' characters (at most ' + MAX_STRING + ')';
    } else if (v !== null && typeof v === 'object') {
      if (depth > MAX_DEPTH) return name + ': nested deeper than ' + MAX_DEPTH + ' levels';
      if (Array.isArray(v)) {
        for (var i = 0; i < v.length; i++) stack.push([v[i], path + '[' + i + ']', depth + 1]);
      } else {
        for (var k in v) {
          if (Object.prototype.hasOwnProperty.call(v, k))
            stack.push([v[k], path ? path + '.' + k : k, depth + 1]);
        }
      }
    }
  }
  return null;
}
""".replace("MAX_DEPTH", str(MAX_DEPTH)).replace("MAX_STRING", str(MAX_STRING))

VALIDATE = (
    "function (newDoc, oldDoc, userCtx, secObj) {\n"
    + JS_PARSE_DATE
    + JS_SHAPE
    + r"""
  if (newDoc._deleted || newDoc._id.indexOf('_design/') === 0) return;
  var RUNNABLE = ['waiting', 'scheduled', 'running', 'reschedule'];
  var KNOWN = RUNNABLE.concat(['done', 'error', 'cancel', 'canceled']);
  function refuse(message) { throw({forbidden: message}); }
  var status = newDoc.status;
  if (status !== undefined && KNOWN.indexOf(status) < 0)
    refuse('status: ' + JSON.stringify(status) + ' is not one of ' + KNOWN.join(', '));
  if (status !== undefined && RUNNABLE.indexOf(status) < 0) return;
  // The cheap path: a transition (the worker's, mostly) that keeps what was validated when
  // the task was written, worker, date and job as they were, needs no second look.
  if (oldDoc && !oldDoc._deleted && oldDoc.status !== undefined
      && RUNNABLE.indexOf(oldDoc.status) >= 0 && newDoc.worker === oldDoc.worker
      && newDoc.date === oldDoc.date && typeof newDoc.worker === 'string'
      && JSON.stringify(newDoc.job) === JSON.stringify(oldDoc.job)) return;
  var wrong = shape(newDoc);
  if (wrong) refuse(wrong);
  if (typeof newDoc.worker !== 'string' || !newDoc.worker)
    refuse('worker: required (the name of the worker that runs the task)');
  if (newDoc.date === undefined) refuse('date: required (ISO 8601, e.g. 2026-12-01T09:00:00Z)');
  if (parseDate(newDoc.date) === null)
    refuse('date: ' + JSON.stringify(newDoc.date) + ' is not an ISO 8601 date or date-time');
  if (!newDoc.job || typeof newDoc.job !== 'object') refuse('job: required ({"name": ..., "arguments": [...]})');
  if (typeof newDoc.job.name !== 'string' || !newDoc.job.name) refuse('job.name: required');
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(newDoc.job.name))
    refuse('job.name: ' + JSON.stringify(newDoc.job.name) + ' is not a job name (letters, digits and _ only)');
  var args = newDoc.job.arguments;
  if (args !== undefined && args !== null && typeof args !== 'object')
    refuse('job.arguments: must be a list or an object');
  if (status === undefined) refuse('status: required ("waiting" to run the task)');
}"""
)

DUE_MAP = (
    "function (doc) {\n"
    + JS_PARSE_DATE
    + r"""
  if (typeof doc.worker !== 'string' || typeof doc.status !== 'string') return;
  var due = parseDate(doc.date);
  emit([doc.worker, doc.status, due === null ? 0 : due], null);
}"""
)

DESIGN = {
    "_id": DESIGN_ID,
    "language": "javascript",
    "validate_doc_update": VALIDATE,
    "views": {"due": {"map": DUE_MAP}},
}


def setup(store: Store, attempts: int = 8) -> list[str]:
    """Create or update everything; returns what changed (empty when nothing had to).

    Safe when many processes run it at once on a fresh database (a deploy starts them
    together): a write that loses a race to another process's identical write is a
    conflict, and the whole set-up is read and decided again, a bounded number of times.
    """
    changed: list[str] = []  # kept across passes: what a lost pass did is done
    for attempt in range(attempts):
        try:
            _setup_once(store, changed)
            return changed
        except Conflict:
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
    return changed


def _setup_once(store: Store, changed: list[str]) -> None:
    for db in (store.db, f"{store.db}_runs", f"{store.db}_workers"):
        # Ask first: creating one, even one that exists, takes a server admin.
        if not store.database_exists(db) and store.create_database(db):
            changed.append(f"created database {db}")
    current = store.get_or_none(DESIGN_ID)
    wanted = dict(DESIGN)
    if current is None or any(current.get(k) != v for k, v in DESIGN.items()):
        if current is not None:
            # keep what other parts (the dashboard) put there
            wanted = {**current, **DESIGN}
        store.put(wanted)
        changed.append(f"{'updated' if current else 'installed'} {DESIGN_ID}")
    indexes = [
        (store.db, ["worker", "status", "date"], "by-worker-status-date"),
        (store.db, ["status", "date"], "by-status-date"),
        (f"{store.db}_runs", ["task", "number"], "by-task-number"),
    ]
    for db, fields, name in indexes:
        if store.save_index(fields, name, db=db) == "created":
            changed.append(f"created index {name} on {db}")


def is_set_up(store: Store) -> bool:
    """True when the design document is installed and current."""
    if not store.database_exists():
        return False
    current = store.get_or_none(DESIGN_ID) or {}
    return all(current.get(key) == value for key, value in DESIGN.items())
