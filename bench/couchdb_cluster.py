"""A local N-node Apache CouchDB 3 cluster, started and stopped by pid through the
``couchdb.sh`` beside the repository (``../shared/couchdb``, or the folder
``AFTER_TEST_COUCHDB_HOME`` names). Used by ``tests/cluster`` and ``python -m bench.cluster``.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN = ("admin", "secret")  # couchdb.sh's default cluster admin


def couchdb_home() -> Path:
    home = Path(os.environ.get("AFTER_TEST_COUCHDB_HOME") or ROOT.parent / "shared" / "couchdb")
    script = home / "couchdb.sh"
    if not script.is_file():
        raise RuntimeError(f"no {script}: set AFTER_TEST_COUCHDB_HOME to the folder holding "
                           "couchdb.sh and the CouchDB 3 release")
    return home


def free_port_range(count: int, tries: int = 50) -> int:
    """A base port with ``count`` consecutive free ports on 127.0.0.1, below the kernel's
    ephemeral range (32768 and up here): a node killed and started again must find its
    pinned ports free, and an outgoing connection's ephemeral port once took one (the
    node's restart failed with eaddrinuse)."""
    for _ in range(tries):
        base = random.randrange(20000, 32000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports found")


class Cluster:
    """The nodes of a cluster started by ``couchdb.sh``; node numbers are 1-based."""

    def __init__(self, script: Path, folder: Path, base: int, size: int = 3):
        self.script, self.folder, self.base, self.size = script, folder, base, size

    def sh(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(["bash", str(self.script), *args], capture_output=True,
                                text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"couchdb.sh {' '.join(args)} failed: "
                               f"{result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def start(self) -> None:
        self.sh("cluster-start", str(self.size), str(self.base), str(self.folder))

    def stop(self) -> None:
        self.sh("cluster-stop", str(self.folder))

    def port(self, k: int) -> int:
        return self.base + k - 1

    def url(self, k: int) -> str:
        return f"http://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{self.port(k)}"

    def urls(self, first: int = 1) -> str:
        """Every node's URL, comma separated, starting with node ``first``."""
        order = [(first - 1 + i) % self.size + 1 for i in range(self.size)]
        return ",".join(self.url(k) for k in order)

    def kill(self, k: int, signal: str = "KILL") -> None:
        self.sh("node-stop", str(self.folder), str(k), signal)

    def revive(self, k: int) -> None:
        self.sh("node-start", str(self.folder), str(k))

    def heal(self) -> None:
        """Every node up again (after a test that stopped some)."""
        for k in range(1, self.size + 1):
            if not self.up(k):
                self.revive(k)

    def up(self, k: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port(k)}/_up", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def pids(self) -> list[int]:
        """The running nodes' pids."""
        found = []
        for k in range(1, self.size + 1):
            try:
                found.append(int((self.folder / f"node{k}" / "couchdb.pid").read_text()))
            except (OSError, ValueError):
                pass
        return found
