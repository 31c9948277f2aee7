"""Job names: the grammar a task's ``job.name`` must follow, and the error for a job that
cannot be used. Pure and small, so that what checks names (the Client, the design document's
validation, the built-in jobs) needs none of the loading machinery of :mod:`after.jobs`."""

from __future__ import annotations

import re
from typing import Any

#: A job name: a Python identifier in ASCII. Names starting with ``__`` are refused too.
JOB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME_LENGTH = 100


class JobError(Exception):
    """A job cannot be found, loaded or called as the task asks. The message is meant for
    the task's error field and says exactly what is wrong."""


def check_name(name: Any) -> str:
    """``name`` if it is a valid job name, else raise JobError. Touches nothing."""
    if not isinstance(name, str):
        raise JobError(f"job.name: expected a string, got {type(name).__name__}")
    shown = repr(name) if len(name) <= 60 else repr(name[:60]) + "..."
    if not JOB_NAME.fullmatch(name):
        raise JobError(f"job.name: {shown} is not a job name (letters, digits and _ only)")
    if name.startswith("__"):
        raise JobError(f"job.name: {shown} is not a job name (names starting with __ are "
                       "reserved)")
    if len(name) > MAX_NAME_LENGTH:
        raise JobError(f"job.name: {shown} is not a job name (longer than "
                       f"{MAX_NAME_LENGTH} characters)")
    return name
