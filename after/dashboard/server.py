"""``after dashboard``'s web server: the page from the package, the database through a proxy.

The server listens on 127.0.0.1 only. It serves the static files of ``after/dashboard/`` and
relays the page's requests for the tasks database and its ``_runs`` and ``_workers``
siblings to CouchDB through :meth:`Store.passthrough <after.couch.store.Store.passthrough>`, with
the configured credentials. The browser never sees them: it talks to this server only.

Why a local server, not a page CouchDB serves from ``_design/dashboard`` attachments (what
earlier versions did): a default CouchDB 3 serves attachments with ``Content-Security-Policy:
sandbox`` (no script runs) and its databases are admin-only (the page would need a sign-in,
a password in a browser form). Serving the page here changes nothing on the server, works
the same for an admin, a member of the databases, pouchdb-server and clusters, and keeps
the credentials in this process.

The page changes a task only through this server's actions, ``POST
/_after/tasks/<id>/<action>`` (cancel, reschedule, run, rerun, backfill, pause, resume),
which call :class:`after.client.Client`, so each transition's rules live once
(:mod:`after.rules.task`); one the task's status does not offer is refused with a 409.
``POST /_after/workers/<name>/pause`` (or ``resume``) answers once every live process of
the name acknowledged it, or after :data:`PAUSE_WAIT` seconds naming those that did not.
``GET /_after/audit`` answers :meth:`after.client.Client.audit`'s report as JSON (the Audit
view); ``GET /_after/replication`` a site's replications (the Workers view).

What passes to CouchDB (everything else gets a 403 from here and never reaches it), see
:func:`refusal`:

- the three databases only: no ``_session``, ``_config``, ``_users``, ``_node``, other
  databases, ``_security``, ``_design`` writes, ``_local`` documents or deletions;
- on each: its info, ``_all_docs``, ``_find``, ``_changes``, the dashboard's views, and
  reading documents (never writing them: the actions above do that).

A browser on this machine could be made to call 127.0.0.1 by any web page it visits, and
other users of the machine can connect to it too, so every request must carry a token:
``after dashboard`` prints and opens ``/?token=...``, which sets it as an ``HttpOnly``,
``SameSite=Strict`` cookie and redirects to the page. A request with the wrong ``Host``
(DNS rebinding) is refused as well. The cookie is not enough against a page served from
another port of this machine (or any page of the same *site*): the browser sends it with
that page's requests, and its form or ``no-cors`` fetch could cancel a task (issue 24). So
a request that may change something (any method but GET and HEAD) must come from the
dashboard's own origin, see :func:`cross_site`: a browser's ``Sec-Fetch-Site`` must say
``same-origin`` and its ``Origin`` be this server's, and the body must be declared JSON,
which neither a form nor a cross-origin fetch can send without a CORS preflight that this
server never answers. The page's own requests send all three.

Responses are relayed as they arrive, so ``_changes`` feeds (longpoll or continuous, with
heartbeats) stay live; upstream cookies and ``WWW-Authenticate`` are not relayed.
"""

from __future__ import annotations

import hmac
import html
import http.cookies
import json
import logging
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote

import httpx

from after.client import Client, TaskNotFound
from after.config import databases
from after.couch.store import Store, StoreError, Unavailable
from after.dashboard.design import CONTENT_TYPES, INDEX, STATIC, static_files
from after.rules import task as rules

log = logging.getLogger("after.dashboard")

MAX_BODY = 8 * 1024 * 1024  # a task document is far smaller
FEED_READ_TIMEOUT = 120.0  # seconds without a byte (not even a heartbeat) on a feed
PAUSE_WAIT = 10.0  # seconds a pause waits for its acknowledgements, as `after pause`'s --wait
DB_META = '<meta name="after-db" content="">'

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
RELAYED = ("content-type", "content-length", "content-encoding", "etag", "location")

# What the page may do on each of the three databases: (first path segment after the
# database, or "" for the database itself) -> methods. Other ids starting with "_" are
# refused; any other segment is a document id.
ENDPOINTS = {
    "": {"GET", "HEAD"},
    "_all_docs": {"GET", "HEAD", "POST"},
    "_find": {"POST"},
    "_changes": {"GET", "POST"},
}
DOCUMENT_METHODS = {"GET", "HEAD"}  # writes go through the actions
ACTION_RE = re.compile(
    r"/_after/tasks/([^/]+)/(cancel|reschedule|run|rerun|backfill|pause|resume)")
WORKER_ACTION_RE = re.compile(r"/_after/workers/([^/]+)/(pause|resume)")
AUDIT_PATH = "/_after/audit"
REPLICATION_PATH = "/_after/replication"
AUDIT_PARAMS = ("worker", "task", "from", "to", "late")
MAX_ACTION_BODY = 4096
VIEW_METHODS = {"GET", "HEAD"}


