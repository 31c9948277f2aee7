// model.js: pure functions over task, run and worker documents. No DOM, no HTTP, and the
// time is always passed in (`now`, epoch milliseconds).

export const STATUSES = ['waiting', 'scheduled', 'running', 'reschedule', 'cancel',
  'done', 'error', 'canceled', 'paused'];
export const HELD = ['scheduled', 'running'];
export const RUNNABLE = ['waiting', 'scheduled', 'running', 'reschedule'];
export const FAILED_OUTCOMES = ['error', 'timeout', 'interrupted', 'missed'];

// -- dates ---------------------------------------------------------------------------------

// The task date grammar (after.rules.dates.ISO_DATE_RE): a date alone is midnight UTC, a date-time
// without an offset is UTC. Returns epoch milliseconds or null. Tested, with the Python
// parser and the design document's, against the cases of tests/cases/dates.json.
const ISO = /^([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?$/;

export function parseDate(value) {
  if (typeof value !== 'string') return null;
  const m = ISO.exec(value);
  if (!m) return null;
  const [y, mo, d, hh, mi, ss] = [1, 2, 3, 4, 5, 6].map((i) => +(m[i] || 0));
  if (y < 1 || mo < 1 || mo > 12 || d < 1 || hh > 23 || mi > 59 || ss > 59) return null;
  const ms = m[7] ? +(m[7] + '00').slice(0, 3) : 0;
  const day = new Date(0);
  day.setUTCFullYear(y, mo - 1, d); // not Date.UTC: it reads years 0-99 as 1900-1999
  day.setUTCHours(hh, mi, ss, ms);
  if (day.getUTCDate() !== d || day.getUTCMonth() !== mo - 1) return null; // February 30th
  let t = day.getTime();
  const tz = m[8];
  if (tz && tz !== 'Z') {
    const sign = tz[0] === '-' ? -1 : 1;
    const digits = tz.slice(1).replace(':', '');
    const [oh, om] = [+digits.slice(0, 2), +(digits.slice(2, 4) || 0)];
    if (oh > 23 || om > 59) return null;
    t -= sign * (oh * 60 + om) * 60000;
  }
  // Python's datetime: years 1 to 9999, in UTC too (an offset may take an instant out)
  return Number.isNaN(t) || t < -62135596800000 || t > 253402300799999 ? null : t;
}

export function isoDate(ms) {
  return new Date(ms).toISOString();
}

// A datetime-local input's value ("2026-12-01T09:30" or with seconds), read as UTC.
export function utcInput(value) {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(value || '')) return null;
  const iso = value.length === 16 ? `${value}:00Z` : `${value}Z`;
  return parseDate(iso) === null ? null : iso;
}

// The value for a datetime-local input showing `ms` in UTC.
export function toUtcInput(ms) {
  return isoDate(ms).slice(0, 16);
}

export function formatUtc(ms) {
  if (ms === null || ms === undefined) return '–';
  return isoDate(ms).replace('T', ' ').slice(0, 19);
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '–';
  const sign = ms < 0 ? '-' : '';
  const a = Math.abs(ms);
  if (a < 1000) return `${sign}${Math.round(a)} ms`;
  if (a < 60000) return `${sign}${(a / 1000).toFixed(a < 10000 ? 2 : 1)} s`;
  if (a < 3600000) return `${sign}${Math.floor(a / 60000)}m ${Math.round((a % 60000) / 1000)}s`;
  if (a < 86400000) return `${sign}${Math.floor(a / 3600000)}h ${Math.round((a % 3600000) / 60000)}m`;
  return `${sign}${Math.floor(a / 86400000)}d ${Math.round((a % 86400000) / 3600000)}h`;
}

// "in 5m" / "3s ago", coarse on purpose.
export function relative(ms, now) {
  if (ms === null || ms === undefined) return '';
  const d = ms - now;
  const a = Math.abs(d);
  let text;
  if (a < 1500) return 'now';
  if (a < 60000) text = `${Math.round(a / 1000)}s`;
  else if (a < 3600000) text = `${Math.round(a / 60000)}m`;
  else if (a < 172800000) text = `${Math.round(a / 3600000)}h`;
  else text = `${Math.round(a / 86400000)}d`;
  return d > 0 ? `in ${text}` : `${text} ago`;
}

// -- tasks ---------------------------------------------------------------------------------

// A task: not a design document, nor a shared calendar (calendar:NAME, after.rules.calendar).
export function isTask(doc) {
  return !!doc && typeof doc._id === 'string' && !doc._id.startsWith('_design/')
    && !doc._id.startsWith('calendar:') && !doc._deleted;
}

export function meta(doc) {
  return doc.after && typeof doc.after === 'object' ? doc.after : {};
}

// When the task's next occurrence fires: the held occurrence's due, else its date.
export function dueOf(doc) {
  const info = meta(doc);
  if (HELD.includes(doc.status) && info.due) return parseDate(info.due);
  return parseDate(doc.date);
}

export function jobName(doc) {
  return doc.job && typeof doc.job.name === 'string' ? doc.job.name : '';
}

// How the task's runs are isolated (after.rules.task.isolated): 'process' when the task asks for
// it, or once a run of it was cut short by the death of its process (after.isolated: a
// value Python reads as true), else 'thread'.
export function isolationOf(doc) {
  const mark = meta(doc).isolated;
  const marked = mark !== null && mark !== undefined && mark !== false && mark !== 0
    && mark !== '' && !(typeof mark === 'object' && Object.keys(mark).length === 0);
  return doc.isolation === 'process' || marked ? 'process' : 'thread';
}

// A task's repeat rule in words, as `after show` says it (after.rules.repeat's describe): a cron
// rule with its zone and the daylight saving time policy written (repeat.dst), an object of
// units; an ISO 8601 duration as written. '' for a task that does not repeat.
const UNIT_NAMES = ['years', 'months', 'weeks', 'days', 'hours', 'minutes', 'seconds',
  'milliseconds'];
const UNIT_SHORT = { y: 'years', M: 'months', w: 'weeks', d: 'days', h: 'hours', m: 'minutes',
  s: 'seconds', ms: 'milliseconds' };

export function repeatText(doc) {
  const r = doc.repeat;
  if (r === undefined || r === null) return '';
  if (typeof r === 'string') return `every ${r}`;
  if (typeof r !== 'object' || Array.isArray(r)) return '';
  let text;
  if (typeof r.cron === 'string') {
    const dst = r.dst && typeof r.dst === 'object' ? r.dst : {};
    const policy = ['gap', 'fold'].filter((k) => typeof dst[k] === 'string')
      .map((k) => `${k} ${dst[k]}`);
    text = `cron ${r.cron.split(/\s+/).filter(Boolean).join(' ')} (${r.tz || 'UTC'})`
      + (policy.length ? `, dst ${policy.join(', ')}` : '');
  } else if (typeof r.every === 'string') {
    text = `every ${r.every}`;
  } else {
    const amounts = {};
    for (const [key, value] of Object.entries(r)) {
      const unit = UNIT_SHORT[key] || key;
      if (UNIT_NAMES.includes(unit) && typeof value === 'number' && value) amounts[unit] = value;
    }
    const parts = UNIT_NAMES.filter((u) => amounts[u])
      .map((u) => `${amounts[u]} ${amounts[u] === 1 ? u.slice(0, -1) : u}`);
    if (!parts.length) return 'repeats';
    text = `every ${parts.length === 1 ? parts[0]
      : `${parts.slice(0, -1).join(', ')} and ${parts[parts.length - 1]}`}`;
  }
  if (typeof r.limit === 'number') text += `, ${r.limit} run${r.limit === 1 ? '' : 's'} at most`;
  const until = parseDate(r.until);
  if (until !== null) text += `, until ${isoDate(until)}`;
  if (typeof r.jitter === 'number' && r.jitter) text += `, jitter ${r.jitter}s`;
  return text;
}

// A repeating task's catch-up policy in words (after.rules.catchup's describe, as `after show`
// says it): '' when it has none written, or one that cannot be read.
export function catchupText(doc) {
  const c = doc.catchup;
  if (c === null || typeof c !== 'object' || Array.isArray(c)) return '';
  const policy = c.policy === undefined ? 'latest' : c.policy;
  const most = typeof c.max === 'number' ? c.max : 100;
  const words = { none: 'none: no missed occurrence runs',
    latest: 'latest: one run of the latest missed occurrence',
    all: `all: each missed occurrence in turn, ${most} at most` }[policy];
  if (words === undefined) return '';
  return typeof c.window === 'number' ? `${words}, within ${c.window}s` : words;
}

// after.rules.task.describe_rate: "at most N begin in any PERs with key K" ('' when unreadable).
export function rateText(doc) {
  const r = doc.rate;
  if (r === null || typeof r !== 'object' || Array.isArray(r)) return '';
  const keyOk = typeof r.key === 'string' && /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$/.test(r.key);
  const limitOk = Number.isInteger(r.limit) && r.limit >= 1 && r.limit <= 1000;
  const perOk = typeof r.per === 'number' && r.per > 0 && r.per <= 316224000;
  const known = Object.keys(r).every((k) => ['key', 'limit', 'per'].includes(k));
  if (!keyOk || !limitOk || !perOk || !known) return '';
  return `at most ${r.limit} begin in any ${r.per}s with key ${r.key}`;
}

export function matches(doc, filters) {
  if (filters.status && doc.status !== filters.status) return false;
  if (filters.worker && doc.worker !== filters.worker) return false;
  if (filters.job && jobName(doc) !== filters.job) return false;
  if (filters.search && !doc._id.startsWith(filters.search)) return false;
  return true;
}

// The Mango selector for the filters (the id search is applied on the page).
export function selector(filters) {
  const s = {};
  if (filters.status) s.status = filters.status;
  if (filters.worker) s.worker = filters.worker;
  if (filters.job) s['job.name'] = filters.job;
  if (!Object.keys(s).length) s._id = { $gt: null };
  return s;
}

const ORDER = { running: 0, scheduled: 1, reschedule: 2, cancel: 3, waiting: 4, paused: 5,
  error: 6, done: 7, canceled: 8 };

// Active first, then by when they are due (soonest first).
export function sortTasks(docs) {
  return [...docs].sort((a, b) =>
    (ORDER[a.status] ?? 9) - (ORDER[b.status] ?? 9)
    || (dueOf(a) ?? Infinity) - (dueOf(b) ?? Infinity)
    || a._id.localeCompare(b._id));
}

// -- actions: the page asks `after dashboard` to apply them (POST /_after/tasks/<id>/<action>),
// which calls after.rules.task's transitions through the Python Client: none is written here.

// What the page offers for each status; the same table as after.rules.task.ACTIONS (both are
// tested against tests/cases/dashboard.json).
export const ACTIONS = {
  waiting: ['run', 'backfill', 'reschedule', 'pause', 'cancel'],
  scheduled: ['run', 'backfill', 'reschedule', 'pause', 'cancel'],
  running: ['run', 'backfill', 'reschedule', 'pause', 'cancel'],
  reschedule: ['reschedule', 'pause', 'cancel'],
  error: ['rerun', 'run', 'backfill', 'reschedule'],
  done: ['run', 'backfill', 'reschedule'],
  canceled: ['run', 'backfill', 'reschedule'],
  cancel: [], // the worker has yet to apply it
  paused: ['resume', 'cancel'],
};

// Backfill is for a repeating task only (the relay refuses it for another).
export function actionsFor(doc) {
  const offered = ACTIONS[doc.status] || [];
  const repeats = doc.repeat !== undefined && doc.repeat !== null;
  return repeats ? offered : offered.filter((kind) => kind !== 'backfill');
}

export const ACTION_LABELS = { run: 'Run now', backfill: 'Backfill…',
  reschedule: 'Reschedule…', cancel: 'Cancel', rerun: 'Re-run', pause: 'Pause',
  resume: 'Resume' };

// -- runs ----------------------------------------------------------------------------------

export function isRun(doc) {
  return !!doc && !doc._deleted && typeof doc.task === 'string' && !doc._id.startsWith('_design/');
}

export function lateness(run) {
  const started = parseDate(run.started);
  const scheduled = parseDate(run.scheduled);
  return started === null || scheduled === null ? null : started - scheduled;
}

export function runTime(run) {
  return parseDate(run.started) ?? parseDate(run.ended) ?? parseDate(run.scheduled) ?? 0;
}

export function failed(run) {
  return FAILED_OUTCOMES.includes(run.outcome);
}

// Failures first, each group newest first.
export function sortRuns(runs) {
  return [...runs].sort((a, b) => (failed(b) - failed(a)) || runTime(b) - runTime(a));
}

// -- workers -------------------------------------------------------------------------------

export function isWorker(doc) {
  return !!doc && !doc._deleted && doc.type === 'worker';
}

// A worker name paused by `after pause NAME` (its document in <db>_workers, after.couch.pausing).
export function isPause(doc) {
  return !!doc && !doc._deleted && doc.type === 'pause' && typeof doc.name === 'string';
}

// The names paused, sorted, from the documents of <db>_workers.
export function pausedNames(docs) {
  return docs.filter(isPause).map((doc) => doc.name).sort();
}

export function workerState(doc, now) {
  const expires = parseDate(doc.expires);
  if (expires === null || expires < now) return 'stale';
  return doc.stopping ? 'stopping' : 'live';
}

// The state a process's row shows: 'paused' once its own heartbeat says it applied its
// name's pause (it starts nothing from then on), 'pausing' while its name is paused but its
// heartbeat does not say so yet, else its state (live, stopping, stale).
export function processState(doc, pausedName, now) {
  const st = workerState(doc, now);
  if (st === 'stale') return st;
  if (doc.paused) return 'paused';
  return pausedName ? 'pausing' : st;
}

// What the page says once `POST /_after/workers/NAME/pause` answered: the live processes
// that acknowledged the pause, or those that did not within the server's wait.
export function pauseMessage(name, answer) {
  const waiting = (answer && answer.unacknowledged) || [];
  const done = (answer && answer.acknowledged) || [];
  if (waiting.length) {
    return { kind: 'error', text: `Paused the worker name ${name}, but not acknowledged by `
      + `${waiting.join(', ')}: a process starts nothing once it reads the pause (one `
      + 'frozen or cut off from the database later).' };
  }
  const count = done.length === 1 ? '1 live process' : `${done.length} live processes`;
  return { kind: 'ok', text: `Paused the worker name ${name}`
    + (done.length ? `: acknowledged by its ${count}.` : ' (no live process).') };
}

// Whether a live process serves a worker name (after.couch.serving, the same cases in
// tests/cases/serving.json): null when one does, 'paused' when the name is paused, 'none'
// when no live process has that name.
export function serving(name, workers, paused, now) {
  if (paused.includes(name)) return 'paused';
  return workers.some((doc) => isWorker(doc) && doc.name === name
    && workerState(doc, now) === 'live') ? null : 'none';
}

// The same for a task that waits to be claimed (waiting, reschedule); null for any other.
export function unserved(doc, workers, paused, now) {
  if (!isTask(doc) || !['waiting', 'reschedule'].includes(doc.status)
    || typeof doc.worker !== 'string') return null;
  return serving(doc.worker, workers, paused, now);
}

// -- concurrency caps: slot documents (slot:KEY#N in the workers database, after.couch.caps) --------

export function isSlot(doc) {
  return !!doc && !doc._deleted && doc.type === 'slot' && typeof doc.key === 'string';
}

// Per key: slots held, slots known, and the tasks running in them, keys in order.
export function capsInUse(slots) {
  const byKey = new Map();
  for (const slot of slots) {
    const cap = byKey.get(slot.key) || { key: slot.key, used: 0, slots: 0, tasks: [] };
    cap.slots += 1;
    if (slot.holder) {
      cap.used += 1;
      if (slot.task) cap.tasks.push(String(slot.task));
    }
    byKey.set(slot.key, cap);
  }
  return [...byKey.values()].sort((a, b) => a.key.localeCompare(b.key));
}

// The replications of the worker names served here, at a site whose CouchDB replicates with a
// central one (GET /_after/replication, Client.replicated): one line per name, its roles in
// order with their states ("not set up" for a missing one), and whether every one runs.
export function replicationLines(names) {
  return Object.entries(names || {}).sort(([a], [b]) => a.localeCompare(b))
    .map(([name, rows]) => {
      const roles = rows.map((row) => ({ role: row.role, state: row.state || 'not set up',
        error: row.error || '' }));
      return { name, roles, ok: roles.every((r) => r.state === 'running') };
    });
}

export function sortWorkers(docs) {
  return [...docs].sort((a, b) => String(a.name).localeCompare(String(b.name))
    || String(a.host).localeCompare(String(b.host)) || (a.pid || 0) - (b.pid || 0));
}

// -- the audit: what should have run and what did (GET /_after/audit, after.audit's report) --

export const VERDICTS = ['on_time', 'late', 'backfilled', 'twice', 'missed', 'skipped', 'never',
  'pending'];
// What went wrong: an occurrence that should have run once and did not, or did twice.
export const WRONG = ['twice', 'missed', 'never'];
export const VERDICT_LABELS = { on_time: 'on time', late: 'late', backfilled: 'backfilled',
  twice: 'ran twice', missed: 'missed', skipped: 'skipped', never: 'never ran',
  pending: 'pending', extra: 'extra runs' };

// The audit's query from the form (datetime-local values read as UTC, as `after audit` reads
// ISO 8601): null when a date is not one. Empty fields are left to the server's defaults.
export function auditParams({ worker, from, to, late }) {
  const params = {};
  if (worker) params.worker = worker;
  for (const [key, value] of [['from', from], ['to', to]]) {
    if (!value) continue;
    const iso = utcInput(value);
    if (iso === null) return null;
    params[key] = iso;
  }
  if (late !== undefined && late !== null && String(late).trim() !== '') {
    params.late = String(late).trim();
  }
  return params;
}

// The rows of a report as `after audit` prints them: per task (in the report's order), a task
// that cannot be read, its occurrences (those on time only with `all`), then its extra runs.
export function auditRows(report, all = false) {
  const rows = [];
  for (const task of report.tasks || []) {
    if (task.error) {
      rows.push({ task: task.task, at: null, verdict: 'error', lateness: null, runs: null,
        reason: `cannot be read: ${task.error}` });
    }
    for (const o of task.occurrences || []) {
      if (!all && o.verdict === 'on_time') continue;
      rows.push({ task: task.task, at: parseDate(o.occurrence), verdict: o.verdict,
        lateness: o.lateness_s, runs: (o.runs || []).length, reason: o.reason || '' });
    }
    for (const x of task.extra || []) {
      rows.push({ task: task.task, at: parseDate(x.occurrence), verdict: 'extra',
        lateness: null, runs: 1, reason: `${x.reason}: ${x.run}` });
    }
  }
  return rows;
}

// -- paging --------------------------------------------------------------------------------

// One page of a list: the page's items and where it is (index clamped to the pages there
// are; first and last are 1-based positions, 0 for an empty list).
export function page(items, index, size) {
  const pages = Math.max(1, Math.ceil(items.length / size));
  const at = Math.min(Math.max(0, Math.trunc(index) || 0), pages - 1);
  const rows = items.slice(at * size, (at + 1) * size);
  return { rows, index: at, pages, total: items.length,
    first: rows.length ? at * size + 1 : 0, last: at * size + rows.length };
}
