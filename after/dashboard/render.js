// render.js: the page's sections, drawn from the state. Each function replaces the content
// of its own elements; none of them changes the state.

import { $, h, replace } from './dom.js';
import { runsChart, timeline } from './chart.js';
import {
  ACTION_LABELS, STATUSES, VERDICTS, VERDICT_LABELS, actionsFor, auditRows, capsInUse,
  catchupText, dueOf, failed, formatDuration, formatUtc, isolationOf, jobName, lateness, meta,
  rateText,
  page, parseDate, pausedNames, processState, relative, repeatText, replicationLines, sortRuns,
  sortTasks, sortWorkers, unserved, workerState,
} from './model.js';

const HOUR = 3600000;
const DAY = 24 * HOUR;
const PAGE = 50; // rows a page, in each paged list (tasks, runs, worker processes)

function when(ms, now) {
  if (ms === null || ms === undefined) return '–';
  return h('span', { title: `${formatUtc(ms)}Z` }, formatUtc(ms).slice(5, 16).replace(' ', ' · '),
    h('span', { class: 'rel' }, ` ${relative(ms, now)}`));
}

// Fill a table body, and label each cell with its column's heading (for the narrow layout,
// where rows become cards).
function fill(tbody, rows) {
  replace(tbody, rows);
  const headings = [...tbody.closest('table').querySelectorAll('thead th')]
    .map((th) => th.textContent);
  for (const row of tbody.rows) {
    [...row.cells].forEach((cell, i) => {
      if (!cell.colSpan || cell.colSpan === 1) cell.dataset.label = headings[i] || '';
    });
  }
}

function badge(kind, value) {
  return h('span', { class: `badge ${kind}-${value}` }, value || '?');
}

// A worker name's pause or resume button.
function nameButton(name, kind, onAction) {
  return h('button', { type: 'button', class: `action ${kind}-name`, 'data-action': kind,
    'data-name': name, title: kind === 'pause' ? `pause every process named ${name}`
      : `resume every process named ${name}`,
    onclick: () => onAction(name, kind) }, kind === 'pause' ? 'Pause' : 'Resume');
}

export function workers(state, now, onAction = () => {}) {
  const docs = sortWorkers([...state.workers.values()]);
  const pauses = [...state.pauses.values()];
  const paused = new Set(pausedNames(pauses));
  const live = docs.filter((d) => workerState(d, now) !== 'stale').length;
  $('#workers-count').textContent = (docs.length ? `${live} live of ${docs.length}` : '')
    + (paused.size ? ` · ${paused.size} paused` : '');
  const named = new Set();
  const pauseRows = pauses.filter((doc) => paused.has(doc.name))
    .sort((a, b) => a.name.localeCompare(b.name)).map((doc) =>
      h('tr', { class: 'worker paused-name', 'data-name': doc.name },
        h('td', { class: 'id' }, h('strong', {}, doc.name)),
        h('td', { colspan: 2, class: 'muted' }, 'every process of the name'),
        h('td', {}, badge('worker', 'paused')),
        h('td', { colspan: 4, title: doc.since || '' },
          `claims nothing since ${relative(parseDate(doc.since), now) || doc.since || '?'}`),
        h('td', {}, nameButton(doc.name, 'resume', onAction))));
  const at = page(docs, state.workerPage, PAGE); // the paused names above every page
  pager('workers', at);
  const rows = at.rows.map((doc) => {
    const st = workerState(doc, now);
    const counts = doc.counts || {};
    const first = !named.has(doc.name);
    named.add(doc.name);
    return h('tr', { class: `worker state-${st}`, 'data-id': doc._id },
      h('td', { class: 'id' }, h('strong', {}, doc.name),
        first && !paused.has(doc.name) && st !== 'stale'
          ? [' ', nameButton(doc.name, 'pause', onAction)] : ''),
      h('td', {}, doc.host),
      h('td', {}, doc.pid),
      h('td', {}, badge('worker', processState(doc, paused.has(doc.name), now))),
      h('td', { title: doc.last_seen || '' }, relative(parseDate(doc.last_seen), now) || '–'),
      h('td', { class: 'num' }, doc.held ?? 0),
      h('td', { class: 'num' }, doc.running ?? 0),
      h('td', { class: 'num' }, counts.runs ?? 0),
      h('td', { class: 'num' }, (counts.failed ?? 0) + (counts.missed ?? 0)));
  });
  fill($('#workers-body'), rows.length || pauseRows.length ? [...pauseRows, ...rows]
    : h('tr', {}, h('td', { colspan: 9, class: 'empty' },
      'No worker process has a heartbeat here. Start one with `after start NAME`.')));
  const sites = replicationLines(state.replication);
  const replicated = $('#replication');
  replicated.hidden = !sites.length;
  replace(replicated, 'Replicated with the centre: ', ...sites.flatMap((site, i) => [i ? '; ' : '',
    h('span', { class: `replica${site.ok ? '' : ' warn'}`, 'data-name': site.name },
      h('strong', {}, site.name), ' ', site.roles.map((r, k) => h('span', {
        class: 'role', 'data-role': r.role, 'data-state': r.state, title: r.error,
      }, `${k ? ', ' : ''}${r.role} ${r.state}`)))]));
  const caps = capsInUse([...state.slots.values()]);
  const line = $('#caps');
  line.hidden = !caps.length;
  replace(line, 'Caps in use: ', ...caps.flatMap((cap, i) => [i ? ', ' : '',
    h('span', { class: 'cap', 'data-key': cap.key, title: cap.tasks.join(', ') || 'none running' },
      h('strong', {}, cap.key), ` ${cap.used}/${cap.slots}`)]));
}

