// app.js: the dashboard's state, how it is loaded and kept live from the _changes feeds, and
// the actions (each a normal document update with _rev).

import {
  auditReport, database, follow, locate, replicationStatus, taskAction, workerAction,
} from './couch.js';
import { $ } from './dom.js';
import * as model from './model.js';
import * as render from './render.js';

const TASK_LIMIT = 500;
const RUN_LIMIT = 300;
const DAY = 24 * 3600000;
const OVERDUE_SLACK = 60000; // a task this late without a run is "overdue"

const where = locate(document);
const db = {
  tasks: database(where.root, where.db),
  runs: database(where.root, where.runs),
  workers: database(where.root, where.workers),
};

const state = {
  tasks: new Map(),
  runs: new Map(),
  workers: new Map(),
  pauses: new Map(), // paused worker names: id NAME@paused -> its document
  slots: new Map(), // concurrency slots, from the workers database
  replication: {}, // worker name -> its replications with a central CouchDB (a site's)
  counts: {},
  facets: { workers: [], jobs: [] },
  upcoming: [],
  upcomingTruncated: false,
  overdue: 0,
  filters: { worker: '', status: '', job: '', search: '' },
  tasksTruncated: false,
  loadingTasks: true,
  live: { tasks: false, runs: false, workers: false },
  everLive: false, // every feed has been connected once: a loss now is a reconnection
  busy: new Set(),
  audit: { report: null, loading: false, error: '', all: false },
  // the page of each paged list asked for (render clamps it to the pages there are)
  taskPage: 0,
  runPage: 0,
  workerPage: 0,
};

const stops = [];

// -- drawing, at most once a frame ---------------------------------------------------------

const dirty = new Set();
let frame = null;

function redraw(...parts) {
  parts.forEach((p) => dirty.add(p));
  if (frame === null) frame = requestAnimationFrame(draw);
}

// The names served by a live process, and the paused ones: when they change, the tasks
// are drawn again (a waiting task says whether a process serves its name).
let servedKey = '';

function served(now) {
  const live = [...state.workers.values()].filter((doc) => model.workerState(doc, now) === 'live')
    .map((doc) => doc.name);
  return JSON.stringify([[...new Set(live)].sort(), model.pausedNames([...state.pauses.values()])]);
}

function draw() {
  frame = null;
  const now = Date.now();
  const parts = new Set(dirty);
  dirty.clear();
  if (parts.has('workers')) {
    const key = served(now);
    if (key !== servedKey) parts.add('tasks');
    servedKey = key;
  }
  if (parts.has('workers')) render.workers(state, now, actOnWorker);
  if (parts.has('schedule')) render.schedule(state, now);
  if (parts.has('counts')) {
    render.counts(state, pickStatus);
    render.filters(state);
  }
  if (parts.has('tasks')) render.tasks(state, now, act);
  if (parts.has('runs')) render.runs(state, now, showTask);
  if (parts.has('live')) render.liveness(state);
  if (parts.has('audit')) render.audit(state, showTask);
}

// -- loading -------------------------------------------------------------------------------

function revNumber(doc) {
  return parseInt(String(doc && doc._rev).split('-')[0], 10) || 0;
}

// Keep the newest revision of a task (our own PUT and the feed may arrive in any order).
function putTask(doc) {
  const known = state.tasks.get(doc._id);
  if (known && revNumber(known) > revNumber(doc)) return;
  if (model.isTask(doc) && model.matches(doc, state.filters)) state.tasks.set(doc._id, doc);
  else state.tasks.delete(doc._id);
}

let tasksGeneration = 0;

async function loadTasks() {
  const generation = ++tasksGeneration;
  state.loadingTasks = true;
  const { search } = state.filters;
  let docs;
  if (search) {
    // search by id: the ids that start with it, in id order
    const answer = await db.tasks.allDocs({ startkey: JSON.stringify(search),
      endkey: JSON.stringify(`${search}\ufff0`), include_docs: 'true', limit: TASK_LIMIT });
    docs = answer.rows.map((row) => row.doc).filter(Boolean);
  } else {
    const answer = await db.tasks.find({ selector: model.selector(state.filters),
      limit: TASK_LIMIT });
    docs = answer.docs;
  }
  if (generation !== tasksGeneration) return; // the filters changed meanwhile
  state.tasksTruncated = docs.length >= TASK_LIMIT;
  // Keep what the feed delivered while the query ran, when it is newer.
  const known = state.tasks;
  state.tasks = new Map();
  for (const doc of docs) {
    const seen = known.get(doc._id);
    putTask(seen && revNumber(seen) > revNumber(doc) ? seen : doc);
  }
  state.loadingTasks = false;
  redraw('tasks');
}

