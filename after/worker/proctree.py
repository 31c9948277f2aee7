"""The processes an isolated run started: kept in its tree, and killed with it (Linux).

A job in a child process of its own (:mod:`after.worker.isolation`) may start processes, and they
may leave its process group and session (``start_new_session=True``, a daemon's double
fork) and ignore SIGTERM: a ``killpg`` of the run's group misses them, and they outlived a
timeout and a ``kill -9`` of the worker (issue 24). So:

- The run's process makes itself a **child subreaper** (:func:`adopt_orphans`,
  ``prctl(PR_SET_CHILD_SUBREAPER)``, Linux 3.4+): a process under it whose parent exits is
  re-parented to it rather than to init, so every process the job started, however deep,
  and whatever its session, stays a descendant of the run's process while that one lives.
- Killing a run (:func:`kill_tree`) first stops the run's process (SIGSTOP: it starts no
  more), then SIGKILLs every descendant it finds in ``/proc`` (by parent pid), round after
  round until a round finds none: a process that forked between the reading and the kill
  leaves its child to the run's process, and the next round finds it. Then the run's
  process itself. The run's own process does the same for itself when its worker dies
  (:func:`kill_descendants`), before it kills its group.

What is not covered: a run's process killed from outside with SIGKILL (the OOM killer,
say) cannot kill anything first; its processes go to init as any orphan does. A zombie (a
process that ended, not yet reaped) is dead and left alone. Pids are read then signalled:
a pid freed and reused in between would be hit, the same window as any ``kill`` of a pid.

Elsewhere (no ``prctl``, no ``/proc``) :func:`adopt_orphans` returns False and the kills
find no descendants: only the run's process and its group are killed, as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("after.worker")

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
PROC = Path("/proc")
#: Most rounds of kills: each round kills a whole generation, so only a job that forks as
#: fast as it is killed needs more than two or three.
ROUNDS = 100


def adopt_orphans() -> bool:
    """Make this process a child subreaper; False where that cannot be done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def parse_stat(text: str) -> tuple[int, str]:
    """(parent pid, state letter) of a ``/proc/PID/stat`` line; its command may hold spaces
    and parentheses, so the fields are read after its last ``)``."""
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields[0]


def processes(proc: Path = PROC) -> dict[int, int]:
    """Every live process of the machine (not the zombies): pid -> parent pid."""
    found = {}
    try:
        entries = os.listdir(proc)
    except OSError:
        return found
    for name in entries:
        if not name.isdigit():
            continue
        try:
            parent, state = parse_stat((proc / name / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not a process
        if state not in ("Z", "X"):
            found[int(name)] = parent
    return found


def descendants(root: int, parents: dict[int, int]) -> list[int]:
    """The pids under ``root`` in ``parents`` (pid -> parent pid), nearest first."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, seen, frontier = [], {root}, [root]
    while frontier:
        below = [pid for parent in frontier for pid in children.get(parent, ())
                 if pid not in seen]
        seen.update(below)
        found.extend(below)
        frontier = below
    return found


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_descendants(root: int, proc: Path = PROC, rounds: int = ROUNDS) -> int:
    """SIGKILL every process under ``root`` until none is left (``rounds`` at most); how
    many were killed."""
    killed: set[int] = set()
    for _ in range(rounds):
        found = descendants(root, processes(proc))
        if not found:
            return len(killed)
        if killed.issuperset(found):
            time.sleep(0.005)  # killed, not yet dead (a zombie): a moment
        _signal(found, signal.SIGKILL)
        killed.update(found)
    log.warning("processes under %d still starting others after %d rounds of kills", root,
                rounds)
    return len(killed)


def kill_tree(root: int, proc: Path = PROC) -> int:
    """Stop ``root``, kill every process under it, then ``root`` and its process group;
    how many were killed under it."""
    _signal([root], signal.SIGSTOP)
    killed = kill_descendants(root, proc)
    try:
        os.killpg(root, signal.SIGKILL)  # its group, when it leads one
    except (ProcessLookupError, PermissionError):
        pass
    _signal([root], signal.SIGKILL)
    return killed
