"""The jobs folder: find, load, describe and call jobs.

A job ``X`` is, in this order of precedence:

1. a *registered* job: a function decorated with ``@job`` (or ``@job("X")``) in code the
   process imported normally. The built-in jobs ``http`` and ``webhook`` are registered
   this way by ``after.builtin_jobs``. Registered jobs win: a jobs-folder module cannot
   shadow them (``list()`` shows such a module with an error saying so);
2. the function ``X`` of the module ``X.py`` of the jobs folder;
3. a function decorated with ``@job("X")`` in any module of the jobs folder;
4. a job of the installed modules named with ``--jobs-module`` (:mod:`after.jobmodules`:
   modules that can share code, imported normally).

A folder that does not exist gives no job (the built-in ones still run). A module that
defines no job, or fails to import, is named with the reason by :meth:`JobRegistry.notices`
(``after jobs``, and the log of ``after start``).

Security: a task document names a job, and a document must never make the worker import
anything outside the jobs folder. So a name is checked against ``JOB_NAME`` before the
filesystem is touched, the module file must resolve (symlinks followed) inside the
folder, and it is loaded from that file under a private module name (``after_jobs.X``),
never through ``sys.path``. Modules are loaded once and cached; ``reload()`` forgets them.
"""

# Longer than 500 lines on purpose: the jobs folder's one contract, in its order of precedence:
# finding a job, loading its module (bounded, never outside the folder), describing it
# (``after jobs``) and calling it with the arguments a document gave.

from __future__ import annotations

import asyncio
import contextvars
import copy
import importlib.util
import inspect
import json
import sys
import threading
import traceback
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from after import builtin_jobs, jobmodules
from after.jobmodules import Notice
from after.rules.jobnames import JOB_NAME, MAX_NAME_LENGTH, JobError, check_name
from after.rules.jsonsafe import MAX_DEPTH, problem
from after.rules.redact import redact, redact_text

__all__ = ["JOB_NAME", "MAX_NAME_LENGTH", "JobError", "JobInfo", "JobRegistry", "Notice",
           "check_name", "job"]

#: Deepest result kept as is: it is stored under ``after.last_run.result`` of the task, which
#: must stay within the depth a task document may have.
RESULT_DEPTH = MAX_DEPTH - 8
#: Prefix of the private module names job modules are loaded under.
MODULE_PREFIX = "after_jobs"
BUILTIN = "built-in"


@dataclass(frozen=True)
class JobInfo:
    """One line of ``after jobs``."""

    name: str
    source: str  # "built-in", or the file (or module) that defines it
    signature: str  # e.g. "hello(task, name='world')"
    doc: str  # first line of the docstring, or ""
    error: str | None = None  # set when the module fails to load or is shadowed


# --- registration -------------------------------------------------------------------------

_registered: dict[str, Callable] = {}
_registered_lock = threading.Lock()
# While a jobs-folder module executes, the registrations it makes go to its own list
# instead of the process-wide table, so that two registries (two folders) stay apart.
_collector: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "after_jobs_collector", default=None
)


def job(name_or_func: str | Callable | None = None) -> Callable:
    """Register a function as a job: ``@job`` (under its own name) or ``@job("name")``.

    In a jobs-folder module the registration belongs to that folder's registry; anywhere
    else (an imported package) it is process-wide. Registering a name already taken by
    another function raises ValueError.
    """
    def checked(name: str) -> str:
        try:
            return check_name(name)
        except JobError as exc:
            raise ValueError(str(exc)) from None

    def register(func: Callable, name: str) -> Callable:
        checked(name)
        collected = _collector.get()
        if collected is not None:
            collected.append((name, func))
            return func
        with _registered_lock:
            other = _registered.get(name)
            if other is not None and _qualname(other) != _qualname(func):
                raise ValueError(f"job {name!r} is already registered by {_qualname(other)}")
            _registered[name] = func
        return func

    if callable(name_or_func):
        return register(name_or_func, name_or_func.__name__)
    if name_or_func is not None:
        if not isinstance(name_or_func, str):
            raise TypeError("use @job or @job('name')")
        checked(name_or_func)
    return lambda func: register(func, name_or_func or func.__name__)


def _qualname(func: Callable) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)!s}"


def _ensure_builtins() -> None:
    """Register ``http`` and ``webhook`` (plain functions of :mod:`after.builtin_jobs`,
    which imports nothing of this module: no import circle)."""
    for name, func in builtin_jobs.JOBS.items():
        job(name)(func)


