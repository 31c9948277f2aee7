"""Task management commands of the ``after`` command line (add, show, tasks, cancel, ...).

They are thin: each builds a :class:`after.client.Client` from the configuration and prints
what it returns, as a table for people or ``--json`` for scripts. Bad input is refused with
exit code 2 and a message naming the option; an unknown task exits 4; an operation the
task's status does not allow exits 1.
"""

# Longer than 500 lines on purpose: one command per operation on tasks (add, show, tasks, cancel,
# pause, resume, reschedule, run, backfill, calendars, purge...), each thin, sharing the options
# and the one translation of the Client's errors into the option to blame.

from __future__ import annotations

import json
import math
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from after.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    Failure,
    echo_json,
    echo_table,
    job_registry,
    jobs_options,
    short,
)
from after.client import (
    Client,
    StateError,
    TaskError,
    UnservedWorker,
    describe_repeat,
    every_units,
    rate_field,
)
from after.couch.serving import UNCLAIMED
from after.jobs import JobError, JobRegistry
from after.jobs import check_name as check_job_name
from after.process import ProcessError
from after.process import check_name as check_worker_name
from after.rules import catchup as catchup_rules
from after.rules import task as rules
from after.rules.calendar import PREFIX as CALENDAR_PREFIX
from after.rules.dates import DateError, format_date, utcnow
from after.rules.redact import redact
from after.rules.repeat import FOLDS, GAPS, RepeatError, parse_repeat

#: Which option set a field a validation error is about (``TaskError.field``).
FIELD_OPTIONS = {
    "worker": "--worker", "at": "--at", "date": "--at", "every": "--every", "cron": "--cron",
    "tz": "--tz", "limit": "--limit", "until": "--until", "retry": "--retry",
    "retry.limit": "--retry", "retry.delay": "--retry", "retry.backoff": "--retry",
    "retry.jitter": "--retry", "timeout": "--timeout", "max_delay": "--max-delay",
    "isolation": "--isolation",
    "id": "--id", "job.name": "JOB", "before": "--before", "after": "--after",
    "status": "--status", "from": "--from", "to": "--to", "jitter": "--jitter",
    "concurrency": "--concurrency", "concurrency.key": "--concurrency",
    "concurrency.limit": "--concurrency", "exclude": "--exclude", "rate": "--rate",
    "rate.key": "--rate", "rate.limit": "--rate", "rate.per": "--rate",
    "debounce": "--debounce",
    "overlap": "--overlap", "priority": "--priority", "catchup": "--catchup",
    "catchup.policy": "--catchup", "catchup.window": "--catchup-window",
    "catchup.max": "--catchup-max", "repeat.until": "--until", "repeat.tz": "--tz",
    "repeat.dst": "--dst-gap", "repeat.dst.gap": "--dst-gap", "repeat.dst.fold": "--dst-fold",
    "repeat.limit": "--limit", "repeat.jitter": "--jitter",
}


def option_for(error: TaskError, *, cron: bool = False,
               kwargs: bool = False) -> tuple[str, str]:
    """(the option the field of a validation error is about, the message without its field
    prefix); ("", the message) when no option set that field."""
    field, problem = error.field, error.problem
    if field == "job.arguments":
        return ("--kwargs" if kwargs else "ARGS"), problem
    if field.startswith(("job.arguments[", "job.arguments.")):  # one of them: say which
        return ("--kwargs" if kwargs else "ARGS"), str(error)
    if field.startswith("repeat.exclude"):
        return "--exclude", problem
    if field in FIELD_OPTIONS:
        return FIELD_OPTIONS[field], problem
    if field == "repeat" or field.startswith("repeat."):  # the rule itself
        return ("--cron" if cron else "--every"), problem
    return "", str(error)


@contextmanager
def refused(*, cron: bool = False, kwargs: bool = False):
    """Turn the client's errors into one-line CLI errors with the right exit code."""
    try:
        yield
    except StateError as exc:
        raise Failure(str(exc), EXIT_FAILED) from None
    except TaskError as exc:
        option, message = option_for(exc, cron=cron, kwargs=kwargs)
        if not option:
            raise Failure(message, EXIT_FAILED) from None
        raise click.BadParameter(message, param_hint=f"'{option}'") from None


def open_client(cfg) -> Client:
    return Client(cfg.url, cfg.db, retries=2)


def json_or_text(text: str) -> Any:
    """An argument as JSON when it parses as JSON, else the string itself. ``NaN``,
    ``Infinity`` and numbers past a float's range (``1e400``) are not JSON a database can
    hold: they stay strings."""
    try:
        return json.loads(text, parse_constant=not_json, parse_float=finite_float)
    except ValueError:
        return text


