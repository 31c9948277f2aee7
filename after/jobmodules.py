"""Jobs from installed modules (``--jobs-module pkg.jobs``), and why a module is no job.

A jobs folder's modules are loaded from their files under private names, so they cannot
import each other. Jobs that share code live in a package instead, named with
``--jobs-module`` (``AFTER_JOBS_MODULE``, ``"jobs_module"`` in config.json) and imported
normally, so ``from . import common`` and ``from pkg.util import x`` work:

- a package (``pkg/jobs/__init__.py``) is a jobs folder you can import: its module
  ``pkg/jobs/billing.py`` defining ``billing`` is the job ``billing``, and ``@job`` works in
  any of its modules;
- a plain module (``pkg/tasks.py``) gives the function named like it (``tasks``) and its
  ``@job`` functions.

Only the modules the operator names, and the direct submodules found on disk in a named
package, are imported, and only when the registry loads its jobs: a task document never
makes the worker import anything (a job name has no dot, and is looked up among what was
found). A module whose name starts with ``_`` is a helper: never a job, never reported.

:func:`no_job_reason` says why a module defines no job, for ``after jobs`` and ``after
start`` (a module that defines only ``generate_billing`` and ``tick`` in ``billing.py``
used to give no job and no word).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

from after.rules.jobnames import JOB_NAME
from after.rules.redact import redact_text


@dataclass(frozen=True)
class Notice:
    """Something ``after jobs`` and ``after start`` say about where jobs come from."""

    source: str  # a file, a module name, or the jobs folder
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass
class Found:
    """What the jobs modules gave: name -> (function, source), and what to say."""

    jobs: dict[str, tuple[Callable, str]]
    notices: list[Notice]


def own_functions(module: types.ModuleType) -> list[str]:
    """The public functions ``module`` defines itself (not those it imports)."""
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or not inspect.isfunction(value):
            continue
        if getattr(value, "__module__", None) == module.__name__:
            names.append(name)
    return sorted(names)


def no_job_reason(module: types.ModuleType, stem: str) -> str:
    """Why ``module`` (whose jobs would be named ``stem``) defines no job."""
    functions = own_functions(module)
    rule = (f"a job is the function named like its module ({stem}) or a function decorated "
            "with @after.jobs.job")
    if not functions:
        return f"defines no job: it defines no function ({rule})"
    shown = ", ".join(f"{name}()" for name in functions[:6])
    if len(functions) > 6:
        shown += f" and {len(functions) - 6} more"
    return (f"defines no job: {rule}; it defines {shown} (rename the module or the function, "
            "or decorate them with @job)")


def is_job_function(value) -> bool:
    return callable(value) and not isinstance(value, types.ModuleType | type)


def _source(module: types.ModuleType) -> str:
    return getattr(module, "__file__", None) or module.__name__


def _registered_by(module_name: str, registered: dict[str, Callable]) -> list[str]:
    return [name for name, func in registered.items()
            if getattr(func, "__module__", None) == module_name]


def _import(name: str, notices: list[Notice]) -> types.ModuleType | None:
    try:
        return importlib.import_module(name)
    except (Exception, SystemExit) as exc:
        notices.append(Notice(name, "failed to import: "
                                    + redact_text(f"{type(exc).__name__}: {exc}")))
        return None


def load(names: tuple[str, ...], registered: Callable[[], dict[str, Callable]]) -> Found:
    """Import the jobs modules ``names`` (and a package's direct submodules) and collect
    their jobs; ``registered()`` is the process-wide table of ``@job`` functions, read after
    the imports (an imported module's ``@job`` goes there)."""
    notices: list[Notice] = []
    candidates: list[tuple[types.ModuleType, str]] = []  # (module, the job its name gives)
    for name in names:
        module = _import(name, notices)
        if module is None:
            continue
        if hasattr(module, "__path__"):  # a package: each submodule is a file of a folder
            subs = sorted(info.name for info in pkgutil.iter_modules(module.__path__))
            for sub in subs:
                if not JOB_NAME.fullmatch(sub) or sub.startswith("_"):
                    continue
                child = _import(f"{module.__name__}.{sub}", notices)
                if child is not None:
                    candidates.append((child, sub))
        else:
            candidates.append((module, module.__name__.rpartition(".")[2]))
    table = registered()
    jobs: dict[str, tuple[Callable, str]] = {}
    for module, stem in candidates:
        own = getattr(module, stem, None)
        if is_job_function(own):
            jobs.setdefault(stem, (own, _source(module)))
        elif not _registered_by(module.__name__, table):
            notices.append(Notice(_source(module), no_job_reason(module, stem)))
    return Found(jobs, notices)


def check_names(names: tuple[str, ...]) -> None:
    """ValueError unless each is a dotted module name (``pkg.jobs``)."""
    for name in names:
        parts = name.split(".") if isinstance(name, str) else [""]
        if not all(part.isidentifier() for part in parts):
            raise ValueError(f"{name!r} is not a module name (like pkg.jobs)")


def forget(names: tuple[str, ...]) -> None:
    """Drop the jobs modules from ``sys.modules``: the next load imports them anew."""
    for loaded in list(sys.modules):
        if any(loaded == name or loaded.startswith(name + ".") for name in names):
            sys.modules.pop(loaded, None)
