"""``after audit``: what should have run and what did (:mod:`after.audit`, read by
:meth:`after.client.Client.audit`)."""

from __future__ import annotations

import click

from after import audit as audits
from after.cli.common import echo_json, echo_table, short, worker_name
from after.client import Client, TaskError

#: The option a message of :meth:`Client.audit` is about, by its field.
OPTIONS = {"from": "'--from'", "to": "'--to'", "late": "'--late'", "worker": "NAME"}
#: How the summary line says each verdict.
SAID = {audits.ON_TIME: "on time", audits.LATE: "late", audits.BACKFILLED: "backfilled",
        audits.TWICE: "ran twice", audits.MISSED: "missed", audits.SKIPPED: "skipped",
        audits.NEVER: "never ran", audits.PENDING: "pending", "extra": "extra runs"}


def seconds_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def summary(report: audits.Report) -> str:
    counts = report.counts
    occurrences = sum(counts[v] for v in audits.VERDICTS)
    tasks = len(report.tasks)
    window = f"from {report.as_json()['from']} to {report.as_json()['to']}"
    if not occurrences and not counts["extra"]:
        return f"no occurrence {window}"
    said = ", ".join(f"{counts[key]} {SAID[key]}" for key in (*audits.VERDICTS, "extra")
                     if counts[key])
    return (f"{occurrences} occurrence{'s' if occurrences != 1 else ''} of {tasks} "
            f"task{'s' if tasks != 1 else ''} {window}: {said}")


@click.command()
@click.argument("name", required=False)
@click.option("--task", "task_id", metavar="ID", help="only this task")
@click.option("--from", "start", metavar="WHEN",
              help="the window's start, inclusive (ISO 8601; a date alone is midnight UTC) "
                   "[default: 24 hours before --to]")
@click.option("--to", "end", metavar="WHEN",
              help="the window's end, inclusive (now, ISO 8601) [default: now]")
@click.option("--late", type=click.FloatRange(0), default=audits.DEFAULT_LATE,
              show_default=True, metavar="SECONDS",
              help="how long after its due instant a run still counts as on time")
@click.option("--all", "show_all", is_flag=True,
              help="list every occurrence, the ones on time too")
@click.option("--json", "as_json", is_flag=True, help="the whole report, as JSON")
@click.pass_obj
def audit(cfg, name, task_id, start, end, late, show_all, as_json):
    """Say what should have run and what did: each occurrence the schedules of NAME's tasks
    (of every task without NAME) imply from --from to --to, against their run records.

    Each is on time, late (past --late), backfilled, twice (ran more than once), missed
    (past max_delay), skipped (an excluded day, an overlap, a pause: the table says why),
    never (it never ran) or pending (due just now, or running). Runs of no occurrence (a
    manual run, a record the schedule does not explain) are listed as extra. The table
    leaves out the occurrences on time unless --all."""
    if name is not None:
        name = worker_name(name)
    with Client(cfg.url, cfg.db, retries=2) as client:
        try:
            report = client.audit(name, task=task_id, start=start, end=end, late=late)
        except TaskError as exc:  # a bad --from or --to, a window too large
            field, _, message = str(exc).partition(": ")
            raise click.BadParameter(message, param_hint=OPTIONS.get(field, "NAME")) from None
    if as_json:
        echo_json(report.as_json())
        return
    rows = [("TASK", "OCCURRENCE", "VERDICT", "LATE", "RUNS", "WHY")]
    for task in report.tasks:
        if task.error:
            rows.append((task.task, "-", "error", "-", "-", f"cannot be read: {task.error}"))
        for entry in task.entries:
            if show_all or entry.verdict != audits.ON_TIME:
                rows.append((task.task, short(entry.as_json()["occurrence"]), entry.verdict,
                             seconds_text(entry.lateness), str(len(entry.runs)),
                             entry.reason or ""))
        for extra in task.extra:
            rows.append((task.task, short(extra["occurrence"]), "extra", "-", "1",
                         f"{extra['reason']}: {extra['run']}"))
    if len(rows) > 1:
        echo_table(rows)
    click.echo(summary(report))


COMMANDS = (audit,)