def not_json(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is past a float's range")
    return value


def json_option(value: str | None, option: str, kinds: tuple = (dict,)) -> Any:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not JSON ({exc})",
                                 param_hint=f"'{option}'") from None
    if not isinstance(parsed, kinds) or isinstance(parsed, bool):
        raise click.BadParameter(f"{value!r} is not a JSON object", param_hint=f"'{option}'")
    return parsed


def masked(doc: dict) -> dict:
    """``doc`` as the commands print it: its job's arguments through the one redaction rule
    (:func:`after.rules.redact.redact`: secret-named keys and headers, URL passwords and secret
    query parameters), as run records and logs are. The stored document is unchanged."""
    if isinstance(doc, dict) and "job" in doc:
        return {**doc, "job": redact(doc["job"])}
    return doc


def seconds(value: float | None) -> int | float | None:
    return int(value) if value is not None and float(value).is_integer() else value


def call_text(job: Any) -> str:
    """``hello("Ada", 3)`` or ``hello(name="Ada")``."""
    if not isinstance(job, dict):
        return repr(job)
    arguments = job.get("arguments")
    if isinstance(arguments, dict):
        inner = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}"
                          for k, v in arguments.items())
    elif isinstance(arguments, list):
        inner = ", ".join(json.dumps(v, ensure_ascii=False) for v in arguments)
    else:
        inner = ""
    return f"{job.get('name')}({inner})"


