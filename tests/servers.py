"""The servers the suite runs on, started by the suite itself and stopped by pid.

- ``pouchdb``: the embedded pouchdb-server (npm, in memory), always.
- ``couchdb``: Apache CouchDB 3 single node with an admin password, from the release in
  ``../shared/couchdb`` or the folder ``AFTER_TEST_COUCHDB_HOME`` names, when it is there.
  Under CI it must be there: a missing release fails the run rather than skipping CouchDB.
- ``external``: ``AFTER_TEST_COUCHDB_URL`` (credentials allowed), a server of the user's own;
  the suite then runs on it alone.

``AFTER_TEST_SERVERS=pouchdb`` (or ``couchdb``, comma separated) narrows the choice for a
quick local run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from after.couch.server import EmbeddedServer, free_port
from after.couch.store import split_credentials

ROOT = Path(__file__).resolve().parent.parent
ADMIN = ("admin", "secret")  # what couchdb.sh sets up


def couchdb_home() -> Path | None:
    """The folder holding ``couchdb.sh``, or None where there is no release."""
    named = os.environ.get("AFTER_TEST_COUCHDB_HOME")
    candidates = [Path(named)] if named else [ROOT.parent / "shared" / "couchdb"]
    for home in candidates:
        if (home / "couchdb.sh").is_file():
            return home.resolve()
    if named:
        raise RuntimeError(f"AFTER_TEST_COUCHDB_HOME={named} holds no couchdb.sh")
    return None


def server_kinds() -> list[str]:
    """Which servers this run uses, in order."""
    if os.environ.get("AFTER_TEST_COUCHDB_URL"):
        return ["external"]
    kinds = ["pouchdb"]
    if couchdb_home():
        kinds.append("couchdb")
    elif os.environ.get("CI"):
        raise RuntimeError("CI must run on Apache CouchDB too, and no release was found in "
                           "../shared/couchdb or AFTER_TEST_COUCHDB_HOME")
    wanted = os.environ.get("AFTER_TEST_SERVERS")
    if wanted:
        chosen = [k.strip() for k in wanted.split(",") if k.strip()]
        unknown = set(chosen) - set(kinds)
        if unknown:
            raise RuntimeError(f"AFTER_TEST_SERVERS names {sorted(unknown)}, "
                               f"not available here (available: {kinds})")
        kinds = chosen
    return kinds


def couchdb_script() -> list[str]:
    home = couchdb_home()
    if home is None:
        raise RuntimeError("no CouchDB release (../shared/couchdb or AFTER_TEST_COUCHDB_HOME)")
    return ["bash", str(home / "couchdb.sh")]


def run_script(*args: str, timeout: float = 120) -> str:
    """Runs couchdb.sh; its cache goes to the temporary folder, never beside the release."""
    result = subprocess.run([*couchdb_script(), *args], capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"couchdb.sh {' '.join(args)} failed: "
                           f"{(result.stderr or result.stdout).strip()}")
    return result.stdout


class CouchDBNode:
    """One Apache CouchDB node on 127.0.0.1, its data on disk, so it can be restarted."""

    kind = "couchdb"

    def __init__(self, datadir: Path, port: int | None = None):
        self.datadir = Path(datadir)
        self.port = port or free_port()
        user, password = ADMIN
        self.url = f"http://{user}:{password}@127.0.0.1:{self.port}"

    def start(self) -> None:
        run_script("start", str(self.port), str(self.datadir))

    def stop(self) -> None:
        if self.datadir.exists():
            run_script("stop", str(self.datadir))

    def describe(self) -> str:
        return f"Apache CouchDB single node, admin auth, 127.0.0.1:{self.port}"


class PouchDBServer:
    """The embedded pouchdb-server, in memory or on disk."""

    kind = "pouchdb"

    def __init__(self, workdir: Path, *, disk: bool = False):
        workdir = Path(workdir)
        self.server = EmbeddedServer(workdir=workdir, port=free_port(),
                                     data=workdir / "data" if disk else None)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def describe(self) -> str:
        return f"pouchdb-server, 127.0.0.1:{self.server.port}"


def make_server(kind: str, workdir: Path, *, disk: bool = False):
    """A server of ``kind`` (not started)."""
    if kind == "couchdb":
        return CouchDBNode(workdir)
    if kind == "pouchdb":
        return PouchDBServer(workdir, disk=disk)
    raise ValueError(f"cannot start a server of kind {kind!r}")


def server_version(url: str) -> str:
    """What the server says it is, for the report."""
    bare, auth = split_credentials(url)
    try:
        info = httpx.get(bare + "/", auth=auth, timeout=5).json()
    except Exception as exc:  # only for the report header
        return f"unknown ({exc})"
    vendor = (info.get("vendor") or {}).get("name", "")
    return f"{vendor} {info.get('version', '?')}".strip()
