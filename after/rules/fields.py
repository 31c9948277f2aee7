"""The error of a value a task cannot use: what is wrong, and which field it is about."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from after.rules.jsonsafe import show

#: a field as messages name it: ``retry.limit``, ``job.arguments[0]``, ``repeat.exclude[2]``,
#: a key of the arguments (``job.arguments.to``), a deep path cut short
#: (``job.arguments[0][0][0]...``): a name, then anything but spaces
FIELD_PATH = re.compile(r"[A-Za-z_][^\s]*")


class FieldError(ValueError):
    """A value a task cannot use. The message says exactly what is wrong and begins with the
    field it is about (``retry.limit: must be 0 or more attempts``): the database's
    validation gives the same text, and the command line and the Client show it as is.

    ``field`` names that field on its own, for a caller that names it its own way (the
    command line names the option that set it). A rule that knows the field more precisely
    than its message's prefix says it (``repeat: tz must be ...`` is about ``repeat.tz``);
    else it is the prefix, or "" for a message about no one field. ``problem`` is the message
    without that prefix."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        head, sep, rest = message.partition(": ")
        prefixed = bool(sep) and FIELD_PATH.fullmatch(head) is not None
        self.field = (head if prefixed else "") if field is None else field
        self.problem = rest if prefixed else message


def not_an_object(name: str, shape: str, value: Any) -> str:
    """The message of a field ``name`` whose value must be an object (``shape`` shows which)
    and is not: ``rate: must be {"key": NAME, ...}, not 5``."""
    return f"{name}: must be {shape}, not {show(value)}"


def unknown_field(name: str, value: dict, use: Iterable[str],
                  also: Iterable[str] = ()) -> str | None:
    """The message of an object field ``name`` with a key it does not take (the first in
    sorted order), or None: ``retry: unknown field 'x' (use limit, delay, backoff)``. ``use``:
    the keys it takes, as the message names them; ``also``: keys it takes unnamed."""
    use = tuple(use)
    unknown = sorted(set(value) - set(use) - set(also))
    if not unknown:
        return None
    return f"{name}: unknown field {unknown[0]!r} (use {', '.join(use)})"