async function loadSummary() {
  const now = Date.now();
  const [byStatus, facets, upcoming, overdue] = await Promise.all([
    db.tasks.view('dashboard', 'status', { group_level: 1 }),
    db.tasks.view('dashboard', 'status', { group_level: 3 }),
    db.tasks.view('dashboard', 'upcoming', { startkey: now, endkey: now + DAY,
      reduce: false, limit: 2000 }),
    db.tasks.view('dashboard', 'upcoming', { endkey: now - OVERDUE_SLACK, reduce: true }),
  ]);
  state.counts = Object.fromEntries(byStatus.rows.map((row) => [row.key[0], row.value]));
  const workers = new Set();
  const jobs = new Set();
  for (const { key } of facets.rows) {
    if (key[1]) workers.add(key[1]);
    if (key[2]) jobs.add(key[2]);
  }
  state.facets = { workers: [...workers], jobs: [...jobs] };
  state.upcoming = upcoming.rows.map((row) => ({ id: row.id, due: row.key, ...row.value }));
  state.upcomingTruncated = upcoming.rows.length >= 2000;
  state.overdue = overdue.rows.length ? overdue.rows[0].value : 0;
  redraw('counts', 'schedule');
}

// The latest runs: the tail of the runs database's changes (runs are written once).
async function loadRuns() {
  const answer = await db.runs.changes({ descending: 'true', limit: RUN_LIMIT,
    include_docs: 'true' });
  state.runs.clear();
  answer.results.forEach((change) => putRun(change.doc));
  redraw('runs');
}

function putRun(doc) {
  if (!model.isRun(doc)) return;
  state.runs.set(doc._id, doc);
  if (state.runs.size > RUN_LIMIT) {
    const oldest = [...state.runs.values()].sort((a, b) => model.runTime(a) - model.runTime(b));
    oldest.slice(0, state.runs.size - RUN_LIMIT).forEach((run) => state.runs.delete(run._id));
  }
}

// No feed says how a replication is doing: asked on start and every 10 s.
async function loadReplication() {
  state.replication = (await replicationStatus(where.root)).names || {};
  redraw('workers');
}

async function loadWorkers() {
  const answer = await db.workers.allDocs({ include_docs: 'true' });
  state.workers.clear();
  state.pauses.clear();
  state.slots.clear();
  answer.rows.forEach((row) => {
    if (model.isWorker(row.doc)) state.workers.set(row.id, row.doc);
    else if (model.isPause(row.doc)) state.pauses.set(row.id, row.doc);
    else if (model.isSlot(row.doc)) state.slots.set(row.id, row.doc);
  });
  redraw('workers');
}

// -- live updates --------------------------------------------------------------------------

let summaryTimer = null;

function refreshSummarySoon() {
  clearTimeout(summaryTimer);
  summaryTimer = setTimeout(() => loadSummary().catch(failed), 800);
}

const onChanges = {
  tasks(results) {
    let touched = false;
    for (const change of results) {
      if (change.id.startsWith('_design/')) continue;
      touched = true;
      if (change.deleted) state.tasks.delete(change.id);
      else if (change.doc) putTask(change.doc);
    }
    if (touched) {
      redraw('tasks');
      refreshSummarySoon();
    }
  },
  runs(results) {
    results.forEach((change) => {
      if (change.deleted) state.runs.delete(change.id);
      else putRun(change.doc);
    });
    redraw('runs');
  },
  workers(results) {
    results.forEach((change) => {
      if (change.deleted || !model.isWorker(change.doc)) state.workers.delete(change.id);
      else state.workers.set(change.id, change.doc);
      if (change.deleted || !model.isPause(change.doc)) state.pauses.delete(change.id);
      else state.pauses.set(change.id, change.doc);
      if (change.deleted || !model.isSlot(change.doc)) state.slots.delete(change.id);
      else state.slots.set(change.id, change.doc);
    });
    redraw('workers');
  },
};

async function start() {
  stops.splice(0).forEach((stop) => stop());
  // Follow each feed from the sequence before its first load: nothing falls in between.
  const seqs = {};
  for (const name of ['tasks', 'runs', 'workers']) {
    try {
      seqs[name] = (await db[name].info()).update_seq;
    } catch (error) {
      if (error.status === 404 && name !== 'tasks') {
        render.message(`The database ${db[name].name} does not exist: run \`after setup\`.`,
          'warn');
        delete state.live[name];
        continue;
      }
      throw error;
    }
  }
  await Promise.all([
    loadTasks(), loadSummary(),
    'runs' in seqs ? loadRuns() : null,
    'workers' in seqs ? loadWorkers() : null,
  ]);
  for (const name of Object.keys(seqs)) {
    stops.push(follow(db[name], seqs[name], {
      onChanges: onChanges[name],
      onState: (on) => {
        state.live[name] = on;
        if (Object.values(state.live).every(Boolean)) state.everLive = true;
        redraw('live');
      },
      onError: (error) => { if (error.status === 401 || error.status === 403) failed(error); },
    }));
  }
  redraw('workers', 'schedule', 'counts', 'tasks', 'runs', 'live');
}

