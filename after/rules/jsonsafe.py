"""JSON that cannot take the worker down: bounded decoding and an iterative shape check.

Anyone can PUT a task document, so a document may hold what Python's ``json`` refuses or
chokes on: nesting deeper than the interpreter's recursion limit (``RecursionError``), an
integer of more than 4,300 digits (``ValueError``), or ``1e400`` (read as ``inf``, which
cannot be written back as JSON). :func:`loads` reads any such document all the same:
what cannot be represented safely becomes an :class:`Unreadable` string saying what it was,
so the worker can parse the task, refuse it with a clear message and move on.

:func:`problem` walks a value with an explicit stack (never recursion) and names the first
thing a task document must not hold. The same limits are enforced by the database's
``validate_doc_update`` (see :mod:`after.couch.schema`).
"""

from __future__ import annotations

import json
import math
import re
import sys
from json.decoder import scanstring
from typing import Any

#: Deepest nesting a task document may have (the document itself is level 1).
MAX_DEPTH = 64
#: Longest string (in characters) anywhere in a task document.
MAX_STRING = 1_000_000
#: Most digits of an integer (Python's own limit on converting text to int is 4,300).
MAX_DIGITS = 4_000


class Unreadable(str):
    """A value of a document that could not be read safely; the text says what it was."""


def _int(text: str) -> int | Unreadable:
    if len(text.lstrip("-")) > MAX_DIGITS:
        return Unreadable(f"<unreadable: an integer of {len(text)} digits>")
    return int(text)


def _float(text: str) -> float | Unreadable:
    value = float(text)
    if math.isinf(value):
        return Unreadable(f"<unreadable: the number {text[:40]} is out of range>")
    return value


def _constant(text: str) -> Unreadable:
    return Unreadable(f"<unreadable: {text} is not JSON>")


def loads(text: str | bytes) -> Any:
    """``json.loads`` that never raises RecursionError nor refuses a long integer."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        return _bounded(text)


_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_LITERALS = {"true": True, "false": False, "null": None}


def _skip(text: str, i: int) -> int:
    """The index just past the array or object that starts at ``text[i]``."""
    depth = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            _, i = scanstring(text, i + 1)
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("unterminated array or object")


# Just over 60 lines: one hand-written scanner loop, clearer whole than split.
def _bounded(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """An iterative JSON parser: containers nested deeper than ``max_depth`` become an
    :class:`Unreadable` string. Linear in the text; used only when ``json`` gives up."""
    stack: list[tuple[Any, str | None]] = []  # (container, pending key of an object)
    i = _WS.match(text, 0).end()
    root: Any = None
    done = False

    def attach(value: Any) -> None:
        nonlocal root, done
        if not stack:
            root, done = value, True
            return
        container, key = stack[-1]
        if isinstance(container, list):
            container.append(value)
        else:
            container[key] = value
            stack[-1] = (container, None)

    while not done:
        c = text[i] if i < len(text) else ""
        if stack and c in ",:":
            i = _WS.match(text, i + 1).end()
            continue
        if c in "]}":
            container, _ = stack.pop()
            i = _WS.match(text, i + 1).end()
            attach(container)
            continue
        if stack and isinstance(stack[-1][0], dict) and stack[-1][1] is None:
            if c != '"':
                raise ValueError(f"expected a key at {i}")
            key, i = scanstring(text, i + 1)
            stack[-1] = (stack[-1][0], key)
            i = _WS.match(text, i).end()
            continue
        if c in "[{":
            if len(stack) + 1 > max_depth:
                end = _skip(text, i)
                attach(Unreadable(f"<unreadable: nested deeper than {max_depth} levels>"))
                i = _WS.match(text, end).end()
                continue
            stack.append(([] if c == "[" else {}, None))
            i = _WS.match(text, i + 1).end()
            continue
        if c == '"':
            value, i = scanstring(text, i + 1)
        else:
            literal = next((w for w in _LITERALS if text.startswith(w, i)), None)
            if literal is not None:
                value, i = _LITERALS[literal], i + len(literal)
            else:
                match = _NUMBER.match(text, i)
                if not match:
                    raise ValueError(f"unexpected {c!r} at {i}")
                number = match.group(0)
                i = match.end()
                value = _float(number) if any(ch in number for ch in ".eE") else _int(number)
        i = _WS.match(text, i).end()
        attach(value)
    return root


def problem(value: Any, *, max_depth: int = MAX_DEPTH, max_string: int = MAX_STRING,
            where: str = "") -> str | None:
    """The first thing wrong with ``value`` as (part of) a task document, or None.

    Checked without recursion: nesting deeper than ``max_depth``, strings longer than
    ``max_string``, numbers that are not finite, integers too long to read, and
    :class:`Unreadable` values left by :func:`loads`."""
    stack: list[tuple[Any, str, int]] = [(value, where, 1)]
    while stack:
        item, path, depth = stack.pop()
        name = path or "the document"
        if len(name) > 60:
            name = name[:57] + "..."
        if isinstance(item, Unreadable):
            return f"{name}: {item}"
        if isinstance(item, dict | list):
            if depth > max_depth:
                return f"{name}: nested deeper than {max_depth} levels"
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and len(key) > max_string:
                        return f"{name}: a key of {len(key)} characters (at most {max_string})"
                    stack.append((child, f"{path}.{key}" if path else str(key), depth + 1))
            else:
                for index, child in enumerate(item):
                    stack.append((child, f"{path}[{index}]", depth + 1))
        elif isinstance(item, str):
            if len(item) > max_string:
                return f"{name}: a string of {len(item)} characters (at most {max_string})"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{name}: {item} is not a finite number"
        elif isinstance(item, int) and not isinstance(item, bool):
            if item.bit_length() > MAX_DIGITS * 3.33:
                return f"{name}: an integer too long to read"
    return None


def show(value: Any) -> str:
    """``repr`` of a user's value, cut short: a message stays one short line."""
    if isinstance(value, dict | list) and len(value) > 10:
        return f"a {type(value).__name__} of {len(value)} items"
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # deeply nested, or an integer too long to print
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


#: Fields whose values repeat from one task to the next (the worker's name, the status, a
#: burst's date, a job's name): held once for all the tasks that share them.
SHARED_VALUES = frozenset({"worker", "status", "type", "date", "name"})


def _share(key: str, value: Any) -> Any:
    if type(value) is str and key in SHARED_VALUES and len(value) <= 64:
        return sys.intern(value)
    return value


def shared(doc: dict) -> dict:
    """``doc`` with its keys, those of the objects in it, and the values of
    :data:`SHARED_VALUES` held once for every document (``sys.intern``): each line of a
    continuous feed is decoded alone, with keys of its own, and a worker holds thousands of
    such documents ahead of a burst (about 500 bytes of each, measured). Two levels only;
    deeper objects are kept as they are."""
    out = {}
    for key, value in doc.items():
        if type(value) is dict:
            value = {sys.intern(k): _share(k, v) for k, v in value.items()}
        out[sys.intern(key)] = _share(key, value)
    return out