export function schedule(state, now) {
  const items = state.upcoming.filter((item) => item.due >= now);
  const hour = items.filter((item) => item.due <= now + HOUR);
  const width = $('#timeline-hour').clientWidth || 600;
  const dayTicks = width < 500 ? 6 * HOUR : 3 * HOUR;
  replace($('#timeline-hour'), timeline(hour, now, HOUR, 10 * 60000, 'next hour', width),
    h('p', { class: 'caption' }, `${hour.length} due in the next hour`));
  replace($('#timeline-day'), timeline(items, now, DAY, dayTicks, 'next day', width),
    h('p', { class: 'caption' }, `${items.length} due in the next 24 hours`
      + (state.upcomingTruncated ? ' (first ones shown)' : '')));
  const overdue = $('#overdue');
  overdue.textContent = state.overdue ? `${state.overdue} overdue` : '';
  overdue.classList.toggle('warn', state.overdue > 0);
}

export function counts(state, onPick) {
  const chips = STATUSES.filter((st) => state.counts[st]).map((st) => h('button', {
    type: 'button',
    class: `chip status-${st}${state.filters.status === st ? ' active' : ''}`,
    'aria-pressed': state.filters.status === st ? 'true' : 'false',
    onclick: () => onPick(state.filters.status === st ? '' : st),
  }, st, h('span', { class: 'n' }, state.counts[st])));
  const total = Object.values(state.counts).reduce((a, b) => a + b, 0);
  replace($('#status-counts'), h('span', { class: 'total' }, `${total} tasks`), chips);
}

// Keep a <select>'s choice while its options change.
function options(select, values, labels = {}) {
  const chosen = select.value;
  const all = [...new Set(values.concat(chosen ? [chosen] : []))].sort();
  replace(select, h('option', { value: '' }, 'all'),
    all.map((v) => h('option', { value: v }, labels[v] ?? v)));
  select.value = chosen;
}

export function filters(state) {
  options($('#filter-worker'), state.facets.workers);
  options($('#audit-worker'), state.facets.workers);
  options($('#filter-job'), state.facets.jobs);
  options($('#filter-status'), STATUSES);
  $('#filter-status').value = state.filters.status;
}

// A task whose runs are in a child process of their own says so beside its job, and why.
function isolated(doc) {
  if (isolationOf(doc) !== 'process') return '';
  const why = doc.isolation === 'process' ? 'isolation: process (each run in a child process)'
    : `each run in a child process since ${meta(doc).isolated}: a run was interrupted by the `
      + 'death of its process';
  return h('span', { class: 'muted isolation', title: why }, ' · process');
}

// A rate-limited task says so beside its job (the whole limit in the title).
function limited(doc) {
  const text = rateText(doc);
  const rate = text ? h('span', { class: 'muted rate', title: `rate: ${text}` },
    ` · rate ${doc.rate.limit}/${doc.rate.per}s`) : '';
  const quiet = typeof doc.debounce === 'number' && doc.debounce > 0
    ? h('span', { class: 'muted debounce',
      title: `debounce: runs once ${doc.debounce}s went by with no new version` },
    ` · debounce ${doc.debounce}s`) : '';
  return [rate, quiet];
}