// The page has no credentials of its own: `after dashboard` holds them. A 401 is CouchDB
// refusing those; a 403 is CouchDB's (or the dashboard server's) refusal, with its reason.
function failed(error) {
  if (error.status === 401) {
    render.message('CouchDB refused the credentials `after dashboard` uses: '
      + `${error.message}. Check its URL and start it again.`, 'error');
    return;
  }
  if (error.status === 403) {
    render.message(`Refused: ${error.message}`, 'error');
    return;
  }
  render.message(`Cannot load the dashboard's data: ${error.message}`, 'error');
}

// -- actions -------------------------------------------------------------------------------

const DONE_WORDS = { cancel: 'Cancel requested for', run: 'One extra run asked for',
  rerun: 'Will run again:', reschedule: 'Rescheduled', backfill: 'Backfill of',
  pause: 'Paused', resume: 'Resumed' };

// Pause or resume a worker name: its pause document comes back through the workers feed;
// a pause answers once the name's live processes acknowledged it (or names those that did not).
async function actOnWorker(name, kind) {
  try {
    const answer = await workerAction(where.root, name, kind);
    if (kind === 'pause') {
      const said = model.pauseMessage(name, answer);
      render.message(said.text, said.kind);
    } else render.message(`Resumed the worker name ${name}.`, 'ok');
  } catch (error) {
    if (error.status === 401) failed(error);
    else render.message(`Could not ${kind} ${name}: ${error.message}`, 'error');
  }
}

async function act(id, kind) {
  if (kind === 'reschedule') {
    askDate(id);
    return;
  }
  if (kind === 'backfill') {
    askWindow(id);
    return;
  }
  await update(id, kind);
}

// run: the answer is the one-off task of the extra run; backfill: what it asked for
async function update(id, kind, iso, body) {
  if (!state.tasks.get(id)) return;
  state.busy.add(id);
  redraw('tasks');
  try {
    const answer = await taskAction(where.root, id, kind, body || (iso ? { date: iso } : {}));
    let extra = kind === 'reschedule' ? ` to ${iso.replace('T', ' ')}` : '';
    if (kind === 'backfill') {
      extra = `: ${answer.created.length} occurrence(s) to run`
        + (answer.existing.length ? `, ${answer.existing.length} asked for before` : '')
        + (answer.pending.length === 1 ? `, ${answer.pending[0]} left to the task's own run`
          : answer.pending.length ? `, ${answer.pending.length} left to the task's own runs`
          : '');
    } else {
      putTask(answer);
    }
    render.message(`${DONE_WORDS[kind]} ${id}${extra}.`, 'ok');
  } catch (error) {
    if (error.status === 409 || error.status === 404) {
      render.message(`${id} changed meanwhile, reloaded: ${error.message}`, 'warn');
      try {
        putTask(await db.tasks.get(id));
      } catch (reload) {
        if (reload.status === 404) state.tasks.delete(id);
      }
    } else if (error.status === 401) {
      failed(error);
    } else {
      render.message(`Could not update ${id}: ${error.message}`, 'error');
    }
  } finally {
    state.busy.delete(id);
    redraw('tasks');
  }
}

function askDate(id) {
  const doc = state.tasks.get(id);
  if (!doc) return;
  const dialog = $('#reschedule-dialog');
  $('#reschedule-id').textContent = id;
  const due = model.dueOf(doc);
  $('#reschedule-date').value = model.toUtcInput(Math.max(due ?? 0, Date.now() + 3600000));
  dialog.dataset.id = id;
  dialog.showModal();
}

function askWindow(id) {
  const dialog = $('#backfill-dialog');
  $('#backfill-id').textContent = id;
  const now = Date.now();
  $('#backfill-from').value = model.toUtcInput(now - 7 * 86400000);
  $('#backfill-to').value = model.toUtcInput(now);
  dialog.dataset.id = id;
  dialog.showModal();
}

