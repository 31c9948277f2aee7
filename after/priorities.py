"""``priority``: when more tasks are due than a worker process can start, higher first.

Two places order by it, both pure (``priority``, then the date: earlier first):

- :func:`event_order`, the order in which one turn of the worker's loop decides the tasks
  that changed or were polled: the first decided are the first claimed, and take the job
  threads free this turn (a task already due is claimed and started in one write);
- :func:`rank`, which task waiting for a free job thread starts next (the line is a heap
  in :class:`after.slots.Slots`).
"""

from __future__ import annotations

from collections.abc import Mapping

from . import task as rules
from .dates import DateError, parse_date, to_ms

NEVER = 2 ** 63  # a date that cannot be read sorts last (the worker marks it error)


def date_ms(doc: dict) -> int:
    try:
        return to_ms(parse_date(doc.get("date"), "date"))
    except DateError:
        return NEVER


def event_order(event: tuple, held: Mapping | None = None) -> tuple:
    """Sort key of the loop's events: timers first (a fenced run starts as its timer
    fires), those of ``held`` tasks by priority then due instant; then the other events as
    they came; then the task documents to decide, higher ``priority`` first, then earlier
    ``date``."""
    kind, value = event
    if kind == "fire":
        entry = (held or {}).get(value[1]) if isinstance(value, tuple) else None
        if entry is None:
            return (0, 0, 0)
        return (0, *rank(entry.doc, entry.due_ms))
    if kind in ("change", "recheck") and isinstance(value, dict):
        return (2, *rank(value, date_ms(value)))
    return (1, 0, 0)


def rank(doc: dict, due_ms: int) -> tuple[int, int]:
    """Where a task waiting for a job thread stands in line: the highest ``priority``
    first, then the earliest due."""
    return (-rules.priority_of(doc), due_ms)
