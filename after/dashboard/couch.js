// couch.js: CouchDB's HTTP API from the page. `after dashboard` serves the page and relays
// the requests for its three databases to CouchDB (with its own credentials), so the paths
// are CouchDB's, from the page's own origin: /<db>/_changes and so on.
//
// The server names the three databases in <meta name="after-db">, "after-runs-db" and
// "after-workers-db" (after.config derives the names; the page never builds them).

export class HttpError extends Error {
  constructor(status, error, reason) {
    super(reason || error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
  }
}

export function locate(doc) {
  const named = (name) => {
    const meta = doc.querySelector(`meta[name="${name}"]`);
    if (!meta || !meta.content) {
      throw new Error('the page does not name its databases: open it with `after dashboard`');
    }
    return meta.content;
  };
  return { root: '/', db: named('after-db'), runs: named('after-runs-db'),
    workers: named('after-workers-db') };
}

export function docPath(root, db, id) {
  const name = id.startsWith('_design/') ? `_design/${encodeURIComponent(id.slice(8))}`
    : encodeURIComponent(id);
  return `${root}${encodeURIComponent(db)}/${name}`;
}

function query(params) {
  const pairs = Object.entries(params || {}).filter(([, v]) => v !== undefined);
  if (!pairs.length) return '';
  return '?' + pairs.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
}

// Every request declares a JSON body: `after dashboard` refuses a request that may change
// something unless it is (a form or another page's no-cors fetch cannot), and unless the
// browser's Origin and Sec-Fetch-Site headers say it comes from this page's own origin.
export async function request(method, url, { body, params, signal } = {}) {
  const response = await fetch(url + query(params), {
    method,
    signal,
    credentials: 'same-origin',
    headers: { Accept: 'application/json', 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text.trim() ? JSON.parse(text) : null; } catch { data = { reason: text }; }
  if (!response.ok) {
    throw new HttpError(response.status, data && data.error, data && data.reason);
  }
  return data;
}

// Ask `after dashboard` to apply an action to a task (cancel, reschedule, run, rerun): it
// decides and writes with after.rules.task's rules; the answer is the document written.
// Pause or resume a worker name (POST /_after/workers/<name>/<pause|resume>).
export function workerAction(root, name, action) {
  return request('POST', `${root}_after/workers/${encodeURIComponent(name)}/${action}`,
    { body: {} });
}

// The audit of a window (GET /_after/audit): after.audit's report, as JSON.
export function auditReport(root, params) {
  return request('GET', `${root}_after/audit`, { params });
}

// The replications of the worker names served here with a central CouchDB
// (GET /_after/replication: {"names": {NAME: [{role, state, written, source, target, error}]}}).
export function replicationStatus(root) {
  return request('GET', `${root}_after/replication`);
}

export function taskAction(root, id, action, body) {
  return request('POST', `${root}_after/tasks/${encodeURIComponent(id)}/${action}`,
    { body: body || {} });
}

// A database on the server at `root`, with the calls the dashboard needs.
export function database(root, name) {
  const base = `${root}${encodeURIComponent(name)}`;
  return {
    name,
    info: () => request('GET', base),
    get: (id) => request('GET', docPath(root, name, id)),
    allDocs: (params) => request('GET', `${base}/_all_docs`, { params }),
    find: (body) => request('POST', `${base}/_find`, { body }),
    view: (ddoc, view, params) =>
      request('GET', `${base}/_design/${ddoc}/_view/${view}`, { params: jsonParams(params) }),
    changes: (params, signal) => request('GET', `${base}/_changes`, { params, signal }),
  };
}

// View parameters are JSON values (keys), except the plain flags.
function jsonParams(params) {
  const out = {};
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined) continue;
    out[k] = ['startkey', 'endkey', 'key'].includes(k) ? JSON.stringify(v) : String(v);
  }
  return out;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Follow a database's _changes feed from `since` with longpoll requests (what both CouchDB
// and pouchdb-server serve right, gzip included), calling onChanges(results) for each
// batch; reconnects with backoff. onState(true|false) reports the connection: a browser
// may hold a waiting response's headers back (it sniffs text/plain), so "connected" means
// the last request did not fail. Returns a stop function.
export function follow(db, since, { onChanges, onState, onError }) {
  const controller = new AbortController();
  let backoff = 500;
  let healthy = true;
  (async () => {
    while (!controller.signal.aborted) {
      if (healthy) onState(true);
      try {
        const answer = await db.changes({
          feed: 'longpoll', since, include_docs: 'true', heartbeat: '10000', timeout: '30000',
        }, controller.signal);
        healthy = true;
        backoff = 500;
        since = answer.last_seq;
        if (answer.results.length) onChanges(answer.results);
      } catch (error) {
        if (controller.signal.aborted) return;
        healthy = false;
        onState(false);
        if (onError) onError(error);
        await sleep(backoff * (0.5 + Math.random()));
        backoff = Math.min(backoff * 2, 10000);
      }
    }
  })();
  return () => controller.abort();
}
