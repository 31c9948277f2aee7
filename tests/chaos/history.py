"""A chaos run's history, read back: the runs the ``history`` job recorded, and what the
nemesis did to the worker processes. Pure: lines in, data out.

The history is one append-only file of JSON lines, each written by a single ``write()`` on
an ``O_APPEND`` descriptor (so lines from concurrent processes never interleave):

- ``{"ev": "start", "run", "task", "occurrence", "process", "pid", "child", "start", ...}``
  and ``{"ev": "end", ..., "end"}``: a run of the ``history`` job (``jobs/history.py``)
  begins and ends; both carry the run's own id. A run whose process died has no end;
- ``{"ev": "fault", "fault": KIND, "pid", "at", ...}``: what the driver did to a worker
  process (``kill``, ``freeze``, ``thaw``, ``term``, ``exit``, ``start``) or to a CouchDB
  node (``node-kill``, ``node-freeze``, ``node-start``, with ``node`` instead of ``pid``);
- ``{"ev": "op", "op": "cancel" | "reschedule", "task", "node", "at", "ok", ...}``: what a
  user asked, through one node, and whether that node said it was written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

__all__ = ["Cut", "History", "HistoryError", "Run", "parse", "read"]

#: Faults after which a worker process no longer runs anything (a freeze: until its thaw).
CUTS = ("kill", "freeze", "term")


class HistoryError(ValueError):
    """A history line that cannot be read; the message names the line."""


@dataclass(frozen=True)
class Run:
    """One run of the history job: its start, and its end when it went to its end."""

    run: str
    task: str
    occurrence: str
    process: str | None
    pid: int
    start: datetime
    end: datetime | None = None
    child: int | None = None
    number: int | None = None
    attempt: int | None = None

    def show(self) -> str:
        end = self.end.isoformat(timespec="milliseconds") if self.end else "no end"
        where = f"pid {self.pid}" + (f" (child {self.child})" if self.child else "")
        return (f"run {self.run[:8]} #{self.number} by {self.process} ({where}) "
                f"{self.start.isoformat(timespec='milliseconds')} -> {end}")


@dataclass(frozen=True)
class Cut:
    """A fault that stopped a worker process: a kill, a freeze (``until`` its thaw, None
    when never thawed) or a SIGTERM (``until`` the process exited)."""

    kind: str
    pid: int
    at: datetime
    until: datetime | None = None

    def show(self) -> str:
        until = f" until {self.until.isoformat(timespec='milliseconds')}" if self.until else ""
        return f"{self.kind} of pid {self.pid} at {self.at.isoformat(timespec='milliseconds')}" \
               f"{until}"


@dataclass
class History:
    runs: list[Run] = field(default_factory=list)
    cuts: list[Cut] = field(default_factory=list)
    faults: list[dict] = field(default_factory=list)  # every fault line, in order
    ops: list[dict] = field(default_factory=list)  # every op line, in order

    def cuts_of(self, pid: int) -> list[Cut]:
        return [cut for cut in self.cuts if cut.pid == pid]


def _when(line: dict, key: str, n: int) -> datetime:
    try:
        value = datetime.fromisoformat(line[key])
    except (KeyError, TypeError, ValueError):
        raise HistoryError(f"history line {n}: no date-time in {key!r}: {line}") from None
    if value.tzinfo is None:
        raise HistoryError(f"history line {n}: {key!r} has no offset: {line}")
    return value


def parse(lines: Iterable[str | dict]) -> History:
    """Read history lines (text or already decoded), in the order they were written."""
    history = History()
    starts: dict[str, Run] = {}
    ends: dict[str, datetime] = {}
    frozen: dict[int, Cut] = {}
    termed: dict[int, Cut] = {}
    for n, raw in enumerate(lines, 1):
        if isinstance(raw, str):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise HistoryError(f"history line {n} is not JSON ({exc}): {raw[:200]!r}") \
                    from None
        else:
            line = raw
        if not isinstance(line, dict):
            raise HistoryError(f"history line {n} is not an object: {line!r}")
        ev = line.get("ev")
        if ev == "start":
            try:
                starts[line["run"]] = Run(
                    line["run"], line["task"], line["occurrence"], line.get("process"),
                    int(line["pid"]), _when(line, "start", n), None, line.get("child"),
                    line.get("number"), line.get("attempt"))
            except (KeyError, TypeError, ValueError) as exc:
                raise HistoryError(f"history line {n}: a start without {exc}: {line}") from None
        elif ev == "end":
            if line.get("run") not in starts:
                raise HistoryError(f"history line {n}: an end with no start before it: {line}")
            ends[line["run"]] = _when(line, "end", n)
        elif ev == "fault":
            history.faults.append(line)
            kind, pid = line.get("fault"), line.get("pid")
            if kind in ("kill", "freeze", "term", "thaw", "exit") and not isinstance(pid, int):
                raise HistoryError(f"history line {n}: a {kind} without a pid: {line}")
            at = _when(line, "at", n)
            if kind == "kill":
                history.cuts.append(Cut("kill", pid, at))
            elif kind == "freeze":
                frozen[pid] = Cut("freeze", pid, at)
            elif kind == "thaw" and pid in frozen:
                cut = frozen.pop(pid)
                history.cuts.append(Cut(cut.kind, pid, cut.at, at))
            elif kind == "term":
                termed[pid] = Cut("term", pid, at)
            elif kind == "exit" and pid in termed:
                cut = termed.pop(pid)
                history.cuts.append(Cut(cut.kind, pid, cut.at, at))
        elif ev == "op":
            history.ops.append(line)
        else:
            raise HistoryError(f"history line {n}: unknown ev {ev!r}: {line}")
    history.cuts.extend([*frozen.values(), *termed.values()])  # never thawed, never exited
    history.cuts.sort(key=lambda cut: cut.at)
    history.runs = sorted((replace(run, end=ends.get(run.run)) for run in starts.values()),
                          key=lambda run: run.start)
    return history


def read(path) -> History:
    with open(path, encoding="utf-8") as f:
        return parse(f)
