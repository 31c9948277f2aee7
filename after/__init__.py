"""after: schedule work for later, with CouchDB as the only server.

The public names, imported when first used (the command line needs none of them)::

    from after import Client, job

- :class:`Client` (:mod:`after.client`): schedule, inspect, wait for and change tasks;
  :class:`AsyncClient` (:mod:`after.aio`) for an event loop;
- :func:`job` (:mod:`after.jobs`): register a function as a job; :class:`JobRegistry`,
  the jobs of a folder and of jobs modules;
- the errors: :class:`TaskError` (a task that could not run), :class:`StateError` (an
  operation its status does not allow), :class:`TaskNotFound`, :class:`Unavailable` (the
  database cannot be reached); and :class:`UnservedWorker`, the warning for a task written
  for a worker name no live process serves.

The package in layers, each importing only those below it (tests/unit/test_layout.py):
``after.rules`` (what a task document means: pure), ``after.couch`` (the server and what the
scheduler keeps in it), ``after.worker`` (the process that runs tasks), and the interfaces on
top: the Client (``after.client``, ``after.aio``), ``after.dashboard`` and ``after.cli``.
``from after import task`` (or ``dates``, ``repeat``, ``store``), where earlier versions kept
them, still gives the module.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: name -> the module that defines it
_PUBLIC = {
    "Client": "after.client",
    "AsyncClient": "after.aio",
    "TaskError": "after.rules.task",
    "StateError": "after.rules.task",
    "TaskNotFound": "after.client",
    "UnservedWorker": "after.client",
    "Unavailable": "after.couch.store",
    "job": "after.jobs",
    "JobRegistry": "after.jobs",
}

#: modules of earlier versions' flat package, where they live now
_MOVED = {"task": "after.rules.task", "dates": "after.rules.dates",
          "repeat": "after.rules.repeat", "store": "after.couch.store"}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):  # `from after import Client` without importing httpx for every use
    if name in _MOVED:
        return importlib.import_module(_MOVED[name])
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'after' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