SAFE_METHODS = ("GET", "HEAD")


def cross_site(method: str, host: str, origin: str | None, fetch_site: str | None,
               content_type: str | None) -> str | None:
    """Why a request that may change something cannot be the dashboard page's own (another
    page made the browser send it), or None. ``host``: the request's ``Host``, already
    checked; the others: its ``Origin``, ``Sec-Fetch-Site`` and ``Content-Type`` headers.
    A client that is no browser (curl, a script with the token) sends neither Origin nor
    Sec-Fetch-Site, and is judged on its content type alone."""
    if method in SAFE_METHODS:
        return None
    if fetch_site is not None and fetch_site.strip().lower() != "same-origin":
        return (f"a cross-site request (Sec-Fetch-Site: {fetch_site.strip()[:20]}): "
                "only the dashboard's own page may act")
    if origin is not None and origin.strip().lower() != f"http://{host}".lower():
        return (f"a cross-site request (Origin: {origin.strip()[:80]}): only the "
                "dashboard's own page may act")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        return (f"a cross-site request? The body must be sent as application/json, not "
                f"{media[:40] or 'undeclared'}")
    return None


def refusal(method: str, path: str, databases: set[str]) -> str | None:
    """Why the proxy refuses ``method path`` (the path as sent, percent-encoded, without its
    query), or None when it may pass to CouchDB."""
    segments = path.split("/")[1:]
    decoded = [unquote(segment) for segment in segments]
    if any(part in (".", "..") for part in decoded):
        return "dot segments are not allowed"
    if not decoded or decoded[0] not in databases:
        return "only the dashboard's databases are reachable through it"
    rest = decoded[1:]
    if rest == [""]:
        rest = []
    if not rest:
        allowed = ENDPOINTS[""]
    elif rest[0] in ENDPOINTS and len(rest) == 1:
        allowed = ENDPOINTS[rest[0]]
    elif rest[:2] == ["_design", "dashboard"] and len(rest) == 4 and rest[2] == "_view":
        allowed = VIEW_METHODS
    elif len(rest) == 1 and rest[0] and not rest[0].startswith("_"):
        allowed = DOCUMENT_METHODS
    else:
        return f"{'/'.join(segments[1:])} is not something the dashboard uses"
    if method not in allowed:
        return f"{method} is not allowed there"
    return None


