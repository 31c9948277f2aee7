"""The words of the worker's log lines about the end of a run, in one place.

A failure that will be retried and the last one used to read the same (``failed t1 (job
x): ...``). Now each says what comes next::

    task t1 (job sync): attempt 1 of 4 failed, next at 2026-12-01T09:00:30.000Z (in 30 s): E
    task t1 (job sync): attempt 4 of 4 failed, no retry left: E
    task t1 (job sync): failed, no retry left (retry: none): E
    task t1 (job report): attempt 3 of 3 timed out, no retry left; next occurrence at D: E

(``E`` the error, ``D`` a date.) Pure: the task as it was (``doc``), as the end of the run
leaves it (``after``), the run's outcome and the task's rules in; one line out.
"""

from __future__ import annotations

from datetime import datetime

from after.rules import task as rules
from after.rules.dates import format_date

#: How an outcome that is not a success reads in a line.
VERBS = {rules.FAILED: "failed", rules.TIMEOUT: "timed out", rules.MISSED: "was missed",
         rules.INTERRUPTED: "was interrupted"}


def run_ended(doc: dict, after: dict, spec: rules.Spec | None, outcome: rules.Outcome,
              now: datetime) -> str:
    """The log line of a run that did not succeed (see the module's docstring)."""
    attempt = max(1, rules.counter(rules.info(doc), "attempt"))
    limit = spec.retry.limit if spec is not None else 0
    verb = VERBS.get(outcome.outcome, outcome.outcome)
    head = f"attempt {attempt} of {limit + 1} {verb}" if limit else verb
    info = rules.info(after)
    retry_at = rules.instant(info.get("retry_at"))
    if after.get("status") == rules.SCHEDULED and retry_at is not None:
        wait = max(0.0, (retry_at - now).total_seconds())
        if outcome.outcome == rules.INTERRUPTED and not limit:
            head = "was interrupted"
        what = f"{head}, next at {format_date(retry_at)} (in {wait:.3g} s)"
    elif outcome.outcome == rules.MISSED:
        what = head
    else:
        what = f"{head}, no retry left" + ("" if limit else " (retry: none)")
    if after.get("status") in (rules.WAITING, rules.PAUSED) and after.get("date") \
            and after.get("date") != doc.get("date"):
        what += f"; next occurrence at {after['date']}"
    job = spec.job if spec is not None else (doc.get("job") or {}).get("name")
    return f"task {doc.get('_id')} (job {job}): {what}: {outcome.error or outcome.outcome}"
