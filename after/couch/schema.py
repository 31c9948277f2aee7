"""``after setup``: the databases, indexes and design document the scheduler relies on.

- ``<db>``: the tasks. Its design document ``_design/after`` holds

  - ``validate_doc_update``, which refuses with a 403 naming the field a task that is meant
    to run (status ``waiting``, ``scheduled``, ``running``, ``reschedule`` or ``paused``)
    but cannot: no ``worker``, no ``date`` or one that is not ISO 8601, no ``job.name`` or
    one that is not a job name, an unknown ``status``, a ``repeat``, ``retry``,
    ``timeout``, ``max_delay``, ``isolation``, ``overlap``, ``priority`` or ``catchup`` that
    :func:`after.rules.task.parse` refuses (with its message; see ``JS_DEFINITION`` for what
    is left to the worker), or a shape no task needs and a worker cannot afford: nesting
    deeper than ``MAX_DEPTH`` levels, a string longer than ``MAX_STRING`` characters, a
    number that is not finite (``1e400``, an integer of hundreds of digits). Finished tasks
    (``done``, ``error``, ``canceled``) and ``cancel`` requests are let through, so a worker
    can always record an error on a task that was broken before the database was set up. A
    write that moves a runnable task to another runnable status and keeps its definition
    (:data:`after.rules.task.DEFINITION`) as it was (the worker's writes) is let through at
    once: that was validated when it was written, so only a write that changes it (a
    user's) is checked in full.
  - the view ``due``, keyed ``[worker, status, due_ms]``: the date normalised to epoch
    milliseconds at index time (and moved by ``repeat.jitter`` as the workers move it, so a
    task whose date has passed but whose jittered instant has not stays out of a poll), so
    a worker asks for exactly "my waiting tasks due before T" whatever offset or precision
    each document wrote its date with. (A Mango index on the raw ``date`` string cannot do
    that: ``+02:00`` offsets and fractions do not sort as instants.) A date the view cannot
    read is keyed 0, so the worker sees it at once and marks it ``error``.

- Mango indexes on ``[worker, status, date]`` and ``[status, date]`` for listing tasks.
- ``<db>_runs``: one record per run (history), indexed by ``[task, number]``, and the runs
  of extra occurrences (manual, backfill) by ``[parent, started]``; by ``[worker,
  scheduled]`` and ``[task, scheduled]`` for ``after audit``.
- ``<db>_workers``: one heartbeat document per worker process.

Running it again changes nothing that is already right (idempotent).

Why the rules are written twice, in Python and in JavaScript: CouchDB runs a
validate_doc_update in its own JavaScript engine, with no way to call Python, and a task
written with plain HTTP must be refused by the database itself, with the message the Client
gives. A table of fields from which both were generated was tried in thought and left: the
rules are not a table (a cron with a ``dst`` needs a ``tz``, a ``debounce`` excludes a
``repeat``, a ``catchup`` depends on ``overlap``), and a generator for them would be a third
program to trust. So the two stay hand-written, take every constant (statuses, units,
limits, the date and duration grammars, the job-name pattern) from the Python rules, below,
and are kept equal by the shared corpus (``tests/cases/documents.json``, run against
``parse`` and the validation: tests/unit/test_validation_corpus.py, and on both servers
tests/integration/test_store.py) and by hypothesis (tests/unit/test_validation_*.py).
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

from after.config import databases, runs_db
from after.couch.store import Conflict, Store
from after.rules import calendar, catchup
from after.rules.dates import ISO_DATE_RE
from after.rules.jobnames import JOB_NAME
from after.rules.jsonsafe import MAX_DEPTH, MAX_STRING
from after.rules.occurrence import JS_JITTER
from after.rules.repeat import _UNIT_HELP as UNIT_HELP
from after.rules.repeat import (
    DST_HELP,
    FOLDS,
    GAPS,
    ISO_DURATION_RE,
    MAX_JITTER,
    MIN_INTERVAL_US,
    SHORTHANDS,
    UNITS,
)
from after.rules.task import (
    CAP_KEY_HELP,
    CAP_KEY_RE,
    CHECKED,
    DEFINITION,
    ISOLATIONS,
    MAX_CONCURRENCY,
    MAX_PRIORITY,
    MAX_RETRIES,
    MAX_SECONDS,
    OVERLAPS,
    RUNNABLE,
    STATUSES,
)

DESIGN_ID = "_design/after"

#: repeat.py's ISO 8601 duration grammar as a JavaScript regex: its named groups unnamed.
DURATION_JS = re.sub(r"\?P<[a-z]+>", "", ISO_DURATION_RE.pattern)

# The grammar of after.rules.dates, from its very regex (written to be valid JavaScript too);
# tested with the Python parser and the dashboard's against tests/cases/dates.json.
JS_PARSE_DATE = r"""
function parseDate(value) {
  if (typeof value !== 'string') return null;
  var m = /ISO_DATE_RE/.exec(value);
  if (!m) return null;
  var y = +m[1], mo = +m[2], d = +m[3], h = +(m[4] || 0), mi = +(m[5] || 0), s = +(m[6] || 0);
  var ms = m[7] ? +((m[7] + '00').substr(0, 3)) : 0;
  if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59) return null;
  var check = new Date(0);
  check.setUTCFullYear(y, mo - 1, d);  // not Date.UTC: it reads years 0-99 as 1900-1999
  check.setUTCHours(h, mi, s, ms);
  if (check.getUTCDate() !== d || check.getUTCMonth() !== mo - 1) return null;
  var t = check.getTime();
  var tz = m[8];
  if (tz && tz !== 'Z') {
    var sign = tz.charAt(0) === '-' ? -1 : 1;
    var digits = tz.substr(1).replace(':', '');
    var oh = +digits.substr(0, 2), om = +(digits.substr(2, 2) || 0);
    if (oh > 23 || om > 59) return null;
    t -= sign * (oh * 60 + om) * 60000;
  }
  // Python's datetime: years 1 to 9999, in UTC too (an offset may take an instant out)
  return t < -62135596800000 || t > 253402300799999 ? null : t;
}
""".replace("ISO_DATE_RE", ISO_DATE_RE.pattern)

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

# The definition of a task a user writes, checked as after.rules.task.parse checks it and
# with its messages: ``repeat`` (after.rules.repeat.parse_repeat), ``retry``
# (after.rules.task.parse_retry), ``timeout`` and ``max_delay``, in parse's order. Values are
# shown as Python's repr shows them (pyrepr, iterative and cut short); JavaScript cannot tell
# 5.0 from 5, so an integral float is taken as the integer it equals. Left to the worker: a
# cron expression's fields and croniter's H/R, whether ``tz`` names a zone, and what only the
# Python types tell apart. It is after/couch/definition.js, a file of its own to be read and
# linted as JavaScript; its header comment stays out of the design document.
_DEFINITION_FILE = Path(__file__).with_name("definition.js").read_text(encoding="utf-8")
JS_DEFINITION = "\n" + re.sub(r"\A(?://[^\n]*\n)+", "", _DEFINITION_FILE)
for _name, _value in (
        ("REPEAT_UNITS", json.dumps(list(UNITS))),
        ("REPEAT_SHORTHANDS", json.dumps(SHORTHANDS)),
        ("REPEAT_UNIT_HELP", json.dumps(UNIT_HELP)),
        ("TASK_MAX_SECONDS", str(MAX_SECONDS)),
        ("TASK_MAX_RETRIES", str(MAX_RETRIES)),
        ("TASK_OVERLAPS", json.dumps(list(OVERLAPS))),
        ("TASK_MAX_PRIORITY", str(MAX_PRIORITY)),
        ("TASK_CATCHUP_POLICIES", json.dumps(list(catchup.POLICIES))),
        ("TASK_MAX_CATCHUP", str(catchup.MAX_CATCHUP)),
        ("ISOLATIONS", json.dumps(list(ISOLATIONS))),
        ("MAX_CONCURRENCY", str(MAX_CONCURRENCY)),
        ("CAP_KEY_RE", CAP_KEY_RE.pattern),
        ("CAP_KEY_HELP", CAP_KEY_HELP),
        ("CALENDAR_MAX_ITEMS", str(calendar.MAX_ITEMS)),
        ("CALENDAR_NAME_RE", calendar.NAME_RE.pattern),
        ("CALENDAR_NAME_HELP", calendar.NAME_HELP),
        ("CALENDAR_PREFIX", json.dumps(calendar.PREFIX)),
        ("MIN_US", str(MIN_INTERVAL_US)),
        ("MAX_JITTER", str(MAX_JITTER)),
        ("DST_HELP", DST_HELP),
        ("DST_GAPS", json.dumps(list(GAPS))),
        ("DST_FOLDS", json.dumps(list(FOLDS))),
        ("ISO_DATE_RE", ISO_DATE_RE.pattern),
        ("ISO_DURATION_RE", DURATION_JS)):
    JS_DEFINITION = JS_DEFINITION.replace(_name, _value)

VALIDATE = (
    "function (newDoc, oldDoc, userCtx, secObj) {\n"
    + JS_PARSE_DATE
    + JS_SHAPE
    + JS_DEFINITION
    + r"""
  if (newDoc._deleted || newDoc._id.indexOf('_design/') === 0) return;
  function refuse(message) { throw({forbidden: message}); }
  if (newDoc._id.indexOf(CALENDAR_ID_PREFIX) === 0) {  // a shared calendar, not a task
    var problem = shape(newDoc) || definitionProblem(newDoc);
    if (problem) refuse(problem);
    return;
  }
  var RUNNABLE = TASK_RUNNABLE, CHECKED = TASK_CHECKED;
  var KNOWN = TASK_STATUSES;
  var status = newDoc.status;
  if (status !== undefined && KNOWN.indexOf(status) < 0)
    refuse('status: ' + JSON.stringify(status) + ' is not one of ' + KNOWN.join(', '));
  if (status !== undefined && CHECKED.indexOf(status) < 0) return;
  // The cheap path: a transition (the worker's, mostly) that keeps what was validated when
  // the task was written (its whole definition: worker, date, job, repeat, retry, timeout,
  // max_delay, isolation) needs no second look.
  function same(a, b) {  // deep equality, iterative and bounded (a document may be deep)
    var stack = [[a, b]], seen = 0;
    while (stack.length) {
      var pair = stack.pop(), x = pair[0], y = pair[1];
      if (++seen > 10000) return false;
      if (x === y) continue;
      if (typeof x !== 'object' || typeof y !== 'object' || x === null || y === null
          || Array.isArray(x) !== Array.isArray(y)) return false;
      var keys = Object.keys(x);
      if (keys.length !== Object.keys(y).length) return false;
      for (var k = 0; k < keys.length; k++) {
        if (!Object.prototype.hasOwnProperty.call(y, keys[k])) return false;
        stack.push([x[keys[k]], y[keys[k]]]);
      }
    }
    return true;
  }
  function kept() {
    var fields = TASK_DEFINITION;
    for (var f = 0; f < fields.length; f++)
      if (!same(newDoc[fields[f]], oldDoc[fields[f]])) return false;
    return true;
  }
  if (oldDoc && !oldDoc._deleted && oldDoc.status !== undefined
      && RUNNABLE.indexOf(oldDoc.status) >= 0 && typeof newDoc.worker === 'string'
      && kept()) return;
  var wrong = shape(newDoc);
  if (wrong) refuse(wrong);
  if (typeof newDoc.worker !== 'string' || !newDoc.worker)
    refuse('worker: required (the name of the worker that runs the task)');
  if (newDoc.date === undefined) refuse('date: required (ISO 8601, e.g. 2026-12-01T09:00:00Z)');
  var badDate = definitionProblem(newDoc, 'date');  // after.rules.dates.parse_date's message
  if (badDate) refuse(badDate);
  if (!newDoc.job || typeof newDoc.job !== 'object') refuse('job: required ({"name": ..., "arguments": [...]})');
  if (typeof newDoc.job.name !== 'string' || !newDoc.job.name) refuse('job.name: required');
  if (!/^JOB_NAME$/.test(newDoc.job.name))
    refuse('job.name: ' + JSON.stringify(newDoc.job.name) + ' is not a job name (letters, digits and _ only)');
  var args = newDoc.job.arguments;
  if (args !== undefined && args !== null && typeof args !== 'object')
    refuse('job.arguments: must be a list or an object');
  if (status === undefined) refuse('status: required ("waiting" to run the task)');
  var bad = definitionProblem(newDoc);
  if (bad) refuse(bad);
}"""
)

# The statuses and the job-name grammar come from after.rules.task and after.jobs: one source.
VALIDATE = (VALIDATE.replace("TASK_RUNNABLE", json.dumps(list(RUNNABLE)))
            .replace("TASK_CHECKED", json.dumps(list(CHECKED)))
            .replace("TASK_DEFINITION", json.dumps(list(DEFINITION)))
            .replace("TASK_STATUSES", json.dumps(list(STATUSES)))
            .replace("JOB_NAME", JOB_NAME.pattern)
            .replace("CALENDAR_ID_PREFIX", json.dumps(calendar.PREFIX)))

DUE_MAP = (
    "function (doc) {\n"
    + JS_PARSE_DATE
    + JS_JITTER
    + r"""
  if (typeof doc.worker !== 'string' || typeof doc.status !== 'string') return;
  var due = parseDate(doc.date);
  var jitter = doc.repeat && typeof doc.repeat === 'object' ? doc.repeat.jitter : 0;
  if (due !== null && typeof jitter === 'number' && jitter > 0 && jitter <= MAX_JITTER)
    due += jitterMs(doc._id, due, jitter);
  emit([doc.worker, doc.status, due === null ? 0 : due, doc._id], null);
}"""
).replace("MAX_JITTER", str(MAX_JITTER))

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
    for db in databases(store.db):
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
        (runs_db(store.db), ["task", "number"], "by-task-number"),
        (runs_db(store.db), ["process", "outcome"], "by-process-outcome"),
        (runs_db(store.db), ["parent", "started"], "by-parent-started"),
        (runs_db(store.db), ["worker", "scheduled"], "by-worker-scheduled"),
        (runs_db(store.db), ["task", "scheduled"], "by-task-scheduled"),
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