class DashboardServer:
    """The page and the proxy on ``host:port`` (port 0: a free one), in threads of its own.

    ``start()`` serves in the background (tests), ``serve_forever()`` in this thread (the
    CLI); ``stop()`` ends either. Raises ``OSError`` when the port cannot be bound.
    """

    def __init__(self, store: Store, *, port: int = 0, host: str = "127.0.0.1",
                 folder: Path = STATIC, token: str | None = None,
                 pause_wait: float = PAUSE_WAIT):
        self.store = store
        self.databases = set(databases(store.db))
        self.files = static_files(folder)
        db_meta = "".join(  # the page learns the names from here, never builds them
            f'<meta name="{name}" content="{html.escape(db, quote=True)}">'
            for name, db in zip(("after-db", "after-runs-db", "after-workers-db"),
                                databases(store.db), strict=True))
        index = self.files[INDEX].decode()
        if DB_META not in index:
            raise FileNotFoundError(f"the dashboard's {INDEX} has no {DB_META}")
        self.files[INDEX] = index.replace(DB_META, db_meta).encode()
        self.token = token or secrets.token_urlsafe(24)
        self.httpd = _Server((host, port), Handler)
        self.httpd.dashboard = self
        self.host, self.port = self.httpd.server_address[:2]
        self.cookie = f"after_dashboard_{self.port}"  # cookies are shared across ports
        self.hosts = {f"{name}:{self.port}" for name in (host, "127.0.0.1", "localhost")}
        self._thread: threading.Thread | None = None
        self.client = Client(store=store)
        self.pause_wait = pause_wait

    def act(self, task_id: str, action: str, date: str | None = None,
            window: tuple | None = None) -> dict:
        """Apply a dashboard action to a task; returns the document written (for ``run``,
        the one-off task of the extra run; for ``backfill`` of ``window`` (from, to), what
        :meth:`Client.backfill` returns). Raises TaskNotFound, StateError (the status does
        not offer it) or TaskError."""
        status = self.client.get(task_id).get("status")
        if action not in rules.ACTIONS.get(status, ()):
            raise rules.StateError(f"{task_id} is {status}: {action} is not possible")
        if action == "cancel":
            return self.client.cancel(task_id)
        if action in ("pause", "resume"):
            return getattr(self.client, action)(task_id)
        if action == "reschedule":
            if not isinstance(date, str):
                raise rules.TaskError("date: required (ISO 8601)")
            return self.client.reschedule(task_id, at=date, all=True)
        if action == "run":
            return self.client.run_now(task_id)  # one extra run, the schedule kept
        if action == "backfill":
            start, end = window or (None, None)
            for name, value in (("from", start), ("to", end)):
                if not isinstance(value, str):
                    raise rules.TaskError(f"{name}: required (ISO 8601)")
            return self.client.backfill(task_id, start, end)
        return self.client.reschedule(task_id)  # rerun: a task in error only

    def audit(self, params: dict[str, str]) -> dict:
        """The audit the page asks for (``worker``, ``task``, ``from``, ``to``, ``late``:
        empty ones left out), as JSON. Raises TaskError (a bad value), TaskNotFound."""
        unknown = sorted(set(params) - set(AUDIT_PARAMS))
        if unknown:
            raise rules.TaskError(f"{unknown[0]}: not a parameter of the audit (use "
                                  f"{', '.join(AUDIT_PARAMS)})")
        late = params.get("late") or None
        if late is not None:
            try:
                late = float(late)
            except ValueError:
                raise rules.TaskError(f"late: {late!r} is not a number of seconds") from None
        return self.client.audit(params.get("worker") or None, task=params.get("task") or None,
                                 start=params.get("from") or None, end=params.get("to") or None,
                                 **({"late": late} if late is not None else {})).as_json()

    def replication(self) -> dict:
        """``{"names": {NAME: [each replication's status]}}``: :meth:`Client.replicated`."""
        return {"names": self.client.replicated()}

    def act_on_worker(self, name: str, action: str) -> dict:
        """Pause or resume a worker name; returns ``{"name", "paused"}``, and for a pause
        the live processes of the name that acknowledged it (``"acknowledged"``) and those
        that did not within :attr:`pause_wait` seconds (``"unacknowledged"``), as ``after
        pause NAME`` waits for them. Raises TaskError for a name that is not a worker
        name."""
        if action == "pause":
            doc = self.client.pause_worker(name, wait=self.pause_wait)
            return {"name": name, "paused": True, "acknowledged": doc["acknowledged"],
                    "unacknowledged": doc["unacknowledged"]}
        self.client.resume_worker(name)
        return {"name": name, "paused": False}

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The address to open: it carries the token."""
        return f"{self.base_url}/?token={self.token}"

    def start(self) -> DashboardServer:
        self._thread = threading.Thread(target=self.serve_forever, name="after-dashboard",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Stop serving (from another thread than ``serve_forever``'s) and close the port.

        Relays still running (open feeds) end when their connection does: their threads are
        daemons."""
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def has_token(self, cookie_header: str | None) -> bool:
        cookies = http.cookies.SimpleCookie()
        try:
            cookies.load(cookie_header or "")
        except http.cookies.CookieError:
            return False
        morsel = cookies.get(self.cookie)
        return morsel is not None and hmac.compare_digest(morsel.value, self.token)


