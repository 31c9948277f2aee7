"""A failure of the worker's own code while it handles one task is that task's fault alone.

An exception while parsing, deciding, writing, launching or recording one task (a document
no rule foresaw, a job module that cannot be loaded...) must not stop the other tasks of the
same turn, nor repeat in a loop: the worker forgets the task, logs why once, and ends it
``error`` with a one-line reason (:func:`error_write`), unless it is finished already or not
this worker's. Pure, except for the log line.
"""

from __future__ import annotations

import logging
from datetime import datetime

from . import task as rules
from .decide import Kind, Write
from .redact import redact_text

log = logging.getLogger("after.worker")


def event_task(kind: str, value) -> tuple[str | None, dict | None]:
    """The id (and document, when the event carries one) of the task an inbox event is
    about; (None, None) when it is about no task."""
    if kind in ("change", "recheck") and isinstance(value, dict):
        docid = value.get("_id")
        return (docid if isinstance(docid, str) else None), value
    if kind == "fire":
        return value[1], None
    if kind in ("finished", "unbegun"):
        return value[0], None
    return None, None


def reason(exc: BaseException, stage: str) -> str:
    """One line, at most about 350 characters, with no secret in it."""
    detail = (str(exc).strip().splitlines() or [""])[0][:300]
    return redact_text(f"the worker could not {stage} this task: "
                       f"{type(exc).__name__}: {detail}".rstrip(": "))


def error_write(docid: str, exc: BaseException, stage: str, doc: dict | None, worker: str,
                now: datetime) -> list[Write]:
    message = reason(exc, stage)
    log.error("task %s: %s", docid, message, exc_info=exc)
    if doc is None or doc.get("worker") != worker or doc.get("status") in rules.FINISHED:
        return []
    return [Write(Kind.ERROR, rules.mark_error(doc, message, now))]
