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
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: name -> the module that defines it
_PUBLIC = {
    "Client": "after.client",
    "AsyncClient": "after.aio",
    "TaskError": "after.task",
    "StateError": "after.task",
    "TaskNotFound": "after.client",
    "UnservedWorker": "after.client",
    "Unavailable": "after.store",
    "job": "after.jobs",
    "JobRegistry": "after.jobs",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):  # `from after import Client` without importing httpx for every use
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'after' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
