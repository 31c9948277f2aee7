"""The shape of the package: no import circle (scripts/imports.py draws the graph)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "imports.py"


def test_no_module_imports_itself_through_others():
    spec = importlib.util.spec_from_file_location("imports_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    edges = script.graph()
    assert "after.cli.tasks" in edges and "after.cli" not in edges["after.cli.tasks"]
    assert script.circles(edges) == []
