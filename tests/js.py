"""Run the dashboard's JavaScript modules and the design document's functions under Node.js
(the one the embedded server needs), for tests without a browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "after" / "dashboard"
CASES = ROOT / "tests" / "cases"


def cases(name: str) -> dict:
    """A shared table of cases from ``tests/cases/NAME.json``."""
    return json.loads((CASES / f"{name}.json").read_text())


def node(script: str, timeout: float = 30) -> object:
    """Run ``script`` (an ES module body that ends by printing one JSON value) and return
    what it printed, parsed."""
    binary = shutil.which("node")
    if binary is None:
        raise RuntimeError("Node.js is missing: `make install` needs it (nodejs 20)")
    done = subprocess.run([binary, "--input-type=module"], input=script, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        raise AssertionError(f"node failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def model_url() -> str:
    return (DASHBOARD / "model.js").as_uri()
