"""What every command module of the command line shares: exit codes, the one-line
:class:`Failure`, opening the store, and printing tables.

The command modules (:mod:`~after.cli.workers`, :mod:`~after.cli.server`,
:mod:`~after.cli.tasks`, :mod:`~after.cli.dashboard`) import this module only; the group in
:mod:`after.cli` imports them, never the other way round.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from after.config import Config, ConfigError, jobs_modules
from after.couch.store import Store
from after.jobs import JobRegistry
from after.process import ProcessError, check_name
from after.rules.dates import parse_date

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


class Failure(click.ClickException):
    """A one-line error with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = code

    def show(self, file=None) -> None:
        click.echo(f"after: error: {self.format_message()}", err=True)


def open_store(cfg: Config, retries: int = 2) -> Store:
    return Store(cfg.url, cfg.db, retries=retries)


def worker_name(value: str) -> str:
    """A worker name argument, checked (a bad one is a usage error)."""
    try:
        return check_name(value)
    except ProcessError as exc:
        raise click.BadParameter(str(exc)) from None


def job_registry(cfg: Config) -> JobRegistry:
    """The jobs of the configuration: its jobs folder (which may not exist: the built-in
    jobs only) and its jobs modules."""
    return JobRegistry(cfg.jobs, cfg.jobs_modules)


def jobs_options(command):
    """``--jobs`` and ``--jobs-module`` given after the command too (``after start billing
    --jobs ./jobs``), where they override the group's options and the configuration."""
    def apply(ctx, param, value):
        if value:
            cfg = ctx.find_object(Config)
            if param.name == "jobs_dir":
                changed = replace(cfg, jobs=Path(value).expanduser().resolve())
            else:
                try:
                    changed = replace(cfg, jobs_modules=jobs_modules(value, "--jobs-module"))
                except ConfigError as exc:
                    raise click.BadParameter(str(exc).partition(": ")[2]) from None
            ctx.obj = changed
        return value

    command = click.option("--jobs-module", "jobs_module", metavar="MODULE", expose_value=False,
                           callback=apply, help="installed modules of jobs (pkg.jobs), comma "
                           "separated [env AFTER_JOBS_MODULE]")(command)
    return click.option("--jobs", "jobs_dir", metavar="DIR", expose_value=False,
                        callback=apply, help="jobs folder [env AFTER_JOBS]")(command)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def echo_table(rows: list[tuple]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in
                             zip(row, widths, strict=True)).rstrip())


def short(stamp: str | None) -> str:
    return (stamp or "-").replace("T", " ")[:19]


def ago(stamp: str | None, now: datetime) -> str:
    """``12s ago``; a stamp a little ahead of ``now`` (another machine's clock) is ``0s ago``,
    never ``-0s ago``."""
    try:
        seconds = (now - parse_date(stamp)).total_seconds()
    except (TypeError, ValueError):
        return "-"
    return f"{max(0, round(seconds))}s ago"


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 dead registry entry``, ``2 dead registry entries``, ``0 stale pid files``."""
    return f"{count} {one if count == 1 else (many or one + 's')}"