# --- the registry -------------------------------------------------------------------------


class _Loaded:
    """A jobs-folder module and the jobs it registered with ``@job``."""

    def __init__(self, module: types.ModuleType, registered: list[tuple[str, Callable]]):
        self.module = module
        self.registered = dict(registered)


class JobRegistry:
    """Resolve job names to functions for one jobs folder, and the installed jobs modules
    named with ``--jobs-module`` (``modules``). Safe to share between threads."""

    def __init__(self, folder: str | Path, modules: tuple[str, ...] | list[str] = ()):
        self.folder = Path(folder)
        self.modules = tuple(modules)
        jobmodules.check_names(self.modules)
        self._lock = threading.RLock()
        self._modules: dict[str, _Loaded] = {}
        self._scanned = False
        self._found: jobmodules.Found | None = None  # the jobs modules', once loaded

    def __repr__(self) -> str:
        extra = f", modules={self.modules!r}" if self.modules else ""
        return f"JobRegistry({str(self.folder)!r}{extra})"

    @property
    def spec(self) -> tuple[str, tuple[str, ...]]:
        """What :meth:`of` builds this registry again from (in an isolated run's child)."""
        return str(self.root), self.modules

    @classmethod
    def of(cls, spec: tuple[str, tuple[str, ...]] | str) -> JobRegistry:
        folder, modules = (spec, ()) if isinstance(spec, str) else spec
        return cls(folder, modules)

    @property
    def root(self) -> Path:
        """The jobs folder with symlinks resolved: every job file must be inside it."""
        return self.folder.resolve()

    def reload(self) -> None:
        """Forget loaded modules: the next resolve() reads the files again."""
        with self._lock:
            for stem in self._modules:
                sys.modules.pop(f"{MODULE_PREFIX}.{stem}", None)
            self._modules.clear()
            self._scanned = False
            if self._found is not None:
                jobmodules.forget(self.modules)
                self._found = None

    def resolve(self, name: Any) -> Callable:
        """The function for job ``name``, or JobError saying why there is none."""
        name = check_name(name)
        _ensure_builtins()
        with _registered_lock:
            func = _registered.get(name)
        if func is not None:
            return func
        with self._lock:
            path = self._path(name)
            if path is not None:
                loaded = self._load(name, path)
                func = loaded.registered.get(name)
                if func is None:
                    func = getattr(loaded.module, name, None)
                    if not callable(func) or isinstance(func, types.ModuleType):
                        func = None
                if func is not None:
                    return func
            func = self._scan_registered().get(name)
            if func is not None:
                return func
            if self.modules:
                found = self._load_modules()
                with _registered_lock:
                    func = _registered.get(name)
                if func is None and name in found.jobs:
                    func = found.jobs[name][0]
                if func is not None:
                    return func
        if path is None:
            where = (f", nor in the jobs modules {', '.join(self.modules)}" if self.modules
                     else "")
            if not self.folder.is_dir():
                raise JobError(f"job {name!r} is not a built-in job and the jobs folder "
                               f"{self.root} does not exist{where}")
            raise JobError(f"job {name!r} not found in jobs folder {self.root} "
                           f"(no {name}.py){where}")
        raise JobError(f"{self._display(name)} defines no function {name!r}")

    def list(self) -> list[JobInfo]:
        """Every job: registered ones and those of the jobs folder, sorted by name.

        Imports every module of the folder. A module that fails to import, or that a
        registered job shadows, is listed with ``error`` set.
        """
        _ensure_builtins()
        from_modules = self._load_modules().jobs if self.modules else {}
        with _registered_lock:
            registered = dict(_registered)
        infos = {name: _info(name, func, _source(func)) for name, func in registered.items()}
        extra: list[JobInfo] = []
        with self._lock:
            for stem in self._stems():
                display = self._display(stem)
                try:
                    path = self._path(stem)
                    loaded = self._load(stem, path) if path is not None else None
                except JobError as exc:
                    extra.append(JobInfo(stem, display, "", "", str(exc)))
                    continue
                if loaded is None:
                    continue
                own = getattr(loaded.module, stem, None)
                found = dict(loaded.registered)
                if stem not in found and callable(own) and not isinstance(own,
                                                                          types.ModuleType):
                    found[stem] = own
                for name, func in found.items():
                    info = _info(name, func, display)
                    if name in infos:
                        where = infos[name].source
                        shadow = "the built-in job" if where == BUILTIN else f"{where}:"
                        info = JobInfo(name, display, info.signature, info.doc,
                                       f"ignored: {shadow} {name!r} takes precedence")
                        extra.append(info)
                    else:
                        infos[name] = info
        for name, (func, source) in from_modules.items():
            info = _info(name, func, source)
            if name in infos:
                info = JobInfo(name, source, info.signature, info.doc,
                               f"ignored: {infos[name].source}: {name!r} takes precedence")
                extra.append(info)
            else:
                infos[name] = info
        return sorted([*infos.values(), *extra], key=lambda i: (i.name, i.error is not None))

    def check_call(self, name: Any, args: list | tuple = (), kwargs: dict | None = None) -> None:
        """JobError unless job ``name`` exists and its function can take ``args`` and
        ``kwargs`` after the task: what the worker would find out only at the run."""
        func = self.resolve(name)
        signature = _bound_signature(func)
        if signature is None:
            return  # some callables have none: the worker's call decides
        try:
            signature.bind(None, *args, **(kwargs or {}))  # None stands for the task
        except TypeError as exc:
            raise JobError(f"job {name!r} cannot take these arguments, {name}{signature}: "
                           f"{exc}") from None

    def notices(self) -> list[Notice]:
        """What to tell whoever runs these jobs: no jobs folder (only the built-in jobs
        and the jobs modules run), and each module that defines no job, or fails to import,
        with the reason. Imports every module, as :meth:`list` does."""
        found: list[Notice] = []
        if not self.folder.is_dir():
            found.append(Notice(str(self.folder), "no jobs folder here: only the built-in "
                                "jobs (" + ", ".join(sorted(builtin_jobs.JOBS)) + ")"
                                + (" and those of the jobs modules" if self.modules else "")
                                + " can run (set AFTER_JOBS, --jobs or 'jobs' in "
                                "config.json)"))
        with self._lock:
            for stem in self._stems():
                display = self._display(stem)
                try:
                    path = self._path(stem)
                    loaded = self._load(stem, path) if path is not None else None
                except JobError as exc:
                    found.append(Notice(display, str(exc).removeprefix(f"{display} ")))
                    continue
                if loaded is None or loaded.registered or stem.startswith("_"):
                    continue
                if not jobmodules.is_job_function(getattr(loaded.module, stem, None)):
                    found.append(Notice(display, jobmodules.no_job_reason(loaded.module,
                                                                          stem)))
        if self.modules:
            found.extend(self._load_modules().notices)
        return found

    # --- internals ---

    def _display(self, stem: str) -> str:
        return str(self.folder / f"{stem}.py")

    def _stems(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(
            p.stem for p in self.folder.glob("*.py")
            if JOB_NAME.fullmatch(p.stem) and not p.stem.startswith("__")
        )

    def _path(self, name: str) -> Path | None:
        """The real path of ``name``.py if it exists; JobError if it leaves the folder."""
        candidate = self.folder / f"{name}.py"
        if not candidate.is_file():
            return None
        real = candidate.resolve()
        if not real.is_relative_to(self.root):
            raise JobError(f"{self._display(name)} resolves outside the jobs folder "
                           f"{self.root}; refused")
        return real

    def _load(self, stem: str, path: Path) -> _Loaded:
        loaded = self._modules.get(stem)
        if loaded is not None:
            return loaded
        module_name = f"{MODULE_PREFIX}.{stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise JobError(f"{self._display(stem)} cannot be loaded")
        module = importlib.util.module_from_spec(spec)
        collected: list[tuple[str, Callable]] = []
        token = _collector.set(collected)
        sys.modules[module_name] = module  # dataclasses and pickle look modules up there
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            sys.modules.pop(module_name, None)
            detail = redact_text(f"{type(exc).__name__}: {exc}")
            raise JobError(f"{self._display(stem)} failed to import: {detail}") from exc
        finally:
            _collector.reset(token)
        loaded = self._modules[stem] = _Loaded(module, collected)
        return loaded

    def _load_modules(self) -> jobmodules.Found:
        """The jobs modules' jobs, imported once (until :meth:`reload`)."""
        with self._lock:
            if self._found is None:
                _ensure_builtins()

                def table() -> dict[str, Callable]:
                    with _registered_lock:
                        return dict(_registered)

                self._found = jobmodules.load(self.modules, table)
            return self._found

    def _scan_registered(self) -> dict[str, Callable]:
        """``@job`` registrations of every folder module, loading them all once."""
        if not self._scanned:
            for stem in self._stems():
                try:
                    path = self._path(stem)
                    if path is not None:
                        self._load(stem, path)
                except JobError:
                    continue  # reported when that job itself is resolved or listed
            self._scanned = True
        found: dict[str, Callable] = {}
        for loaded in self._modules.values():
            for name, func in loaded.registered.items():
                found.setdefault(name, func)
        return found


def _source(func: Callable) -> str:
    module = getattr(func, "__module__", "") or ""
    if module == "after.builtin_jobs":
        return BUILTIN
    return getattr(sys.modules.get(module), "__file__", None) or module or "?"


def _signature(name: str, func: Callable) -> str:
    try:
        return f"{name}{inspect.signature(func)}"
    except (TypeError, ValueError):
        return f"{name}(...)"


def _info(name: str, func: Callable, source: str) -> JobInfo:
    doc = (inspect.getdoc(func) or "").strip().splitlines()
    return JobInfo(name, source, _signature(name, func), doc[0] if doc else "")


# --- calling a job ------------------------------------------------------------------------


def _copy(value: Any) -> Any:
    """A deep copy of a JSON document (dicts, lists and scalars; anything else through
    :func:`copy.deepcopy`): several times faster than deepcopy alone on task documents."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return copy.deepcopy(value)


def _readonly(value: Any) -> Any:
    return types.MappingProxyType(value) if isinstance(value, dict) else value


class TaskContext:
    """What a job receives as ``task``: a read-only view of the task being run.

    ``doc`` is a deep copy of the task document behind a read-only mapping: the job can
    read anything, and nothing it does reaches the worker's copy. ``occurrence`` is the
    occurrence id (:func:`after.rules.occurrence.key`): the same for every attempt, retry and
    re-run of this occurrence, another for every other one; an idempotency key (the ``http``
    job sends it as ``Idempotency-Key``). ``canceled`` is a :class:`threading.Event`, set
    when a ``cancel`` is written while the run goes: a long job checks it (or waits on it)
    and returns early; the run is then recorded ``canceled``.
    """

    __slots__ = ("id", "worker", "date", "job", "arguments", "attempt", "doc", "occurrence",
                 "_canceled")

    id: str | None
    worker: str | None
    date: datetime
    job: str | None
    arguments: Any
    attempt: int
    doc: Mapping[str, Any]
    occurrence: str | None
    _made = threading.Lock()  # (a context made ahead has no event until it is asked for)

    def __init__(self, doc: dict, date: datetime, attempt: int, occurrence: str | None = None):
        doc = _copy(dict(doc))
        spec = doc.get("job") if isinstance(doc.get("job"), dict) else {}
        values = {
            "id": doc.get("_id"),
            "worker": doc.get("worker"),
            "date": date,
            "job": spec.get("name"),
            "arguments": _readonly(_copy(spec.get("arguments"))),
            "attempt": int(attempt),
            "doc": types.MappingProxyType(doc),
            "occurrence": occurrence,
            "_canceled": None,
        }
        for key, value in values.items():
            object.__setattr__(self, key, value)

    @property
    def canceled(self) -> threading.Event:
        """Set when the task is canceled while its run goes. Made when first asked for (by
        the worker when the run begins): a burst's contexts, made seconds ahead of their
        instant, are thousands, and an event is 1.2 kB."""
        if self._canceled is None:
            with TaskContext._made:
                if self._canceled is None:
                    object.__setattr__(self, "_canceled", threading.Event())
        return self._canceled

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"TaskContext is read-only (cannot set {key!r})")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"TaskContext is read-only (cannot delete {key!r})")

    def __repr__(self) -> str:
        return (f"TaskContext(id={self.id!r}, job={self.job!r}, date={self.date.isoformat()}, "
                f"attempt={self.attempt})")


#: Jobs whose result is an HTTP response: the run record keeps it whole, the task a summary.
HTTP_JOBS = ("http", "webhook")


@dataclass(frozen=True)
class Reply:
    """How a call of a job ended, ready to record: JSON-safe, bounded, redacted (a child
    process sends it back to its job thread as is)."""

    ok: bool
    result: Any = None  # what the job returned, as to_result keeps it
    error: str | None = None  # one line: "ExceptionType: message"
    trace: str | None = None
    response: dict | None = None  # the HTTP response of an http or webhook job


def call(func: Callable | Exception, task: Any, arguments: Any) -> Reply:
    """Run ``func`` for ``task`` (see :func:`run_job`); ``func`` may be the JobError that
    resolving the job raised. Whatever the job raises ends in the Reply."""
    try:
        if isinstance(func, Exception):
            raise func
        value = run_job(func, task, arguments)
        response = None
        if getattr(task, "job", None) in HTTP_JOBS and isinstance(value, dict) \
                and "status" in value:
            response = redact(value)
            value = {k: value.get(k) for k in ("status", "duration_ms", "url")}
        return Reply(True, result=redact(to_result(value)), response=response)
    except BaseException as exc:  # a job may raise anything; the worker carries on
        response = getattr(exc, "response", None)
        return Reply(False, error=redact_text(f"{type(exc).__name__}: {exc}"),
                     trace=redact_text(traceback.format_exc(limit=20)),
                     response=redact(response) if isinstance(response, dict) else None)


def run_job(func: Callable, task: Any, arguments: Any) -> Any:
    """Call ``func`` for ``task`` and return what it returns.

    ``arguments``: a list (or tuple) is passed as positional arguments after ``task``, a
    dict as keyword arguments, None as nothing. The binding is checked first, so a
    TypeError raised inside the job is never mistaken for a bad task. ``async def`` jobs
    run to completion in this thread with ``asyncio.run``.
    """
    name = getattr(task, "job", None) or getattr(func, "__name__", "job")
    if arguments is None:
        args, kwargs = [], {}
    elif isinstance(arguments, (list, tuple)):
        args, kwargs = list(arguments), {}
    elif isinstance(arguments, Mapping):
        args, kwargs = [], dict(arguments)
        bad = [key for key in kwargs if not isinstance(key, str)]
        if bad:
            raise JobError(f"job {name!r} arguments: keyword names must be strings, "
                           f"got {bad[0]!r}")
    else:
        raise JobError(f"job.arguments: expected a list, an object or nothing, got "
                       f"{type(arguments).__name__}")
    signature = _bound_signature(func)
    shape = (func, len(args), tuple(sorted(kwargs)))
    if signature is not None and shape not in _BOUND:
        try:
            signature.bind(task, *args, **kwargs)
        except TypeError as exc:
            raise JobError(f"job {name!r} arguments do not match {name}{signature}: "
                           f"{exc}") from None
        try:
            _BOUND.add(shape)  # (binds by count and names: the same shape binds again)
        except TypeError:
            pass
    result = func(task, *args, **kwargs)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    return result


_SIGNATURES: dict = {}  # job function -> its signature (read once: a run is on the clock)
_BOUND: set = set()  # (job function, positional count, keyword names) known to bind


def _bound_signature(func: Callable) -> inspect.Signature | None:
    try:
        return _SIGNATURES[func]
    except (KeyError, TypeError):
        pass
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        signature = None  # some C callables have none: let the call itself decide
    try:
        _SIGNATURES[func] = signature
    except TypeError:  # an unhashable callable: read each time
        pass
    return signature


def to_result(value: Any, limit: int = 10_000) -> Any:
    """``value`` as it may be stored in a run record: JSON-able, redacted, bounded.

    A JSON-serialisable value whose JSON takes at most ``limit`` characters comes back as
    its JSON round trip (tuples become lists). Anything else becomes
    ``{"truncated": bool, "repr": str}``: the JSON text (or, for non-JSON values, the
    ``repr``) cut to ``limit`` characters, with ``"length"`` the full length.
    Secrets are masked first (see ``after.rules.redact``).
    """
    if value is None or isinstance(value, (bool, int)) and abs(value) < 2 ** 53:
        return value  # as its JSON round trip would give it, without the round trip
    try:
        value = redact(value)
        if problem(value, max_depth=RESULT_DEPTH, max_string=limit) is not None:
            raise ValueError("too deep, too long or not finite for a task document")
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        try:
            text = redact_text(repr(value))
        except Exception as exc:  # a broken __repr__ must not lose the run record
            text = f"<{type(value).__name__} object, repr failed: {type(exc).__name__}>"
    else:
        if len(text) <= limit:
            return json.loads(text)
    return {"truncated": len(text) > limit, "repr": text[:limit], "length": len(text)}