def clip(text: Any, width: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def duration(ms: Any) -> str:
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return "-"
    return f"{ms:.0f}ms" if ms < 1000 else f"{ms / 1000:.1f}s"


def retry_text(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value} attempt{'s' if value != 1 else ''} after the first"
    if isinstance(value, dict):
        limit = value.get("limit", 1)
        text = f"{limit} attempt{'s' if limit != 1 else ''} after the first"
        if value.get("delay"):
            text += f", {value['delay']}s apart ({value.get('backoff', 'fixed')})"
        return text
    return json.dumps(value)


def run_outcome(run: dict) -> str:
    if "error" in run:
        error = run["error"]
        return clip(error.get("message") if isinstance(error, dict) else error)
    if "result" in run:
        return clip(json.dumps(run["result"], ensure_ascii=False))
    return ""


def runs_table(runs: list[dict], indent: str = "") -> None:
    """One line a run; RUN is the run's number, or ``manual``/``backfill`` for an extra
    run; OCCURRENCE the date of the occurrence it ran."""
    rows = [(f"{indent}RUN", "ATTEMPT", "OUTCOME", "OCCURRENCE", "STARTED", "DURATION",
             "RESULT/ERROR")]
    for run in runs:
        rows.append((f"{indent}{run.get('kind') or run.get('number', '-')}",
                     str(run.get("attempt", "-")), str(run.get("outcome", "-")),
                     short(run.get("occurrence_date")), short(run.get("started")),
                     duration(run.get("duration_ms")), run_outcome(run)))
    echo_table(rows)


# -- add -----------------------------------------------------------------------------------


def exclude_items(values: tuple[str, ...], option: str = "--exclude") -> list | None:
    """``--exclude`` values as ``repeat.exclude`` items: a day, ``FROM..TO`` or
    ``calendar:NAME`` (each checked later, with the task)."""
    items: list = []
    for value in values:
        if value.startswith(CALENDAR_PREFIX):
            items.append({"calendar": value[len(CALENDAR_PREFIX):]})
        elif ".." in value:
            low, _, high = value.partition("..")
            items.append({"from": low, "to": high})
        else:
            items.append(value)
    return items or None


def concurrency_option(value: str | None) -> dict | None:
    if value is None:
        return None
    key, colon, limit = value.rpartition(":")
    if not colon or not key or not limit.isdigit():
        raise click.BadParameter(f"{value!r} is not KEY:LIMIT (like reports:2)",
                                 param_hint="'--concurrency'")
    return {"key": key, "limit": int(limit)}


def rate_option(value: str | None) -> dict | None:
    if value is None:
        return None
    try:
        return rate_field(value)
    except TaskError as exc:
        raise click.BadParameter(str(exc).removeprefix("rate: "),
                                 param_hint="'--rate'") from None


def check_job(registry: JobRegistry, name: str, args: list, kwargs: dict | None) -> None:
    """Refuse (exit 2) a job the jobs folder does not define, or arguments its function
    cannot take, before anything is written: the worker would only mark the task ``error``.

    Resolved through :class:`~after.jobs.JobRegistry` (built-in jobs, then ``NAME.py`` of the
    folder; nothing outside it is imported). A name that is not a job name at all is left to
    the task validator, which says so in the words the worker uses.
    """
    try:
        check_job_name(name)
    except JobError:
        return
    hint = "; --no-check adds it anyway, for a job only the workers' machines have"
    try:
        registry.check_call(name, args, kwargs)
    except JobError as exc:
        text = str(exc)
        if "cannot take" not in text:  # not found: it may exist on the workers' machines
            text += (" (set AFTER_JOBS)" if not registry.folder.is_dir() else "") + hint
        raise Failure(text, EXIT_USAGE) from None


@click.command()
@click.argument("job")
@click.argument("args", nargs=-1)
@click.option("-w", "--worker", envvar="AFTER_WORKER", required=True,
              help="the worker name that runs it [env AFTER_WORKER]")
@click.option("--at", metavar="WHEN",
              help="now, +30s, +15m, +6h, +2d, +1w, +1M, +500ms, +1h30m, or ISO 8601 (UTC unless "
                   "it has an offset) "
                   "[default: now; with --cron the first cron time]")
@click.option("--every", metavar="INTERVAL",
              help="repeat: 30s, 15m, 6h, 7d, 1w, 1M (month), 1y, 1h30m; an ISO 8601 "
                   "duration (P1M7D); or a JSON object of units ('{\"days\": 7}')")
@click.option("--cron", metavar="EXPR", help="repeat on a cron schedule ('0 9 * * 1-5')")
@click.option("--tz", metavar="ZONE", help="the --cron time zone (IANA) [default: UTC]")
@click.option("--dst-gap", type=click.Choice(GAPS),
              help="a --cron local time that does not exist (the clocks spring forward): "
                   "shift it to the end of the gap, or skip it [default: shift; skip when "
                   "the hour field is *]")
@click.option("--dst-fold", type=click.Choice(FOLDS),
              help="a --cron local time that occurs twice (the clocks fall back): run the "
                   "first, the last or both [default: first; both when the hour field is *]")
@click.option("--limit", type=click.IntRange(1), help="a repeating task's number of runs")
@click.option("--until", metavar="WHEN", help="a repeating task's last date (inclusive)")
@click.option("--jitter", type=float, metavar="SECONDS",
              help="a repeating task's occurrences each run later by a deterministic amount "
                   "in [0, SECONDS)")
@click.option("--retry", metavar="N|JSON",
              help="attempts after the first, or '{\"limit\": 3, \"delay\": 30, "
                   "\"backoff\": \"exponential\"}'")
@click.option("--timeout", type=click.FloatRange(0, min_open=True),
              help="seconds a run may take")
@click.option("--max-delay", type=click.FloatRange(0, min_open=True),
              help="seconds late after which a run is recorded as missed")
@click.option("--isolation", type=click.Choice(rules.ISOLATIONS),
              help="process: run each run in a child process of its own, killed when it "
                   "passes --timeout [default: thread]")
@click.option("--id", "task_id", metavar="ID",
              help="the task's id: creates it, or updates it when it exists (safe to run "
                   "on every deploy)")
@click.option("--kwargs", metavar="JSON", help="keyword arguments, a JSON object")
@click.option("--exclude", "excludes", metavar="DAYS", multiple=True,
              help="days a repeating task skips (in its --tz): 2026-12-25, "
                   "2026-12-24..2026-12-26, or calendar:NAME (a shared calendar, see `after "
                   "calendar`); repeat the option for more")
@click.option("--concurrency", metavar="KEY:LIMIT",
              help="at most LIMIT runs with KEY at once, across every process (reports:2)")
@click.option("--rate", metavar="KEY:LIMIT/PER",
              help="at most LIMIT runs with KEY begin in any PER (seconds, or 30s, 1m, 1h, "
                   "1d), across every process (mail:100/1h)")
@click.option("--debounce", type=click.FloatRange(0, min_open=True), metavar="SECONDS",
              help="run once SECONDS went by with no new version of the task (add it again "
                   "with the same --id on each event: it runs once, after the last)")
@click.option("--no-check", "no_check", is_flag=True,
              help="do not check JOB and its arguments against the jobs folder (a job only "
                   "the workers' machines have)")
@click.option("--overlap", type=click.Choice(rules.OVERLAPS),
              help="a run outlasting its period: skip the occurrences meanwhile (default), "
                   "buffer_one (run one right after) or allow (run them alongside)")
@click.option("--priority", type=click.IntRange(-rules.MAX_PRIORITY, rules.MAX_PRIORITY),
              help="higher first when more tasks are due than a worker can start [default: 0]")
@click.option("--catchup", type=click.Choice(catchup_rules.POLICIES),
              help="a repeating task's occurrences missed while no worker ran it: run the "
                   "latest (default), all of them in turn, or none")
@click.option("--catchup-window", type=click.FloatRange(0, min_open=True), metavar="SECONDS",
              help="how far back a catch-up reaches (occurrences older are not run)")
@click.option("--catchup-max", type=click.IntRange(1, catchup_rules.MAX_CATCHUP),
              metavar="N", help="with --catchup all: run at most the latest N "
                                f"[default: {catchup_rules.DEFAULT_MAX}]")
@click.option("--json", "as_json", is_flag=True, help="print the task document")
@click.pass_obj
def add(cfg, job, args, worker, at, every, cron, tz, dst_gap, dst_fold, limit, until, jitter,
        retry, timeout, max_delay, isolation, task_id, kwargs, excludes, concurrency, rate,
        debounce, no_check, overlap, priority, catchup, catchup_window, catchup_max, as_json):
    """Schedule JOB(task, ARGS...) on a worker; prints the task's id.

    Each ARG is JSON when it parses as JSON (42, true, null, '"42"', '[1, 2]'), else a
    string. Put -- before ARGS that start with a dash. JOB must be a built-in job or one of
    the jobs folder, and the arguments must fit its function (--no-check skips this).
    """
    try:
        check_worker_name(worker)
    except ProcessError as exc:
        raise click.BadParameter(str(exc), param_hint="'--worker'") from None
    if every is not None and every.lstrip().startswith("{"):
        every = json_option(every, "--every")
    if retry is not None:
        try:
            retry = int(retry)
        except ValueError:
            try:
                parsed = json.loads(retry)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise click.BadParameter(f"{retry!r} is not a number of attempts or a JSON "
                                         "object", param_hint="'--retry'") from None
            retry = parsed
    kwargs_value = json_option(kwargs, "--kwargs")
    if kwargs_value is not None and args:
        raise click.BadParameter("cannot be combined with ARGS (a task passes a list or an "
                                 "object)", param_hint="'--kwargs'")
    dst = {k: v for k, v in (("gap", dst_gap), ("fold", dst_fold)) if v} or None
    if dst and cron is None:
        raise click.BadParameter("applies to --cron only",
                                 param_hint=f"'--dst-{next(iter(dst))}'")
    arguments = [json_or_text(a) for a in args]
    if not no_check:
        check_job(job_registry(cfg), job, arguments, kwargs_value)
    with open_client(cfg) as client, refused(cron=cron is not None,
                                            kwargs=kwargs is not None), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnservedWorker)
        new_id = client.schedule(
            job, *arguments, worker=worker, at=at, every=every,
            cron=cron, tz=tz, limit=limit, until=until, jitter=seconds(jitter), retry=retry,
            timeout=seconds(timeout), max_delay=seconds(max_delay), isolation=isolation,
            id=task_id, kwargs=kwargs_value, exclude=exclude_items(excludes),
            concurrency=concurrency_option(concurrency), overlap=overlap, priority=priority,
            dst=dst, catchup=catchup_option(catchup, catchup_window, catchup_max),
            rate=rate_option(rate), debounce=seconds(debounce))
        for warning in caught:
            if issubclass(warning.category, UnservedWorker):
                click.echo(f"warning: {warning.message}", err=True)
        if as_json:
            echo_json(masked(client.get(new_id)))
        else:
            click.echo(new_id)