// A repeating task says its rule under its job (a cron rule's daylight saving time policy
// with it: repeat.dst), and its catch-up policy when it has one (the whole of it in the
// title).
function repeated(doc) {
  const text = repeatText(doc);
  const catchup = catchupText(doc);
  const title = catchup ? `${text}; catch-up ${catchup}` : text;
  return text ? h('div', { class: 'muted repeat', title },
    text + (catchup ? ` · catch-up ${catchup.split(':')[0]}` : '')) : '';
}

function lastRun(doc, now) {
  const info = meta(doc);
  const run = info.last_run;
  const parts = [];
  if (run && run.outcome) {
    parts.push(badge('outcome', run.outcome), ' ',
      h('span', { class: 'muted', title: run.ended || '' },
        `${formatDuration(run.duration_ms)} · ${relative(parseDate(run.ended), now)}`));
    const message = run.error && (run.error.message || run.error);
    if (message && typeof message === 'string') {
      parts.push(h('div', { class: 'error-text', title: message }, message));
    }
  }
  if (doc.status === 'error' && info.error && !(run && run.error)) {
    parts.push(h('div', { class: 'error-text', title: info.error }, String(info.error)));
  }
  return parts.length ? parts : h('span', { class: 'muted' }, 'never run');
}

// A waiting task whose worker name no live process serves says so beside the name.
function unservedNote(doc, workers, paused, now) {
  const kind = unserved(doc, workers, paused, now);
  if (kind === null) return '';
  const why = kind === 'paused'
    ? `the worker name ${doc.worker} is paused: its processes start nothing until resumed`
    : `no live process serves the worker name ${doc.worker}: the task waits until one starts `
      + `(after start ${doc.worker})`;
  return h('span', { class: `unserved warn unserved-${kind}`, title: why },
    kind === 'paused' ? ' · paused' : ' · no live process');
}

// The pager under a list (``#NAME-pager``): where the page is, and the buttons to the
// others. The page shown is kept on the pager (data-index), so that Previous and Next step
// from it even when the list has shrunk under the page asked for.
function pager(name, at, truncated = false) {
  const bar = $(`#${name}-pager`);
  bar.hidden = at.pages <= 1;
  bar.dataset.index = String(at.index);
  $(`#${name}-page`).textContent = `${at.first}–${at.last} of ${at.total}`
    + `${truncated ? '+' : ''} · page ${at.index + 1} of ${at.pages}`;
  $(`#${name}-prev`).disabled = at.index === 0;
  $(`#${name}-next`).disabled = at.index >= at.pages - 1;
}

export function tasks(state, now, onAction) {
  const workers = [...state.workers.values()];
  const paused = pausedNames([...state.pauses.values()]);
  const docs = sortTasks([...state.tasks.values()]);
  const at = page(docs, state.taskPage, PAGE);
  const shown = at.rows;
  $('#tasks-shown').textContent = docs.length > shown.length
    ? `${at.first}–${at.last} of ${docs.length}${state.tasksTruncated ? '+' : ''} shown`
    : `${docs.length}${state.tasksTruncated ? '+' : ''} shown`;
  pager('tasks', at, state.tasksTruncated);
  const rows = shown.map((doc) => {
    const busy = state.busy.has(doc._id);
    const info = meta(doc);
    return h('tr', { 'data-id': doc._id, class: `task status-${doc.status}` },
      h('td', { class: 'id' }, h('code', { title: doc._id }, doc._id)),
      h('td', {}, badge('status', doc.status)),
      h('td', {}, doc.worker || '–', unservedNote(doc, workers, paused, now)),
      h('td', { class: 'job' }, jobName(doc) || '–', isolated(doc), limited(doc),
        repeated(doc)),
      h('td', {}, when(dueOf(doc), now)),
      h('td', { class: 'last' }, lastRun(doc, now)),
      h('td', { class: 'num' }, info.runs ?? 0),
      h('td', { class: 'actions' }, actionsFor(doc).map((kind) => h('button', {
        type: 'button',
        class: `action ${kind}`,
        'data-action': kind,
        disabled: busy,
        onclick: () => onAction(doc._id, kind),
      }, ACTION_LABELS[kind]))));
  });
  const empty = state.loadingTasks ? 'Loading…' : 'No task matches.';
  fill($('#tasks-body'), rows.length ? rows
    : h('tr', {}, h('td', { colspan: 8, class: 'empty' }, empty)));
}

