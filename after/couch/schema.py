"""``after setup``: the databases, indexes and design document the scheduler relies on.

- ``<db>``: the tasks. Its design document ``_design/after`` holds
  - ``validate_doc_update``, which refuses with a 403 naming the field a task that is meant to
    run (status ``waiting``, ``scheduled``, ``running``, ``reschedule`` or ``paused``) but
    cannot: no
    ``worker``, no ``date`` or one that is not ISO 8601, no ``job.name`` or one that is not a
    job name, an unknown ``status``, a ``repeat``, ``retry``, ``timeout``, ``max_delay``,
    ``isolation``, ``overlap``, ``priority`` or ``catchup`` that :func:`after.rules.task.parse`
    refuses (with its
    message; see ``JS_DEFINITION`` for what is left
    to the worker), or a shape no task needs and a worker cannot afford: nesting
    deeper than ``MAX_DEPTH`` levels, a string longer than ``MAX_STRING`` characters, a number
    that is not finite (``1e400``, an integer of hundreds of digits). Finished tasks (``done``, ``error``, ``canceled``) and
    ``cancel`` requests are let through, so a worker can always record an error on a task that
    was broken before the database was set up. A write that moves a runnable task to another
    runnable status and keeps its definition (``worker``, ``date``, ``job``, ``repeat``,
    ``retry``, ``timeout``, ``max_delay``, ``isolation``: :data:`after.rules.task.DEFINITION`) as it was (the
    worker's claims and starts) is let through at once: that was validated when it was
    written, so only a write that changes it (a user's) is checked in full.
  - the view ``due``, keyed ``[worker, status, due_ms]``: the date normalised to epoch
    milliseconds at index time (and moved by ``repeat.jitter`` as the workers move it, so
    a task whose date has passed but whose jittered instant has not stays out of a poll), so a worker asks for exactly "my waiting tasks due before T"
    whatever offset or precision each document wrote its date with. (A Mango index on the raw
    ``date`` string cannot do that: ``+02:00`` offsets and fractions do not sort as instants.)
    A date the view cannot read is keyed 0, so the worker sees it at once and marks it
    ``error``.
- Mango indexes on ``[worker, status, date]`` and ``[status, date]`` for listing tasks.
- ``<db>_runs``: one record per run (history), indexed by ``[task, number]``, and the runs
  of extra occurrences (manual, backfill) by ``[parent, started]``; by ``[worker,
  scheduled]`` and ``[task, scheduled]`` for ``after audit``.
- ``<db>_workers``: one heartbeat document per worker process.

Running it again changes nothing that is already right (idempotent).
"""

# Longer than 500 lines on purpose: the validate_doc_update is JavaScript built here from
# the same constants as task.parse (statuses, job names, units, limits, the date and
# duration grammars), so that its rules and messages have this one home beside them.
from __future__ import annotations

import json
import random
import re
import time

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