def catchup_text(value: Any) -> str:
    """A task's ``catchup`` in words (as written when it cannot be read)."""
    try:
        return catchup_rules.describe(catchup_rules.parse_catchup(value, rules.MAX_SECONDS))
    except catchup_rules.CatchupError:
        return json.dumps(value)[:200]


def catchup_option(policy: str | None, window: float | None, most: int | None) -> dict | None:
    """``--catchup``, ``--catchup-window`` and ``--catchup-max`` as the ``catchup`` field."""
    found = {"policy": policy, "window": seconds(window), "max": most}
    return {k: v for k, v in found.items() if v is not None} or None


# -- show, tasks, runs ---------------------------------------------------------------------


def isolation_text(doc: dict, info: dict) -> str:
    """How the task's runs are isolated, and why when the worker decided it."""
    text = str(doc.get("isolation") or rules.THREAD)
    if info.get("isolated") and text != rules.PROCESS:
        text = (f"process (since {info['isolated']}: a run was interrupted by the death of "
                "its process)")
    return text


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("-n", "--runs", "count", type=click.IntRange(0, 1000), default=5,
              show_default=True, help="last runs shown")
@click.option("--json", "as_json", is_flag=True, help="one JSON document for scripts")
@click.pass_obj
def show(cfg, task_id, count, as_json):
    """Show a task: its definition, status, next run times and last runs."""
    with open_client(cfg) as client:
        doc = masked(client.get(task_id))
        runs = client.runs(task_id, count) if count else []
        calendars = client.calendars_of(doc)
        waiting = slot_wait(doc, client, utcnow())
        unserved = client.unserved(doc["worker"]) if doc.get("status") in UNCLAIMED \
            and isinstance(doc.get("worker"), str) and worker_named(doc["worker"]) else None
    instants = Client.next_runs(doc, 5, calendars)
    upcoming = [format_date(d) for d in instants]
    zone = task_zone(doc)
    local = [local_time(d, zone) for d in instants] if zone else []
    if as_json:
        echo_json({"task": doc, "next_runs": upcoming, "runs": runs,
                   "waiting_for_slot": waiting, "unserved": unserved,
                   **({"tz": zone, "next_runs_local": [d.isoformat() for d in
                                                        (i.astimezone(ZoneInfo(zone))
                                                         for i in instants)]}
                      if zone else {})})
        return
    info = rules.info(doc)
    rows: list[tuple] = [
        ("task", doc["_id"]),
        ("status", doc.get("status", "-")),
        ("worker", doc.get("worker", "-")),
        ("job", call_text(doc.get("job"))),
        ("date", doc.get("date", "-")),
    ]
    if doc.get("repeat") is not None:
        rows.append(("repeat", describe_repeat(doc["repeat"])))
    if doc.get("retry") is not None:
        rows.append(("retry", retry_text(doc["retry"])))
    for key, label in (("timeout", "timeout"), ("max_delay", "max delay"),
                       ("debounce", "debounce")):
        if doc.get(key) is not None:
            rows.append((label, f"{doc[key]}s"))
    if doc.get("isolation") is not None or info.get("isolated"):
        rows.append(("isolation", isolation_text(doc, info)))
    if isinstance(doc.get("concurrency"), dict):
        cap = doc["concurrency"]
        rows.append(("concurrency", f"at most {cap.get('limit')} at once with key "
                                    f"{cap.get('key')}"))
    if rules.describe_rate(doc.get("rate")):
        rows.append(("rate", rules.describe_rate(doc.get("rate"))))
    for key in ("overlap", "priority"):
        if doc.get(key) is not None:
            rows.append((key, str(doc[key])))
    if doc.get("catchup") is not None:
        rows.append(("catch-up", catchup_text(doc["catchup"])))
    if doc.get("status") == rules.PAUSED and info.get("paused"):
        rows.append(("paused since", str(info["paused"])))
    if info.get("owner"):
        rows.append(("held by", info["owner"]))
    if waiting:
        rows.append(("waiting", waiting))
    if unserved:
        rows.append(("warning", unserved))
    if info.get("runs") or info.get("missed") or info.get("skipped"):
        skipped = f", {info['skipped']} skipped" if info.get("skipped") else ""
        rows.append(("runs", f"{info.get('runs', 0)} ({info.get('successes', 0)} done, "
                             f"{info.get('failures', 0)} failed, {info.get('missed', 0)} "
                             f"missed{skipped})"))
    if info.get("error"):
        rows.append(("error", clip(info["error"], 200)))
    for index, when in enumerate(upcoming):
        rows.append(("next runs" if index == 0 else "", f"{when}  {local[index]}" if local
                     else when))
    echo_table(rows)
    if runs:
        click.echo("last runs:")
        runs_table(runs, indent="  ")