export function runs(state, now, onTask) {
  const all = [...state.runs.values()];
  const failures = all.filter(failed).length;
  $('#runs-count').textContent = all.length
    ? `${all.length} latest · ${failures} failed` : '';
  const width = $('#runs-chart').clientWidth || 1000;
  replace($('#runs-chart'), all.length ? runsChart(all, now, width)
    : h('p', { class: 'empty' }, 'No run yet.'));
  const at = page(sortRuns(all), state.runPage, PAGE);
  pager('runs', at);
  const rows = at.rows.map((run) => {
    const message = run.error && (run.error.message || String(run.error));
    return h('tr', { class: `run outcome-${run.outcome}`, 'data-id': run._id },
      h('td', { class: 'id' }, h('button', { type: 'button', class: 'link',
        title: `show task ${run.task}`, onclick: () => onTask(run.task) }, run.task)),
      h('td', {}, `#${run.number}`, run.attempt > 1 ? h('span', { class: 'muted' },
        ` try ${run.attempt}`) : ''),
      h('td', {}, badge('outcome', run.outcome)),
      h('td', {}, when(parseDate(run.started), now)),
      h('td', { class: 'num' }, formatDuration(run.duration_ms)),
      h('td', { class: 'num' }, formatDuration(lateness(run))),
      h('td', { class: 'muted' }, `${run.worker || ''}@${run.host || ''}`),
      h('td', { class: 'error-cell' }, message
        ? h('div', { class: 'error-text', title: message }, message) : ''));
  });
  fill($('#runs-body'), rows.length ? rows
    : h('tr', {}, h('td', { colspan: 8, class: 'empty' }, 'No run recorded yet.')));
}

// The audit's report: its counts by verdict, and a row per occurrence not on time (all of
// them with "on time too"), per task that cannot be read, per extra run.
export function audit(state, onTask) {
  const { report, loading, error, all } = state.audit;
  $('#audit-run').disabled = loading;
  if (!report) {
    $('#audit-count').textContent = loading ? 'auditing…' : '';
    replace($('#audit-summary'));
    fill($('#audit-body'), h('tr', {}, h('td', { colspan: 6, class: 'empty' },
      loading ? 'Auditing…' : error || 'Pick a window and press Audit.')));
    return;
  }
  const counts = report.counts;
  const total = VERDICTS.reduce((n, v) => n + (counts[v] || 0), 0);
  $('#audit-count').textContent = loading ? 'auditing…'
    : `${total} occurrence${total === 1 ? '' : 's'} of ${report.tasks.length} task`
      + `${report.tasks.length === 1 ? '' : 's'}`;
  replace($('#audit-summary'), [...VERDICTS, 'extra'].filter((v) => counts[v]).map((v) =>
    h('span', { class: `chip verdict verdict-${v}`, 'data-verdict': v },
      VERDICT_LABELS[v], h('span', { class: 'n' }, counts[v]))));
  const rows = auditRows(report, all).map((row) => h('tr', {
    class: `audit-row verdict-${row.verdict}`, 'data-task': row.task, 'data-verdict': row.verdict },
  h('td', { class: 'id' }, h('button', { type: 'button', class: 'link',
    title: `show task ${row.task}`, onclick: () => onTask(row.task) }, row.task)),
  h('td', {}, row.at === null ? '–' : formatUtc(row.at)),
  h('td', {}, badge('verdict', row.verdict)),
  h('td', { class: 'num' }, row.lateness === null || row.lateness === undefined ? '–'
    : formatDuration(row.lateness * 1000)),
  h('td', { class: 'num' }, row.runs ?? '–'),
  h('td', { class: 'error-cell' }, row.reason
    ? h('div', { class: 'muted', title: row.reason }, row.reason) : '')));
  fill($('#audit-body'), rows.length ? rows : h('tr', {}, h('td', { colspan: 6,
    class: 'empty' }, error || (total ? 'Every occurrence ran on time.'
      : 'No occurrence in this window.'))));
}

export function clock(now) {
  $('#clock').textContent = `${formatUtc(now)} UTC`;
}

export function liveness(state) {
  const el = $('#live');
  const feeds = Object.values(state.live);
  const on = feeds.length && feeds.every(Boolean);
  // "connecting…" (as the page starts) until the first connection, "reconnecting…" after.
  el.textContent = on ? 'live' : state.everLive ? 'reconnecting…' : 'connecting…';
  el.classList.toggle('off', !on);
}

let hideTimer = null;

// A message at the top: kind is ok, warn or error. `ok` ones go away by themselves.
export function message(text, kind = 'ok') {
  const box = $('#message');
  $('#message-text').textContent = text;
  box.className = `message ${kind}`;
  box.hidden = false;
  clearTimeout(hideTimer);
  if (kind === 'ok') hideTimer = setTimeout(() => { box.hidden = true; }, 5000);
}