# The definition of a task a user writes, checked as after.rules.task.parse checks it and with its
# messages: ``repeat`` (after.rules.repeat.parse_repeat), ``retry`` (after.rules.task.parse_retry),
# ``timeout`` and ``max_delay``, in parse's order. Values are shown as Python's repr shows them
# (pyrepr, iterative and cut short); JavaScript cannot tell 5.0 from 5, so an integral float
# is taken as the integer it equals. Left to the worker: a cron expression's fields and
# croniter's H/R, whether ``tz`` names a zone, and what only the Python types tell apart.
JS_DEFINITION = r"""
function definitionProblem(doc, part) {  // part 'date': the date alone, checked first
  var UNITS = REPEAT_UNITS, SHORT = REPEAT_SHORTHANDS, UNIT_HELP = REPEAT_UNIT_HELP;
  var US = {weeks: 604800000000, days: 86400000000, hours: 3600000000, minutes: 60000000,
            seconds: 1000000, microseconds: 1};
  var WS = /[\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;
  var MAX_SECONDS = TASK_MAX_SECONDS, MAX_RETRIES = TASK_MAX_RETRIES;
  var OVERLAPS = TASK_OVERLAPS, MAX_PRIORITY = TASK_MAX_PRIORITY;
  var CATCHUP_POLICIES = TASK_CATCHUP_POLICIES, MAX_CATCHUP = TASK_MAX_CATCHUP;
  function has(o, k) { return Object.prototype.hasOwnProperty.call(o, k); }
  function isObject(v) { return v !== null && typeof v === 'object' && !Array.isArray(v); }
  function integral(v) { return typeof v === 'number' && isFinite(v) && Math.floor(v) === v; }
  // An int for Python, as far as JavaScript can tell: JSON writes 5.0 for a float that
  // Python refuses where it wants an int, but JavaScript reads 5. From 1e21 JSON writers
  // use an exponent, a float for Python.
  function pyint(v) { return integral(v) && Math.abs(v) < 1e21; }
  function words(text) {  // Python's str.split()
    var parts = text.split(WS), out = [];
    for (var i = 0; i < parts.length; i++) if (parts[i]) out.push(parts[i]);
    return out;
  }
  function hex(c, n) { var h = c.toString(16); while (h.length < n) h = '0' + h; return h; }
  function printable(c) {
    return !(c < 0x20 || (c >= 0x7f && c <= 0xa0) || c === 0xad || c === 0x1680
      || (c >= 0x600 && c <= 0x605) || c === 0x61c || c === 0x6dd || c === 0x70f
      || c === 0x180e || (c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f)
      || (c >= 0x205f && c <= 0x2064) || (c >= 0x2066 && c <= 0x206f) || c === 0x3000
      || (c >= 0xd800 && c <= 0xf8ff) || c === 0xfeff || (c >= 0xfff9 && c <= 0xfffb)
      || c === 0xfffe || c === 0xffff);
  }
  // repr(str), cut after about budget characters. squeeze: one space for a run of spaces, as
  // the message's final " ".join(split()) leaves it (a repr's only whitespace is the space)
  function pystr(s, budget, squeeze) {
    var q = s.indexOf("'") >= 0 && s.indexOf('"') < 0 ? '"' : "'";
    var out = q, i, c, ch, lo;
    for (i = 0; i < s.length && out.length <= budget; i++) {
      ch = s.charAt(i); c = s.charCodeAt(i);
      if (ch === q || ch === '\\') out += '\\' + ch;
      else if (ch === '\t') out += '\\t';
      else if (ch === '\n') out += '\\n';
      else if (ch === '\r') out += '\\r';
      else if (ch === ' ' && squeeze && out.charAt(out.length - 1) === ' ') continue;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length
               && (lo = s.charCodeAt(i + 1)) >= 0xdc00 && lo <= 0xdfff) { out += ch + s.charAt(i + 1); i++; }
      else if (printable(c)) out += ch;
      else if (c < 0x100) out += '\\x' + hex(c, 2);
      else out += '\\u' + hex(c, 4);
    }
    return i < s.length ? out : out + q;
  }
  function pynum(v) {  // repr(float) writes 1e-05 where JavaScript writes 0.00001
    if (!integral(v) && Math.abs(v) < 1e-4) return v.toExponential().replace(/e-([0-9])$/, 'e-0$1');
    return String(v);
  }
  // repr of a JSON value, with a stack (no recursion), cut after about budget characters
  function pyrepr(value, budget, squeeze) {
    var out = '', stack = [{v: value}], e, v, i, keys, k;
    while (stack.length && out.length <= budget) {
      e = stack.pop();
      if (has(e, 't')) { out += e.t; continue; }
      v = e.v;
      if (v === null || v === undefined) out += 'None';
      else if (v === true) out += 'True';
      else if (v === false) out += 'False';
      else if (typeof v === 'number') out += pynum(v);
      else if (typeof v === 'string') out += pystr(v, budget - out.length + 2, squeeze);
      else if (Array.isArray(v)) {
        stack.push({t: ']'});
        for (i = Math.min(v.length, budget) - 1; i >= 0; i--) {
          stack.push({v: v[i]});
          if (i) stack.push({t: ', '});
        }
        out += '[';
      } else {
        keys = [];
        for (k in v) if (has(v, k) && keys.length <= budget) keys.push(k);
        stack.push({t: '}'});
        for (i = keys.length - 1; i >= 0; i--) {
          stack.push({v: v[keys[i]]});
          stack.push({t: pystr(keys[i], budget, squeeze) + ': '});
          if (i) stack.push({t: ', '});
        }
        out += '{';
      }
    }
    return out;
  }
  function pytype(v) {
    if (v === null || v === undefined) return 'NoneType';
    if (typeof v === 'boolean') return 'bool';
    if (typeof v === 'number') return pyint(v) ? 'int' : 'float';
    if (typeof v === 'string') return 'str';
    return Array.isArray(v) ? 'list' : 'dict';
  }
  function show(v) {  // after.rules.task._show
    var n = 0, k;
    if (Array.isArray(v) && v.length > 10) return 'a list of ' + v.length + ' items';
    if (isObject(v)) {
      for (k in v) if (has(v, k)) n++;
      if (n > 10) return 'a dict of ' + n + ' items';
    }
    var text = pyrepr(v, 80, false);
    return text.length <= 60 ? text : text.substr(0, 57) + '...';
  }
  function extraKey(o, allowed) {  // sorted(set(o) - allowed)[0]
    var extra = [], k;
    for (k in o) if (has(o, k) && allowed.indexOf(k) < 0) extra.push(k);
    extra.sort();
    return extra.length ? extra[0] : null;
  }

  // -- after.rules.dates.parse_date's messages, for repeat.until
  function dateProblem(value, field) {
    if (typeof value !== 'string')
      return field + ': expected an ISO 8601 date or date-time string, got ' + pytype(value)
        + ' ' + rep(value);
    var m = /ISO_DATE_RE/.exec(value), why = null;
    var head = field + ': ' + str(value) + ' is not an ISO 8601 date or date-time';
    if (!m) return head;
    var y = +m[1], mo = +m[2], d = +m[3], h = +(m[4] || 0), mi = +(m[5] || 0), s = +(m[6] || 0);
    var tz = m[8], days = new Date(0);
    days.setUTCFullYear(y, mo, 0);
    if (tz && tz !== 'Z') {
      var digits = tz.substr(1).replace(':', '');
      if (+digits.substr(0, 2) > 23 || +(digits.substr(2, 2) || 0) > 59)
        why = 'offset must be within -23:59..+23:59';
    }
    if (why) { /* the offset is read first */ }
    else if (y < 1) why = 'year ' + y + ' is out of range';
    else if (mo < 1 || mo > 12) why = 'month must be in 1..12';
    else if (d < 1 || d > days.getUTCDate()) why = 'day is out of range for month';
    else if (h > 23) why = 'hour must be in 0..23';
    else if (mi > 59) why = 'minute must be in 0..59';
    else if (s > 59) why = 'second must be in 0..59';
    else if (parseDate(value) === null) why = 'date value out of range';  // in UTC: 10000
    return why ? head + ' (' + why + ')' : null;
  }

  // -- after.rules.repeat
  function wholeProblem(field, v, min) {  // after.rules.repeat._whole
    // any integral limit: Python takes an int of any size
    if ((pyint(v) || (integral(v) && field === 'limit')) && v >= min) return null;
    var shown = pyrepr(v, 80, false);
    return 'repeat: ' + field + ' must be ' + (min > 0 ? 'a positive' : 'a non-negative')
      + ' integer, got ' + shown.substr(0, 60);
  }
  function limitsProblem(r) {
    var bad;
    if (has(r, 'limit')) { bad = wholeProblem('limit', r.limit, 1); if (bad) return bad; }
    if (has(r, 'until')) { bad = dateProblem(r.until, 'repeat.until'); if (bad) return bad; }
    if (has(r, 'exclude') && (bad = excludeProblem(r.exclude))) return bad;
    if (has(r, 'jitter') && (typeof r.jitter !== 'number'
                             || !(r.jitter >= 0 && r.jitter <= MAX_JITTER)))
      return 'repeat: jitter must be a number of seconds from 0 to ' + MAX_JITTER + ', got '
        + pyrepr(r.jitter, 80, false).substr(0, 60);
    return null;
  }
  // -- after.rules.calendar
  function dayProblem(v, where) {  // after.rules.calendar._day
    var m = typeof v === 'string' ? /^([0-9]{4})-([0-9]{2})-([0-9]{2})$/.exec(v) : null;
    if (m) {
      var y = +m[1], mo = +m[2], d = +m[3], last = new Date(0);
      last.setUTCFullYear(y, mo, 0);
      if (y >= 1 && mo >= 1 && mo <= 12 && d >= 1 && d <= last.getUTCDate()) return null;
    }
    return where + ': ' + show(v) + ' is not a date (YYYY-MM-DD)';
  }
  function nameProblem(item, where) {  // after.rules.calendar._name
    var extra = extraKey(item, ['calendar']);
    if (extra !== null)
      return where + ': unknown key ' + str(extra) + ' (a calendar is {"calendar": NAME})';
    if (typeof item.calendar !== 'string' || !/^CALENDAR_NAME_RE$/.test(item.calendar))
      return where + '.calendar: ' + show(item.calendar) + ' is not a calendar name (CALENDAR_NAME_HELP)';
    return null;
  }
  function itemsProblem(v, where, shared) {  // after.rules.calendar._items
    if (!Array.isArray(v)) return where + ': must be a list of dates and ranges, not ' + show(v);
    if (v.length > CALENDAR_MAX_ITEMS)
      return where + ': at most ' + CALENDAR_MAX_ITEMS + ' items, not ' + v.length;
    for (var i = 0; i < v.length; i++) {
      var at = where + '[' + i + ']', item = v[i], bad = null;
      if (isObject(item) && shared && has(item, 'calendar')) bad = nameProblem(item, at);
      else if (isObject(item)) {
        var extra = extraKey(item, ['from', 'to']);
        if (extra !== null)
          return at + ': unknown key ' + str(extra) + ' (use ' + (shared ? 'from and to, or calendar' : 'from and to') + ')';
        if (!has(item, 'from') || !has(item, 'to'))
          return at + ': a range needs "from" and "to" dates (YYYY-MM-DD)';
        bad = dayProblem(item.from, at + '.from') || dayProblem(item.to, at + '.to');
        if (!bad && item.from > item.to) bad = at + ': from ' + item.from + ' is after to ' + item.to;
      } else bad = dayProblem(item, at);
      if (bad) return bad;
    }
    return null;
  }
  function excludeProblem(v) {  // after.rules.calendar.parse_exclude
    if (v === null || v === undefined) return null;
    if (isObject(v) && has(v, 'calendar')) return nameProblem(v, 'repeat.exclude');
    if (!Array.isArray(v))
      return 'repeat.exclude: must be a list of dates and ranges, or {"calendar": NAME}, not ' + show(v);
    return itemsProblem(v, 'repeat.exclude', true);
  }
  function calendarProblem(c) {  // after.rules.calendar.parse_calendar
    var name = c._id.substr(CALENDAR_PREFIX.length);
    if (!/^CALENDAR_NAME_RE$/.test(name))
      return '_id: ' + show(c._id) + ' is not a calendar id (calendar:NAME, the name CALENDAR_NAME_HELP)';
    var extra = extraKey(c, ['_id', '_rev', '_revisions', '_conflicts', 'type', 'dates', 'description']);
    if (extra !== null) return extra + ': unknown field of a calendar (use dates, description)';
    if (!has(c, 'dates')) return 'dates: required (a list of dates and ranges)';
    return itemsProblem(c.dates, 'dates', false);
  }
  function concurrencyProblem(v) {  // after.rules.task.parse_concurrency
    if (v === null || v === undefined) return null;
    if (!isObject(v)) return 'concurrency: must be {"key": NAME, "limit": N}, not ' + show(v);
    var extra = extraKey(v, ['key', 'limit']);
    if (extra !== null) return 'concurrency: unknown field ' + str(extra) + ' (use key, limit)';
    if (typeof v.key !== 'string' || !/^CAP_KEY_RE$/.test(v.key))
      return 'concurrency.key: ' + show(v.key) + ' is not a key (CAP_KEY_HELP)';
    if (!pyint(v.limit) || v.limit < 1 || v.limit > MAX_CONCURRENCY)
      return 'concurrency.limit: must be a whole number from 1 to ' + MAX_CONCURRENCY + ', not ' + show(v.limit);
    return null;
  }
  function debounceProblem() {  // after.rules.task.parse: debounce
    var wrong = secondsProblem('debounce');
    if (wrong) return wrong;
    if (has(doc, 'debounce') && doc.debounce !== null && doc.repeat !== null
        && doc.repeat !== undefined)
      return 'debounce: for a task that runs once (each rewrite moves its run), not one that repeats';
    return null;
  }
  function rateProblem(v) {  // after.rules.task.parse_rate
    if (v === null || v === undefined) return null;
    if (!isObject(v)) return 'rate: must be {"key": NAME, "limit": N, "per": SECONDS}, not ' + show(v);
    var extra = extraKey(v, ['key', 'limit', 'per']);
    if (extra !== null) return 'rate: unknown field ' + str(extra) + ' (use key, limit, per)';
    if (typeof v.key !== 'string' || !/^CAP_KEY_RE$/.test(v.key))
      return 'rate.key: ' + show(v.key) + ' is not a key (CAP_KEY_HELP)';
    if (!pyint(v.limit) || v.limit < 1 || v.limit > MAX_CONCURRENCY)
      return 'rate.limit: must be a whole number from 1 to ' + MAX_CONCURRENCY + ', not ' + show(v.limit);
    if (typeof v.per !== 'number' || !(v.per > 0) || !(v.per <= MAX_SECONDS))
      return 'rate.per: must be a number of seconds above 0 and at most ' + MAX_SECONDS + ', not ' + show(v.per);
    return null;
  }
  function describe(f) {
    var names = UNITS.slice(0, 7), parts = [], i, n, unit;
    var amounts = [];
    for (i = 0; i < names.length; i++) amounts.push([names[i], f[names[i]]]);
    if (f.microseconds % 1000 === 0) amounts.push(['milliseconds', f.microseconds / 1000]);
    else amounts.push(['microseconds', f.microseconds]);
    for (i = 0; i < amounts.length; i++) {
      unit = amounts[i][0]; n = amounts[i][1];
      if (n) parts.push(n + ' ' + (n === 1 ? unit.substr(0, unit.length - 1) : unit));
    }
    return 'every ' + (parts.length === 1 ? parts[0]
      : parts.slice(0, -1).join(', ') + ' and ' + parts[parts.length - 1]);
  }
  function checkedProblem(f) {  // after.rules.repeat._checked
    var fixed = f.weeks * 604800 + f.days * 86400 + f.hours * 3600 + f.minutes * 60 + f.seconds;
    if (!(f.years || f.months || fixed || f.microseconds))
      return 'repeat: the interval is zero; at least one unit must be above 0';
    if (!(f.years || f.months) && fixed * 1000000 + f.microseconds < MIN_US)
      return 'repeat: ' + describe(f) + ' is shorter than the minimum interval of '
        + Math.floor(MIN_US / 1000000) + ' second';
    // one interval from 2000-01-01 must stay within year 9999, as in Python
    var year = 2000 + f.years + Math.floor(f.months / 12), large = year > 9999;
    if (!large) {
      var base = new Date(0);
      base.setUTCFullYear(year, f.months % 12, 1);
      large = base.getTime() / 1000 + fixed + Math.floor(f.microseconds / 1000000) > 253402300799;
    }
    return large ? 'repeat: the interval is too large' : null;
  }
  function zero() {
    return {years: 0, months: 0, weeks: 0, days: 0, hours: 0, minutes: 0, seconds: 0,
            microseconds: 0};
  }
  function durationProblem(text) {  // after.rules.repeat.parse_duration
    var m = /^ISO_DURATION_RE$/.exec(text), names = UNITS.slice(0, 7), last = -1, i;
    if (m) for (i = 0; i < 7; i++) if (m[i + 1]) last = i;
    if (last < 0)
      return 'repeat: ' + str(text) + ' is not an ISO 8601 duration (like P1D, PT30M, P1M7D or PT0.5S)';
    var f = zero();
    for (i = 0; i <= last; i++) {
      if (!m[i + 1]) continue;
      var parts = m[i + 1].replace(',', '.').split('.'), whole = parts[0], frac = parts[1] || '';
      if (whole.length > 12 || frac.length > 12)
        return 'repeat: ' + str(text.substr(0, 40)) + ': a number too long in an ISO 8601 duration';
      f[names[i]] = +whole;
      if (!frac) continue;
      if (i !== last || i < 2)
        return 'repeat: ' + str(text) + ': only the last component may have a fraction, and not years or months';
      // int(Decimal('0.' + frac) * microseconds of the unit), exactly: frac has 12 digits at
      // most, so split it to keep every product below 2 ** 53
      var c = US[names[i]] / 1000000, L = frac.length, extra;
      if (L <= 6) extra = +frac * c * Math.pow(10, 6 - L);
      else {
        var p = Math.pow(10, L - 6), hi = +frac.substr(0, 6), lo = +frac.substr(6) * c;
        var q = Math.floor(lo / p);
        if (q * p > lo) q--;
        if ((q + 1) * p <= lo) q++;
        extra = hi * c + q;
      }
      var spread = ['days', 'hours', 'minutes', 'seconds', 'microseconds'];
      for (var j = 0; j < spread.length; j++) {
        var share = Math.floor(extra / US[spread[j]]);
        f[spread[j]] += share;
        extra -= share * US[spread[j]];
      }
    }
    return checkedProblem(f);
  }
  function unitsProblem(r) {  // after.rules.repeat._parse_units
    var f = zero(), givenAs = {}, given = 0, k, unit, bad;
    for (k in r) {
      if (!has(r, k) || k === 'limit' || k === 'until' || k === 'exclude' || k === 'jitter') continue;
      unit = has(SHORT, k) ? SHORT[k] : k;
      if (UNITS.indexOf(unit) < 0) return 'repeat: unknown unit ' + str(k) + ' (' + UNIT_HELP + ')';
      if (has(givenAs, unit)) return 'repeat: ' + str(givenAs[unit]) + ' and ' + str(k) + ' are the same unit';
      bad = wholeProblem(k, r[k], 0);
      if (bad) return bad;
      givenAs[unit] = k;
      given++;
      if (unit === 'milliseconds') f.microseconds = r[k] * 1000; else f[unit] = r[k];
    }
    if (!given)
      return 'repeat: no units given (e.g. {"days": 1}, {"every": "P1D"} or {"cron": "0 9 * * *"})';
    return limitsProblem(r) || checkedProblem(f);
  }
  function dstProblem(r) {  // after.rules.repeat._parse_dst
    if (!has(r, 'dst')) return null;
    var v = r.dst;
    if (!isObject(v)) return 'repeat: dst must be an object DST_HELP, not ' + show(v);
    var extra = extraKey(v, ['fold', 'gap']);
    if (extra !== null) return 'repeat: unknown key ' + str(extra) + ' in dst (allowed: fold, gap)';
    if (!has(r, 'tz'))
      return 'repeat: dst needs a tz (a cron rule without one is in UTC, which has no daylight saving time)';
    if (has(v, 'gap') && DST_GAPS.indexOf(v.gap) < 0)
      return "repeat: dst.gap must be 'shift' or 'skip', not " + show(v.gap);
    if (has(v, 'fold') && DST_FOLDS.indexOf(v.fold) < 0)
      return "repeat: dst.fold must be 'first', 'last' or 'both', not " + show(v.fold);
    return null;
  }
  function cronProblem(r) {  // after.rules.repeat._parse_cron, its shape only
    var extra = extraKey(r, ['cron', 'dst', 'exclude', 'jitter', 'limit', 'tz', 'until']);
    if (extra !== null)
      return 'repeat: unknown key ' + str(extra) + ' in a cron rule (allowed: cron, dst, exclude, jitter, limit, tz, until)';
    var expr = r.cron;
    if (typeof expr !== 'string' || !words(expr).length)
      return 'repeat: cron must be a cron expression string, got ' + rep(expr);
    var fields = words(expr);
    expr = fields.join(' ');
    if (expr.charAt(0) !== '@' && fields.length !== 5 && fields.length !== 6)
      return 'repeat: cron ' + str(expr) + ' must have 5 fields (minute hour day month weekday), or 6 with seconds last';
    if (has(r, 'tz') && (typeof r.tz !== 'string' || !r.tz))
      return 'repeat: tz must be an IANA time zone name, got ' + rep(r.tz);
    return dstProblem(r) || limitsProblem(r);
  }
  function repeatProblem(r) {  // after.rules.repeat.parse_repeat
    if (r === null || r === undefined) return null;
    if (typeof r === 'string') return durationProblem(r);
    if (!isObject(r))
      return 'repeat: expected an object of units, an ISO 8601 duration string or a cron object, got '
        + pytype(r) + ' ' + rep(r);
    if (!has(r, 'cron') && has(r, 'dst'))
      return 'repeat: dst applies to a cron rule with a tz (an interval repeats in UTC)';
    if (has(r, 'cron')) return cronProblem(r);
    if (!has(r, 'every')) return unitsProblem(r);
    var extra = extraKey(r, ['every', 'exclude', 'jitter', 'limit', 'until']);
    if (extra !== null)
      return 'repeat: unknown key ' + str(extra) + ' in a every rule (allowed: every, exclude, jitter, limit, until)';
    if (typeof r.every !== 'string')
      return 'repeat: every must be an ISO 8601 duration string, got ' + rep(r.every);
    return limitsProblem(r) || durationProblem(r.every);
  }

  // -- after.rules.task
  function untilProblem() {  // after.rules.task._parse: a series that ends before its date
    var r = doc.repeat, until, date;
    if (!isObject(r) || !has(r, 'until')) return null;
    until = parseDate(r.until);
    date = parseDate(doc.date);
    if (until === null || date === null || until >= date) return null;
    return 'repeat.until: ' + new Date(until).toISOString() + " is before the task's date ("
      + new Date(date).toISOString() + '): no occurrence would be in time';
  }
  function retryProblem(v) {  // after.rules.task.parse_retry
    if (v === null || v === undefined) return null;
    if (typeof v === 'boolean')
      return 'retry: must be a number of attempts or an object, not ' + (v ? 'True' : 'False');
    if (pyint(v)) {
      if (v < 0) return 'retry: must be 0 or more attempts, not ' + show(v);
      if (v > MAX_RETRIES) return 'retry: at most ' + MAX_RETRIES + ' attempts, not ' + show(v);
      return null;
    }
    if (!isObject(v)) return 'retry: must be a number of attempts or an object, not ' + show(v);
    var extra = extraKey(v, ['limit', 'delay', 'backoff', 'jitter']);
    if (extra !== null) return 'retry: unknown field ' + str(extra) + ' (use limit, delay, backoff)';
    var limit = has(v, 'limit') ? v.limit : 1;
    if (!pyint(limit) || limit < 0)
      return 'retry.limit: must be 0 or more attempts, not ' + show(limit);
    if (limit > MAX_RETRIES)
      return 'retry.limit: at most ' + MAX_RETRIES + ' attempts, not ' + show(limit);
    var delay = has(v, 'delay') ? v.delay : 0;
    if (typeof delay !== 'number' || !(delay >= 0))
      return 'retry.delay: must be 0 or more seconds, not ' + show(delay);
    if (!(delay <= MAX_SECONDS))
      return 'retry.delay: at most ' + MAX_SECONDS + ' seconds (ten years), not ' + show(delay);
    var backoff = has(v, 'backoff') ? v.backoff : 'fixed';
    if (backoff !== 'fixed' && backoff !== 'exponential')
      return "retry.backoff: must be 'fixed' or 'exponential', not " + show(backoff);
    var jitter = has(v, 'jitter') ? v.jitter : 0.1;
    if (typeof jitter !== 'number' || !(jitter >= 0 && jitter <= 1))
      return 'retry.jitter: must be a fraction from 0 to 1, not ' + show(jitter);
    return null;
  }
  function secondsProblem(name) {  // after.rules.task._number
    var v = doc[name];
    if (v === null || v === undefined) return null;
    if (typeof v !== 'number' || !(v > 0))
      return name + ': must be a positive number of seconds, not ' + show(v);
    if (!(v <= MAX_SECONDS))
      return name + ': at most ' + MAX_SECONDS + ' seconds (ten years), not ' + show(v);
    return null;
  }

  function occurrenceProblem() {  // after.rules.task.parse_occurrence
    var o = doc.occurrence, bad;
    if (o === null || o === undefined) return null;
    if (!isObject(o)) return 'occurrence: must be an object {"task", "kind", "date"}, not ' + show(o);
    var extra = extraKey(o, ['date', 'kind', 'task']);
    if (extra !== null) return 'occurrence: unknown field ' + str(extra) + ' (use task, kind, date)';
    if (typeof o.task !== 'string' || !o.task)
      return 'occurrence.task: required (the id of the task this runs an occurrence of)';
    if (o.kind !== 'manual' && o.kind !== 'backfill')
      return "occurrence.kind: must be 'manual' or 'backfill', not " + show(o.kind);
    if ((bad = dateProblem(o.date, 'occurrence.date'))) return bad;
    if (doc.repeat !== null && doc.repeat !== undefined)
      return 'occurrence: a manual or backfill run does not repeat (no repeat with occurrence)';
    var id = o.task + ':' + o.kind + ':' + o.date;
    if (doc._id !== id) return 'occurrence: the id must be ' + str(id) + ' (task:kind:date), not ' + rep(doc._id);
    return null;
  }
  function isolationProblem(v) {  // after.rules.task.parse_isolation
    if (v === null || v === undefined) return null;
    if (ISOLATIONS.indexOf(v) < 0)
      return "isolation: must be 'thread' or 'process', not " + show(v);
    return null;
  }

  // after.rules.task.parse gives a message of at most 300 characters as written, or, past that,
  // with its whitespace collapsed, cut at 297 characters and '...'. Values are first shown
  // collapsed and cut (cheap, whatever their size), then in full if the message is short.
  var squeeze = true, budget = 400;
  function rep(v) { return pyrepr(v, budget, squeeze); }
  function str(s) { return pystr(s, budget, squeeze); }
  function overlapProblem() {  // after.rules.task._parse
    var v = has(doc, 'overlap') ? doc.overlap : 'skip';
    if (OVERLAPS.indexOf(v) < 0)
      return "overlap: must be 'skip', 'buffer_one' or 'allow', not " + show(v);
    var retry = doc.retry;
    if (v === 'allow' && retry !== null && retry !== undefined
        && (typeof retry === 'number' ? retry !== 0
            : !has(retry, 'limit') || retry.limit !== 0))
      return "overlap: 'allow' runs each occurrence once, alongside the others: it takes no "
        + 'retry';
    return null;
  }
  function priorityProblem() {
    var v = has(doc, 'priority') ? doc.priority : 0;
    if (!pyint(v))
      return 'priority: must be an integer (higher first), not ' + show(v);
    if (!(v >= -MAX_PRIORITY && v <= MAX_PRIORITY))
      return 'priority: from -' + MAX_PRIORITY + ' to ' + MAX_PRIORITY + ', not ' + show(v);
    return null;
  }
  function catchupProblem() {  // after.rules.catchup.parse_catchup, after.rules.task.parse_catchup
    var v = doc.catchup;
    if (v === null || v === undefined) return null;
    if (!isObject(v)) return 'catchup: must be an object {"policy", "window", "max"}, not ' + show(v);
    var extra = extraKey(v, ['max', 'policy', 'window']);
    if (extra !== null) return 'catchup: unknown field ' + str(extra) + ' (use policy, window, max)';
    var policy = has(v, 'policy') ? v.policy : 'latest';
    if (CATCHUP_POLICIES.indexOf(policy) < 0)
      return "catchup.policy: must be 'none', 'latest' or 'all', not " + show(policy);
    var w = v.window, m = v.max;
    if (w !== null && w !== undefined) {
      if (typeof w !== 'number' || !(w > 0))
        return 'catchup.window: must be a positive number of seconds, not ' + show(w);
      if (!(w <= MAX_SECONDS))
        return 'catchup.window: at most ' + MAX_SECONDS + ' seconds (ten years), not ' + show(w);
      if (policy === 'none')
        return "catchup.window: policy 'none' runs no missed occurrence, so it takes no window";
    }
    if (m !== null && m !== undefined) {
      if (!pyint(m) || m < 1 || m > MAX_CATCHUP)
        return 'catchup.max: must be a whole number from 1 to ' + MAX_CATCHUP + ', not ' + show(m);
      if (policy !== 'all')
        return "catchup.max: only with policy 'all' (how many of the missed occurrences run)";
    }
    if (doc.repeat === null || doc.repeat === undefined)
      return 'catchup: only for a repeating task (how late a one-off task may run is max_delay)';
    if (policy === 'all' && has(doc, 'overlap') && doc.overlap === 'allow')
      return "catchup: policy 'all' runs the missed occurrences one after another, overlap "
        + "'allow' alongside: not both";
    return null;
  }
  function first() {
    if (part === 'date') return dateProblem(doc.date, 'date');
    if (doc._id.indexOf(CALENDAR_PREFIX) === 0) return calendarProblem(doc);
    return repeatProblem(doc.repeat) || untilProblem() || retryProblem(doc.retry)
      || secondsProblem('timeout')
      || secondsProblem('max_delay') || isolationProblem(doc.isolation)
      || concurrencyProblem(doc.concurrency) || rateProblem(doc.rate) || debounceProblem()
      || occurrenceProblem() || overlapProblem()
      || priorityProblem() || catchupProblem();
  }
  var wrong = first();
  if (!wrong) return null;
  wrong = words(wrong).join(' ');
  if (wrong.length > 300) return wrong.substr(0, 297) + '...';
  squeeze = false;
  budget = Infinity;
  return first();
}
"""
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
  emit([doc.worker, doc.status, due === null ? 0 : due], null);
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