class Handler(BaseHTTPRequestHandler):
    server_version = "after-dashboard"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection; a body ends with it

    @property
    def dashboard(self) -> DashboardServer:
        return self.server.dashboard

    def do_GET(self):
        self.handle_request()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_COPY = do_OPTIONS = do_GET

    def handle_request(self) -> None:
        dashboard = self.dashboard
        if self.headers.get("Host") not in dashboard.hosts:
            self.refuse(403, "forbidden", "unexpected Host header")
            return
        if not self.path.startswith("/"):
            self.refuse(400, "bad_request", "expected a path")
            return
        path, _, query = self.path.partition("?")
        if path == "/" and self.command == "GET" and "token" in parse_qs(query):
            self.sign_in(parse_qs(query)["token"][0])
            return
        if not dashboard.has_token(self.headers.get("Cookie")):
            self.refuse(403, "forbidden", "open the address `after dashboard` printed, "
                        "with its token")
            return
        foreign = cross_site(self.command, self.headers["Host"], self.headers.get("Origin"),
                             self.headers.get("Sec-Fetch-Site"),
                             self.headers.get("Content-Type"))
        if foreign:
            self.refuse(403, "forbidden", foreign)
            return
        first = unquote(path.split("/")[1])
        if path == AUDIT_PATH:
            self.audit(query)
        elif path == REPLICATION_PATH:
            self.replication()
        elif first == "_after":
            self.action(path)
        elif first in dashboard.databases:
            self.relay(path, query)
        else:
            self.serve_file(path)

    def action(self, path: str) -> None:
        match = ACTION_RE.fullmatch(path) or WORKER_ACTION_RE.fullmatch(path)
        if match is None or self.command != "POST":
            self.refuse(404 if match is None else 405, "not_found" if match is None else
                        "method_not_allowed", "expected POST /_after/tasks/ID/ACTION")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if 0 < length <= MAX_ACTION_BODY else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.refuse(400, "bad_request", "expected a JSON object of at most 4 KiB")
            return
        try:
            if match.re is WORKER_ACTION_RE:
                doc = self.dashboard.act_on_worker(unquote(match[1]), match[2])
            else:
                doc = self.dashboard.act(unquote(match[1]), match[2], body.get("date"),
                                         (body.get("from"), body.get("to")))
        except TaskNotFound as exc:
            self.refuse(404, "not_found", str(exc))
        except rules.StateError as exc:
            self.refuse(409, "conflict", str(exc))
        except rules.TaskError as exc:
            self.refuse(400, "bad_request", str(exc))
        except StoreError as exc:
            self.refuse(502, "unavailable", str(exc))
        else:
            self.send_json(200, doc)

    def audit(self, query: str) -> None:
        if self.command != "GET":
            self.refuse(405, "method_not_allowed", f"expected GET {AUDIT_PATH}")
            return
        params = {key: values[-1] for key, values in parse_qs(query).items()}
        try:
            self.send_json(200, self.dashboard.audit(params))
        except TaskNotFound as exc:
            self.refuse(404, "not_found", str(exc))
        except rules.TaskError as exc:
            self.refuse(400, "bad_request", str(exc))
        except StoreError as exc:
            self.refuse(502, "unavailable", str(exc))

    def replication(self) -> None:
        if self.command != "GET":
            self.refuse(405, "method_not_allowed", f"expected GET {REPLICATION_PATH}")
            return
        try:
            self.send_json(200, self.dashboard.replication())
        except StoreError as exc:
            self.refuse(502, "unavailable", str(exc))

    def sign_in(self, token: str) -> None:
        dashboard = self.dashboard
        if not hmac.compare_digest(token, dashboard.token):
            self.refuse(403, "forbidden", "wrong token: open the address `after dashboard` "
                        "printed")
            return
        self.send_response(303)
        self.send_header("Location", "/")
        self.send_header("Set-Cookie", f"{dashboard.cookie}={dashboard.token}; Path=/; "
                         "HttpOnly; SameSite=Strict")
        self.send_common_headers()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def serve_file(self, path: str) -> None:
        name = INDEX if path == "/" else unquote(path[1:])
        data = self.dashboard.files.get(name)
        if data is None:
            self.refuse(404, "not_found", "neither a file of the page nor one of its "
                        "databases: " + ", ".join(sorted(self.dashboard.databases)))
            return
        if self.command not in ("GET", "HEAD"):
            self.refuse(405, "method_not_allowed", "only GET")
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPES[Path(name).suffix])
        self.send_header("Content-Length", str(len(data)))
        self.send_common_headers()
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data)

    def relay(self, path: str, query: str) -> None:
        dashboard = self.dashboard
        reason = refusal(self.command, path, dashboard.databases)
        if reason:
            self.refuse(403, "forbidden", f"the dashboard does not relay this: {reason}")
            return
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.refuse(411, "length_required", "send a Content-Length")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.refuse(400, "bad_request", "a bad Content-Length")
            return
        if length > MAX_BODY:
            self.refuse(413, "too_large", f"bodies over {MAX_BODY} bytes are not relayed")
            return
        body = self.rfile.read(length) if length else None
        feed = path.rstrip("/").endswith("/_changes")
        target = f"{path}?{query}" if query else path
        try:
            upstream = dashboard.store.passthrough(
                self.command, target, body=body,
                content_type=self.headers.get("Content-Type"),
                read_timeout=FEED_READ_TIMEOUT if feed else None)
        except Unavailable as exc:
            self.refuse(502, "unavailable", str(exc))
            return
        try:
            self.send_response(upstream.status_code)
            for name in RELAYED:
                if name in upstream.headers:
                    self.send_header(name, upstream.headers[name])
            self.send_common_headers()
            self.end_headers()
            for chunk in upstream.iter_raw():
                self.wfile.write(chunk)  # unbuffered: a feed line goes out as it comes in
        except (httpx.TransportError, OSError):
            pass  # the server or the browser went away: the page reconnects
        finally:
            upstream.close()

    def refuse(self, status: int, error: str, reason: str) -> None:
        self.send_json(status, {"error": error, "reason": reason})

    def send_json(self, status: int, value: dict) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_common_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_common_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        pass  # request lines carry the token: log_request below leaves the query out

    def log_request(self, code="-", size="-") -> None:
        log.debug("%s %s %s", self.command, self.path.partition("?")[0], code)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # an open feed never holds up the exit

    def handle_error(self, request, client_address) -> None:
        # not the default traceback on stderr: a browser closing a tab is not an error
        log.debug("dashboard request from %s failed", client_address[0], exc_info=True)