def task_zone(doc: dict) -> str | None:
    """The time zone a task's schedule is in (a cron rule's ``tz``), None for UTC."""
    try:
        rule = parse_repeat(doc.get("repeat"))
    except (RepeatError, DateError):
        return None
    zone = rule.zone if rule is not None else "UTC"
    return None if zone in ("UTC", "Etc/UTC") else zone


def local_time(instant, zone: str) -> str:
    """``2027-03-24 09:00:00 CET (Europe/Paris)``, beside a run's UTC instant."""
    there = instant.astimezone(ZoneInfo(zone))
    return f"{there:%Y-%m-%d %H:%M:%S} {there.tzname()} ({zone})"


def worker_named(name: str) -> bool:
    try:
        check_worker_name(name)
    except ProcessError:
        return False
    return True


def slot_wait(doc: dict, client: Client, now) -> str | None:
    """What a due task with a ``concurrency`` cap waits for when every slot of its key is
    held: ``waiting for a slot of KEY (limit N: held by the runs of A, B)``; None when it
    does not wait."""
    try:
        spec = rules.parse(doc)
    except TaskError:
        return None
    due = rules.instant(rules.info(doc).get("due")) or spec.date
    if spec.concurrency is None or doc.get("status") not in (rules.WAITING, rules.SCHEDULED) \
            or due > now:
        return None
    cap = spec.concurrency
    holders = [s["task"] for s in client.caps(cap.key) if s["holder"] and s["n"] < cap.limit]
    if len(holders) < cap.limit:
        return None  # a slot is free: not waiting for one
    return (f"waiting for a slot of {cap.key} (limit {cap.limit}: held by the runs of "
            f"{', '.join(map(str, holders)) or 'none'}), due since {format_date(due)}")


