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


#: the layers, bottom up: a module's layer is the subpackage it is in
LAYERS = ("after.rules", "after.couch", "after.worker", "after.dashboard", "after.cli")
#: the modules at the top of the package, outside the layers: what every layer may read
#: (config), the jobs folder and its loading, the processes of a machine, and the Python API
TOP = {f"after.{name}" for name in (
    "__main__", "config", "jobs", "jobmodules", "builtin_jobs", "process", "client", "aio",
    "audit", "metrics", "replica")}


def _graph() -> dict[str, set[str]]:
    spec = importlib.util.spec_from_file_location("imports_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script.graph()


def _in(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_every_module_is_in_a_layer():
    """A new module goes into the layer it belongs to; the top of the package stays short."""
    edges = _graph()
    loose = {m for m in edges if m != "after" and not _in(m, *LAYERS) and m not in TOP}
    assert not loose, f"modules outside the layers: {sorted(loose)}"
    assert {m for m in edges if _in(m, "after.rules")} >= {
        "after.rules.task", "after.rules.repeat", "after.rules.dates"}


def breaches(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(module, what it imports against the layers): rules <- couch <- worker; the Client
    beside the worker, never on it; the CLI on top, imported by nothing but itself and
    ``python -m after``."""
    found = []
    for module, deps in edges.items():
        for dep in deps:
            if ((_in(module, "after.rules") and not _in(dep, "after.rules"))  # pure
                    or (_in(module, "after.couch")  # the server: no worker, no interface
                        and not _in(dep, "after.rules", "after.couch", "after.config"))
                    or (module in ("after.client", "after.aio")  # the API runs no worker
                        and _in(dep, "after.worker"))
                    or (_in(module, "after.worker")  # the worker serves no interface
                        and _in(dep, "after.cli", "after.client", "after.aio",
                                "after.dashboard"))
                    or (not _in(module, "after.cli", "after.__main__")
                        and _in(dep, "after.cli"))):
                found.append((module, dep))
    return found


def test_the_layers_hold():
    assert breaches(_graph()) == []


def test_a_breach_of_the_layers_is_seen():
    edges = _graph()
    for module, dep in (("after.rules.task", "after.couch.store"),
                        ("after.couch.store", "after.worker.loop"),
                        ("after.client", "after.worker.gates"),
                        ("after.worker.loop", "after.client"),
                        ("after.jobs", "after.cli.common")):
        bad = {**edges, module: edges[module] | {dep}}
        assert breaches(bad) == [(module, dep)]


def test_a_module_over_500_lines_says_why():
    """Issue 22: no module over 500 lines without a reason written at its top, after its
    docstring (``# Longer than 500 lines on purpose: ...``)."""
    package = SCRIPT.parents[1] / "after"
    silent = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 500:
            head = text[:text.find("from __future__")] if "from __future__" in text else text
            if "# Longer than 500 lines on purpose: " not in head:
                silent.append(f"{path.relative_to(package.parent)} ({text.count(chr(10))})")
    assert not silent, f"over 500 lines, with no reason at the top: {silent}"


def test_the_hops_from_the_feed_to_a_job_are_counted(capsys):
    """scripts/hops.py (the figure issue 22 asks for) follows a task from the feed to its job."""
    spec = importlib.util.spec_from_file_location("hops_script", SCRIPT.with_name("hops.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main() == 0
    said = capsys.readouterr().out
    assert "calls into after's functions from the feed to the job" in said
    assert "after.worker.decide" in said and "after.worker.running" in said
