"""Draw the imports between the modules of ``after`` and look for circles.

    python scripts/imports.py            # each module and what it imports; circles last
    python scripts/imports.py --dot      # the graph for Graphviz (dot -Tsvg)

Counts every import, at the top of a module or inside a function (a lazy import is still a
dependency). Exits 1 when two modules import each other, directly or through others.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "after"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of the package ``path`` imports (``from . import x`` counts ``x``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(p, modules) for p in paths}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    edges = graph()
    if "--dot" in sys.argv:
        print("digraph after {")
        for node, targets in sorted(edges.items()):
            for target in sorted(targets):
                print(f'  "{node}" -> "{target}";')
        print("}")
    else:
        for node, targets in sorted(edges.items()):
            print(f"{node}: {', '.join(sorted(t.removeprefix('after.') for t in targets))}")
    found = circles(edges)
    for component in found:
        print("circle:", " <-> ".join(component), file=sys.stderr)
    if not found:
        print("no circle", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