def _status_list(statuses: tuple[str, ...]) -> list[str] | None:
    return list(statuses) or None


@click.command()
@click.option("-w", "--worker", help="only this worker's tasks")
@click.option("-s", "--status", "statuses", multiple=True, type=click.Choice(rules.STATUSES),
              help="only tasks in this status (repeatable)")
@click.option("--job", help="only tasks of this job")
@click.option("--before", metavar="WHEN", help="due before (now, +1d, ISO 8601)")
@click.option("--after", metavar="WHEN", help="due at or after (now, +1d, ISO 8601)")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="tasks per page")
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True,
              help="the page's documents, as a plain JSON list (an empty list past the "
                   "last page)")
@click.pass_obj
def tasks(cfg, worker, statuses, job, before, after, limit, page, as_json):
    """List tasks, sorted by date, a page at a time; the table ends with a line saying
    when there are more (--page N+1 for the next)."""
    with open_client(cfg) as client, refused():
        # one more than the page: whether a next page exists, without counting them all
        found = client.tasks(worker=worker, status=_status_list(statuses), job=job,
                             before=before, after=after, limit=limit + 1,
                             skip=(page - 1) * limit)
    more = len(found) > limit
    found = [masked(doc) for doc in found[:limit]]
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no tasks" if page == 1 else f"no tasks on page {page}")
        return
    rows = [("ID", "STATUS", "WORKER", "DATE", "JOB", "REPEAT")]
    for doc in found:
        rows.append((doc["_id"], str(doc.get("status")), str(doc.get("worker")),
                     str(doc.get("date")), clip(call_text(doc.get("job")), 40),
                     describe_repeat(doc.get("repeat"))))
    echo_table(rows)
    if more:
        first = (page - 1) * limit + 1
        click.echo(f"tasks {first}-{first + len(found) - 1} shown, there are more: "
                   f"--page {page + 1} for the next")


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="how many (the newest)")
@click.option("--json", "as_json", is_flag=True, help="the run records, as a JSON list")
@click.pass_obj
def runs(cfg, task_id, limit, as_json):
    """List a task's runs, newest first."""
    with open_client(cfg) as client:
        client.get(task_id)  # an unknown task is an error, not an empty list
        found = client.runs(task_id, limit)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo(f"{task_id} has not run yet")
        return
    runs_table(found)


# -- cancel, reschedule --------------------------------------------------------------------


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="print the task document")
@click.pass_obj
def cancel(cfg, task_id, as_json):
    """Cancel a task (a worker holding it drops it; a running job is told to stop, and its
    run ends canceled within 5 s)."""
    with open_client(cfg) as client, refused():
        doc = client.cancel(task_id)
    if as_json:
        echo_json(masked(doc))
    elif doc["status"] == rules.CANCELED:
        click.echo(f"{task_id} canceled")
    else:
        click.echo(f"{task_id}: cancel requested (a worker holds it and will cancel it"
                   + ("; its running job is told to stop)" if rules.running(doc) else ")"))


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("--at", metavar="WHEN", help="now, +15m, ISO 8601 [default: now]")
@click.option("--all", "any_status", is_flag=True,
              help="whatever its status (by default only a task in error)")
@click.option("--json", "as_json", is_flag=True, help="print the task document")
@click.pass_obj
def reschedule(cfg, task_id, at, any_status, as_json):
    """Run a failed task again (at WHEN); --all for a task in any status."""
    with open_client(cfg) as client, refused():
        try:
            doc = client.reschedule(task_id, at=at, all=any_status)
        except rules.NotInError as exc:  # its message names the Python option
            raise Failure(f"task {exc.task_id} is {exc.status}, not error: --all reschedules "
                          "it anyway", EXIT_FAILED) from None
    if as_json:
        echo_json(masked(doc))
    else:
        click.echo(f"{task_id} rescheduled for {doc['date']} ({doc['status']})")


