"""The servers a bench run measures, each started for the run on free ports of 127.0.0.1 and
stopped by pid at its end:

- ``pouchdb``: the embedded pouchdb-server, in memory (the development server);
- ``couchdb``: an Apache CouchDB 3 single node from ``../shared/couchdb`` (admin/secret), its
  data in the run's temporary folder;
- ``cluster``: a 3-node CouchDB cluster (n=3, q=2) from the same release.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import httpx

from after.couch.server import EmbeddedServer, free_port, stop_pid
from after.couch.store import split_credentials

ROOT = Path(__file__).resolve().parent.parent
ADMIN = ("admin", "secret")  # what couchdb.sh sets up
KINDS = ("pouchdb", "couchdb", "cluster")


def couchdb_home() -> Path | None:
    """The folder holding ``couchdb.sh`` (``AFTER_COUCHDB_HOME`` or ``../shared/couchdb``)."""
    named = os.environ.get("AFTER_COUCHDB_HOME") or os.environ.get("AFTER_TEST_COUCHDB_HOME")
    home = Path(named) if named else ROOT.parent / "shared" / "couchdb"
    return home.resolve() if (home / "couchdb.sh").is_file() else None


def couchdb_sh(*args: str, timeout: float = 180) -> str:
    home = couchdb_home()
    if home is None:
        raise RuntimeError("no CouchDB release (../shared/couchdb or AFTER_COUCHDB_HOME)")
    result = subprocess.run(["bash", str(home / "couchdb.sh"), *args], capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"couchdb.sh {' '.join(args)} failed: "
                           f"{(result.stderr or result.stdout).strip()[-500:]}")
    return result.stdout


def free_port_range(count: int) -> int:
    """A base port such that ``count`` consecutive ports are free (best effort)."""
    for _ in range(50):
        base = free_port()
        if base + count >= 65535:
            continue
        taken = False
        for port in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    taken = True
                    break
        if not taken:
            return base
    raise RuntimeError(f"no {count} consecutive free ports")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class PouchServer:
    kind = "pouchdb"

    def __init__(self, workdir: Path):
        self.server = EmbeddedServer(workdir=workdir, port=free_port())
        self.pids: list[int] = []

    @property
    def url(self) -> str:
        return self.server.url

    def urls(self) -> list[str]:
        return [self.url]

    def start(self) -> None:
        self.pids = [self.server.start()]

    def stop(self) -> None:
        for pid in self.pids:
            stop_pid(pid)
        self.pids = []


class CouchNode:
    kind = "couchdb"

    def __init__(self, workdir: Path):
        self.datadir = Path(workdir)
        self.port = free_port()
        user, password = ADMIN
        self.url = f"http://{user}:{password}@127.0.0.1:{self.port}"
        self.pids: list[int] = []

    def urls(self) -> list[str]:
        return [self.url]

    def start(self) -> None:
        couchdb_sh("start", str(self.port), str(self.datadir))
        pid = read_pid(self.datadir / "couchdb.pid")
        self.pids = [pid] if pid else []

    def stop(self) -> None:
        if self.datadir.exists():
            couchdb_sh("stop", str(self.datadir))
        self.pids = []


class CouchCluster:
    kind = "cluster"

    def __init__(self, workdir: Path, nodes: int = 3):
        self.dir = Path(workdir)
        self.nodes = nodes
        self.base = free_port_range(2 * nodes)
        user, password = ADMIN
        self._urls = [f"http://{user}:{password}@127.0.0.1:{self.base + k}"
                      for k in range(nodes)]
        self.pids: list[int] = []

    @property
    def url(self) -> str:
        return self._urls[0]

    def urls(self) -> list[str]:
        return list(self._urls)

    def start(self) -> None:
        couchdb_sh("cluster-start", str(self.nodes), str(self.base), str(self.dir), timeout=300)
        self.pids = [p for k in range(1, self.nodes + 1)
                     if (p := read_pid(self.dir / f"node{k}" / "couchdb.pid"))]

    def stop(self) -> None:
        if self.dir.exists():
            couchdb_sh("cluster-stop", str(self.dir))
        self.pids = []


def make(kind: str, workdir: Path):
    if kind == "pouchdb":
        return PouchServer(workdir)
    if kind == "couchdb":
        return CouchNode(workdir)
    if kind == "cluster":
        return CouchCluster(workdir)
    raise ValueError(f"unknown server kind {kind!r}")


def describe(server) -> str:
    bare, auth = split_credentials(server.url)
    try:
        info = httpx.get(bare + "/", auth=auth, timeout=5).json()
    except Exception:
        return server.kind
    vendor = (info.get("vendor") or {}).get("name", "")
    if server.kind == "pouchdb":
        return f"pouchdb-server {info.get('version', '?')} (in memory)"
    if server.kind == "cluster":
        return f"{vendor} {info.get('version', '?')}, {server.nodes}-node cluster (n=3, q=2)"
    return f"{vendor} {info.get('version', '?')}, single node"
