"""``"overlap": "allow"``: runs of one repeating task going at the same time, each occurrence
still once. Pure: ``now`` is passed in.

A task has one status, which cannot describe two runs. So the run of an ``allow`` task is
detached from the document as it starts: the start's write (:func:`detach`) schedules the
next occurrence at once (``waiting`` at its date, the series' counters advanced, no owner:
any process of the name claims it as usual, through ``_rev``) and lists the run under
``after.going``, by run token: its process, start, occurrence and number. The process runs
the job and, when it ends, writes its outcome into whatever the document has become
(:func:`end`: counters, ``last_run``, the run out of ``after.going``), and its run record.

Runs are numbered as they start (``after.runs`` counts them then), so runs going side by side
have their own numbers. The series' last occurrence (no next one: ``limit``, ``until``) runs
in place, as any run. No ``retry`` (refused by :func:`after.rules.task.parse`): an occurrence runs
once. A run cut short is not run again (the next occurrences are under way): by a graceful
stop past its grace period, it is recorded ``interrupted`` as the process exits; by the death
of its process, it stays listed until a run of the task ends in another process, which records
it ``interrupted`` (:func:`orphans`).
"""

from __future__ import annotations

from datetime import datetime

from after.rules import task as rules
from after.rules.dates import format_date

GOING = "going"


def detaches(spec: rules.Spec | None) -> bool:
    return spec is not None and spec.overlap == rules.ALLOW and spec.repeat is not None


def going(doc: dict) -> dict:
    value = rules.info(doc).get(GOING)
    return value if isinstance(value, dict) else {}


def detach(started: dict, spec: rules.Spec, token: str, due: datetime,
           now: datetime) -> dict | None:
    """The start ``started`` (:func:`after.rules.task.start`'s document) of an ``allow`` task,
    detached: ``waiting`` at the next occurrence, the run under ``after.going[token]``. None
    when there is no next occurrence (the run stays in place)."""
    new = dict(started)
    ns = new[rules.NS] = dict(rules.info(started))
    anchor = rules.instant(ns.get("anchor")) or spec.date
    occurrences = rules.counter(ns, "occurrences") + 1
    try:
        following = spec.repeat.next_date(anchor, spec.date, now, occurrences)
    except OverflowError:
        following = None
    if following is None:
        return None
    runs = dict(going(started))
    runs[token] = {"owner": ns.get("owner"), "started": ns.get("started"),
                   "due": format_date(due), "number": rules.counter(ns, "run")}
    ns[GOING] = runs
    ns["runs"] = rules.counter(ns, "runs") + 1
    ns.update(anchor=format_date(anchor), occurrences=occurrences, attempt=0,
              next_run=format_date(following))
    for key in rules.RESET + ("started", "run", "token"):
        ns.pop(key, None)
    new["status"] = rules.WAITING
    new["date"] = format_date(following)
    return new


def as_run(doc: dict, token: str) -> dict:
    """``doc`` as its detached run ``token`` sees it (the job's ``task``): running, at its
    occurrence's date, its number and attempt."""
    entry = going(doc).get(token) or {}
    new = dict(doc)
    ns = new[rules.NS] = dict(rules.info(doc))
    new["status"] = rules.RUNNING
    if entry.get("due"):
        new["date"] = entry["due"]
    ns.update(owner=entry.get("owner"), started=entry.get("started"), attempt=1,
              run=entry.get("number"), due=entry.get("due"))
    return new


def end(current: dict, token: str, outcome: rules.Outcome) -> dict | None:
    """``current`` (the task as it is now) with its detached run ``token`` ended: counted,
    ``last_run``, out of ``after.going``. None when the run is not listed any more (another
    process recorded it interrupted)."""
    runs = dict(going(current))
    entry = runs.pop(token, None)
    if entry is None:
        return None
    new = dict(current)
    ns = new[rules.NS] = dict(rules.info(current))
    kind = {rules.OK: "successes"}.get(outcome.outcome, "failures")
    ns[kind] = rules.counter(ns, kind) + 1
    ns["last_run"] = rules.last_run(outcome, entry.get("number"), 1)
    if runs:
        ns[GOING] = runs
    else:
        ns.pop(GOING, None)
    return new


def orphans(doc: dict, dead) -> list[tuple[str, dict]]:
    """The detached runs of ``doc`` whose process ``dead(owner)`` says is gone."""
    return [(token, entry) for token, entry in going(doc).items()
            if isinstance(entry, dict) and dead(entry.get("owner"))]


def drop(doc: dict, tokens: list[str]) -> dict:
    """``doc`` with the runs ``tokens`` out of ``after.going`` (recorded interrupted)."""
    runs = {k: v for k, v in going(doc).items() if k not in tokens}
    new = dict(doc)
    ns = new[rules.NS] = dict(rules.info(doc))
    ns["failures"] = rules.counter(ns, "failures") + len(tokens)
    if runs:
        ns[GOING] = runs
    else:
        ns.pop(GOING, None)
    return new