# -- run now, backfill ----------------------------------------------------------------------


@click.command("run")
@click.argument("task_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="print the one-off task written")
@click.pass_obj
def run_now(cfg, task_id, as_json):
    """Run a task once more, as soon as possible, its schedule kept (recorded as manual).

    Writes the one-off task ID:manual:<now>, which one process of the task's worker name
    runs; `after runs ID` lists its run."""
    with open_client(cfg) as client, refused():
        doc = client.run_now(task_id)
    if as_json:
        echo_json(masked(doc))
    else:
        click.echo(f"{task_id}: one extra run asked for ({doc['_id']})")


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("--from", "start", metavar="WHEN", required=True,
              help="the window's start, inclusive (ISO 8601, a date alone is midnight UTC)")
@click.option("--to", "end", metavar="WHEN", required=True,
              help="the window's end, inclusive (in the past)")
@click.option("--json", "as_json", is_flag=True,
              help="the occurrences and the one-off tasks, as JSON")
@click.pass_obj
def backfill(cfg, task_id, start, end, as_json):
    """Run each occurrence of a repeating task from --from to --to once (recorded as
    backfill with its occurrence date; at most 1000). Asking again runs none twice, and
    the occurrences the task runs itself (its overdue date, or what its catch-up runs) are
    left to it."""
    with open_client(cfg) as client, refused():
        done = client.backfill(task_id, start, end)
    if as_json:
        echo_json(done)
        return
    found, new, old = len(done["occurrences"]), len(done["created"]), len(done["existing"])
    if not found:
        click.echo(f"{task_id}: no occurrence from {start} to {end}")
    else:
        click.echo(f"{task_id}: {found} occurrence{'s' if found != 1 else ''} from "
                   f"{done['occurrences'][0]} to {done['occurrences'][-1]}: {new} to run"
                   + (f", {old} asked for before (not run again)" if old else "")
                   + pending_text(done["pending"]))


def pending_text(pending: list[str]) -> str:
    """The occurrences a backfill left to the task, which runs them itself."""
    if len(pending) == 1:
        return f", {pending[0]} left to the task (it runs that one itself)"
    if pending:  # catch-up all: each one due
        return (f", {len(pending)} left to the task, {pending[0]} to {pending[-1]} (it "
                "runs them itself, catch-up all)")
    return ""


# -- purge ---------------------------------------------------------------------------------


def age_seconds(value: str | None) -> float:
    """``30d``, ``12h``, ``2w``, ``90m``, ``1d12h`` or seconds, as seconds."""
    if value is None:
        return 0.0
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if number >= 0 and math.isfinite(number):
            return number
    units = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1,
             "milliseconds": 0.001}
    try:
        parts = every_units(value)
    except TaskError:
        parts = None
    if not parts or any(unit not in units for unit in parts):
        raise click.BadParameter(f"{value!r} is not an age like 30d, 12h, 2w, 90m or seconds",
                                 param_hint="'--older-than'")
    return float(sum(units[unit] * count for unit, count in parts.items()))


@click.command()
@click.option("-s", "--status", "statuses", multiple=True, type=click.Choice(rules.FINISHED),
              help="only tasks in this status (repeatable) [default: done, error, canceled]")
@click.option("--older-than", metavar="AGE",
              help="only tasks finished at least AGE ago: 30d, 12h, 2w, 90m [default: any]")
@click.option("-w", "--worker", help="only this worker name's tasks")
@click.option("--yes", "really", is_flag=True, help="delete them (without it: a dry run)")
@click.option("--json", "as_json", is_flag=True, help="what was (or would be) deleted, as JSON")
@click.pass_obj
def purge(cfg, statuses, older_than, worker, really, as_json):
    """Delete finished tasks (done, error, canceled) by status, age and worker name, with
    their run records. A dry run unless --yes: it says what would go."""
    if worker is not None:
        try:
            check_worker_name(worker)
        except ProcessError as exc:
            raise click.BadParameter(str(exc), param_hint="'--worker'") from None
    age = age_seconds(older_than)
    with open_client(cfg) as client, refused():
        done = client.purge(list(statuses) or rules.FINISHED, age, worker, dry_run=not really)
    if as_json:
        echo_json({**done, "dry_run": not really})
        return
    ids = done["tasks"]
    what = (f"finished {' or '.join(statuses) if statuses else 'done, error or canceled'}"
            + (f" of {worker}" if worker else "")
            + (f" at least {older_than} ago" if older_than else ""))
    if not ids:
        click.echo(f"no task {what}")
        return
    if not really:
        for docid in ids[:20]:
            click.echo(f"  {docid}")
        if len(ids) > 20:
            click.echo(f"  ... and {len(ids) - 20} more")
        click.echo(f"would delete {len(ids)} task{'s' if len(ids) != 1 else ''} {what}, with "
                   "their run records (a dry run: --yes deletes them)")
        return
    click.echo(f"deleted {done['deleted']} task{'s' if done['deleted'] != 1 else ''} {what} "
               f"and {done['runs']} run record{'s' if done['runs'] != 1 else ''}"
               + (f" ({len(ids) - done['deleted']} changed meanwhile, left)"
                  if done["deleted"] < len(ids) else ""))


