// The definition of a task, checked in the database's validate_doc_update as
// after.rules.task.parse checks it in Python, with the same messages (the shared corpus,
// tests/corpus, keeps the two equal). after/couch/schema.py reads this file and puts the
// rules' constants in place of the names in capitals (REPEAT_UNITS, TASK_MAX_SECONDS, ...),
// so each limit has one source; the result is a part of one function, as CouchDB takes it.
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
    if (!isObject(v)) return notAnObject('concurrency', '{"key": NAME, "limit": N}', v);
    var extra = unknownField('concurrency', v, ['key', 'limit']);
    if (extra !== null) return extra;
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
    if (!isObject(v)) return notAnObject('rate', '{"key": NAME, "limit": N, "per": SECONDS}', v);
    var extra = unknownField('rate', v, ['key', 'limit', 'per']);
    if (extra !== null) return extra;
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
    if (!isObject(v)) return notAnObject('retry', 'a number of attempts or an object', v);
    var extra = unknownField('retry', v, ['limit', 'delay', 'backoff'], ['jitter']);
    if (extra !== null) return extra;
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
    if (!isObject(o)) return notAnObject('occurrence', 'an object {"task", "kind", "date"}', o);
    var extra = unknownField('occurrence', o, ['task', 'kind', 'date']);
    if (extra !== null) return extra;
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
  // after.rules.fields.not_an_object and unknown_field: the messages of an object field
  function notAnObject(name, shape, v) { return name + ': must be ' + shape + ', not ' + show(v); }
  function unknownField(name, o, use, also) {  // also: keys taken but not named
    var extra = extraKey(o, use.concat(also || []));
    return extra === null ? null : name + ': unknown field ' + str(extra) + ' (use ' + use.join(', ') + ')';
  }
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
    if (!isObject(v)) return notAnObject('catchup', 'an object {"policy", "window", "max"}', v);
    var extra = unknownField('catchup', v, ['policy', 'window', 'max']);
    if (extra !== null) return extra;
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
