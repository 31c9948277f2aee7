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


#: The rules: pure (documents, dates, schedules), importing nothing but each other.
RULES = {f"after.{name}" for name in (
    "task", "repeat", "dates", "calendar", "occurrence", "skipping", "catchup", "overlap",
    "jsonsafe", "jobnames", "redact")}


def _graph() -> dict[str, set[str]]:
    spec = importlib.util.spec_from_file_location("imports_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script.graph()


def _cli(name: str) -> bool:
    return name == "after.cli" or name.startswith("after.cli.")


def test_the_layers_hold():
    """rules <- store <- worker; the Client beside the worker, never on it; the CLI on top,
    imported by nothing but itself and ``python -m after``."""
    edges = _graph()
    assert RULES <= set(edges), RULES - set(edges)
    for rule in RULES:  # the rules import nothing of the store, the worker, the interfaces
        assert edges[rule] <= RULES, (rule, edges[rule] - RULES)
    for module in ("after.client", "after.aio"):  # the Python API runs no worker
        assert not {d for d in edges[module] if d.startswith("after.worker")}, module
    for module, deps in edges.items():
        if module.startswith("after.worker"):  # the worker serves no interface
            assert not {d for d in deps if _cli(d) or d in (
                "after.client", "after.aio", "after.dashboard_server")}, module
        if not _cli(module) and module != "after.__main__":
            assert not {d for d in deps if _cli(d)}, module