# -- jobs ----------------------------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True,
              help="one JSON list for scripts (the notes go to stderr)")
@jobs_options
@click.pass_obj
def jobs(cfg, as_json):
    """List the jobs: built-in ones, those of the jobs folder and of the jobs modules; then
    each module that defines no job (or cannot be imported), and why."""
    registry = job_registry(cfg)
    infos = registry.list()
    notices = registry.notices()
    if as_json:
        echo_json([{"name": i.name, "source": i.source, "signature": i.signature,
                    "doc": i.doc, "error": i.error} for i in infos])
        for notice in notices:
            click.echo(f"note: {notice}", err=True)
        return
    rows = [("NAME", "SOURCE", "SIGNATURE", "DESCRIPTION")]
    for info in infos:
        rows.append((info.name, relative(info.source), info.signature,
                     f"error: {info.error}" if info.error else info.doc))
    echo_table(rows)
    shown = {info.source for info in infos if info.error}  # a row says it already
    for notice in notices:
        if notice.source not in shown:
            click.echo(f"note: {relative(notice.source)}: {notice.message}")


def relative(source: str) -> str:
    try:
        return str(Path(source).relative_to(Path.cwd()))
    except ValueError:
        return source


# -- calendars and caps ----------------------------------------------------------------------


@click.command()
@click.argument("name")
@click.argument("days", nargs=-1)
@click.option("--description", help="what the calendar is (kept in its document)")
@click.option("--delete", is_flag=True, help="delete the calendar")
@click.option("--json", "as_json", is_flag=True, help="print the calendar document")
@click.pass_obj
def calendar(cfg, name, days, description, delete, as_json):
    """Show the shared calendar NAME, or set its DAYS (2026-12-25, 2026-12-24..2026-12-26),
    replacing them. Tasks name it with --exclude calendar:NAME; an edit counts from their
    next occurrence on, without restarting any worker."""
    with open_client(cfg) as client, refused():
        if delete:
            if days:
                raise click.BadParameter("cannot be combined with DAYS",
                                         param_hint="'--delete'")
            client.delete_calendar(name)
            return
        if days:
            items = exclude_items(days)
            if any(isinstance(i, dict) and "calendar" in i for i in items):
                raise click.BadParameter("a calendar holds days and ranges, not calendars",
                                         param_hint="DAYS")
            try:
                doc = client.set_calendar(name, items, description)
            except TaskError as exc:
                field, _, message = str(exc).partition(": ")
                hint = "NAME" if field == "_id" else "DAYS"
                raise click.BadParameter(message, param_hint=hint) from None
        else:
            doc = client.calendar(name)
    if as_json:
        echo_json(doc)
        return
    click.echo(f"calendar {name}: {len(doc.get('dates', []))} item(s)"
               + (f" ({doc['description']})" if doc.get("description") else ""))
    for item in doc.get("dates", []):
        click.echo(f"  {item['from']}..{item['to']}" if isinstance(item, dict) else f"  {item}")


@click.command()
@click.argument("key", required=False)
@click.option("--json", "as_json", is_flag=True, help="one JSON list for scripts")
@click.pass_obj
def caps(cfg, key, as_json):
    """List the concurrency slots (of KEY, or of every key): which run holds each."""
    with open_client(cfg) as client:
        slots = client.caps(key)
    if as_json:
        echo_json(slots)
        return
    rows = [("KEY", "SLOT", "TASK", "HOLDER", "SINCE")]
    for slot in slots:
        rows.append((slot["key"], str(slot["n"]), slot["task"] or "-",
                     slot["holder"] or "free", short(slot["since"]) if slot["holder"] else "-"))
    echo_table(rows)


COMMANDS = (add, show, tasks, runs, cancel, reschedule, run_now, backfill, purge, jobs, calendar,
            caps)