function setupBackfill() {
  const dialog = $('#backfill-dialog');
  $('#backfill-cancel').addEventListener('click', () => dialog.close());
  $('#backfill-form').addEventListener('submit', (event) => {
    const from = model.utcInput($('#backfill-from').value);
    const to = model.utcInput($('#backfill-to').value);
    if (!from || !to) {
      event.preventDefault();
      const bad = from ? $('#backfill-to') : $('#backfill-from');
      bad.setCustomValidity('a date and time, e.g. 2026-12-01 09:00');
      bad.reportValidity();
      return;
    }
    update(dialog.dataset.id, 'backfill', null, { from, to });
  });
  for (const input of ['#backfill-from', '#backfill-to']) {
    $(input).addEventListener('input', (e) => e.target.setCustomValidity(''));
  }
}

function setupDialogs() {
  setupBackfill();
  const dialog = $('#reschedule-dialog');
  $('#reschedule-cancel').addEventListener('click', () => dialog.close());
  $('#reschedule-form').addEventListener('submit', (event) => {
    const iso = model.utcInput($('#reschedule-date').value);
    if (!iso) {
      event.preventDefault();
      $('#reschedule-date').setCustomValidity('a date and time, e.g. 2026-12-01 09:00');
      $('#reschedule-date').reportValidity();
      return;
    }
    update(dialog.dataset.id, 'reschedule', iso);
  });
  $('#reschedule-date').addEventListener('input', (e) => e.target.setCustomValidity(''));

  $('#message-close').addEventListener('click', () => { $('#message').hidden = true; });
  for (const [name, key] of [['tasks', 'taskPage'], ['runs', 'runPage'],
    ['workers', 'workerPage']]) {
    for (const [button, step] of [['prev', -1], ['next', 1]]) {
      $(`#${name}-${button}`).addEventListener('click', () => {
        state[key] = Number($(`#${name}-pager`).dataset.index || 0) + step;
        redraw(name);
      });
    }
  }
}

// -- the audit -----------------------------------------------------------------------------

async function runAudit() {
  const params = model.auditParams({ worker: $('#audit-worker').value,
    from: $('#audit-from').value, to: $('#audit-to').value, late: $('#audit-late').value });
  if (params === null) {
    render.message('The audit needs dates and times, e.g. 2026-12-01 09:00.', 'warn');
    return;
  }
  state.audit.loading = true;
  state.audit.error = '';
  redraw('audit');
  try {
    state.audit.report = await auditReport(where.root, params);
  } catch (error) {
    if (error.status === 401) failed(error);
    state.audit.report = null;
    state.audit.error = `Could not audit: ${error.message}`;
    render.message(state.audit.error, 'error');
  } finally {
    state.audit.loading = false;
    redraw('audit');
  }
}

function setupAudit() {
  $('#audit-form').addEventListener('submit', (event) => {
    event.preventDefault();
    runAudit();
  });
  $('#audit-all').addEventListener('change', (event) => {
    state.audit.all = event.target.checked;
    redraw('audit');
  });
}

// -- filters -------------------------------------------------------------------------------

let searchTimer = null;

function setFilters(changes) {
  Object.assign(state.filters, changes);
  state.taskPage = 0;
  redraw('counts');
  loadTasks().catch(failed);
}

function pickStatus(status) {
  $('#filter-status').value = status;
  setFilters({ status });
}

function showTask(id) {
  $('#search').value = id;
  setFilters({ search: id, status: '', worker: '', job: '' });
  $('#filter-worker').value = '';
  $('#filter-job').value = '';
  $('#tasks').scrollIntoView({ behavior: 'smooth' });
}

function setupFilters() {
  for (const name of ['worker', 'status', 'job']) {
    $(`#filter-${name}`).addEventListener('change', (e) => setFilters({ [name]: e.target.value }));
  }
  $('#search').addEventListener('input', (e) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => setFilters({ search: e.target.value.trim() }), 250);
  });
  $('#filters').addEventListener('submit', (e) => e.preventDefault());
}

// -- start ---------------------------------------------------------------------------------

function main() {
  $('#db-name').textContent = where.db;
  document.title = `after · ${where.db}`;
  setupDialogs();
  setupFilters();
  setupAudit();
  render.clock(Date.now());
  redraw('counts', 'live', 'audit');
  // Ages and "in 5m" move with time; heartbeats go stale without a change.
  setInterval(() => {
    render.clock(Date.now());
    redraw('workers');
  }, 1000);
  setInterval(() => redraw('tasks', 'runs', 'schedule'), 15000);
  window.addEventListener('resize', () => redraw('schedule', 'runs'));
  setInterval(() => loadSummary().catch(() => {}), 30000);
  loadReplication().catch(() => {});
  setInterval(() => loadReplication().catch(() => {}), 10000);
  start().catch(failed);
}

main();
