"""The ``after`` command line: the group, and the mapping of errors to one line and an exit
code.

The commands live in modules of this package, each importing only
:mod:`after.cli.common` (never this module): :mod:`~after.cli.workers` (After's five
commands), :mod:`~after.cli.server` (``setup``, the embedded server), :mod:`~after.cli.tasks`
(add, show, tasks, runs, cancel, reschedule, jobs), :mod:`~after.cli.audit`,
:mod:`~after.cli.dashboard` and :mod:`~after.cli.replica` (``replicate``). Every
failure is one line on stderr and a meaningful exit code:

==  =====================================================
0   done
1   failed (the message says why)
2   bad usage (a wrong argument or option)
3   the database cannot be reached
4   not found (a task, a worker)
==  =====================================================
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit

import click

from after import config as config_module
from after.cli import audit, dashboard, replica, server, tasks, workers
from after.cli.common import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_USAGE, Failure
from after.couch.server import ServerError
from after.couch.store import (
    NotCouchDB,
    NotFound,
    Store,
    StoreError,
    Unauthorized,
    Unavailable,
    split_credentials,
)
from after.process import ProcessError


class Group(click.Group):
    """Turns the package's typed errors into one-line messages, never tracebacks."""

    def main(self, args=None, *rest, **kwargs):
        if args is None:  # this process's own command line (not a test's CliRunner)
            hide_credentials(sys.argv[1:])
        kwargs["standalone_mode"] = False
        try:
            result = super().main(args, *rest, **kwargs)
        except NO_ARGS as exc:  # plain ``after``: its help, as a request for it
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
            sys.exit(0)
        except BrokenPipeError:  # ``after tasks | head -1``: the reader has all it wanted
            quiet_stdout()
            sys.exit(EXIT_FAILED)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            click.echo(f"after: error: {exc.format_message()}{hint}", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("after: aborted", err=True)
            sys.exit(EXIT_FAILED)
        except Exception as exc:  # a bug of ours: still one line, the traceback on demand
            if os.environ.get("AFTER_DEBUG"):
                raise
            click.echo(f"after: error: unexpected {type(exc).__name__}: {exc} (set "
                       "AFTER_DEBUG=1 for the traceback)", err=True)
            sys.exit(EXIT_FAILED)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx):
        try:
            return self.typed(ctx)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            # A server that is not CouchDB answers in ways nothing here expects (an HTML
            # page where JSON was due): say so, rather than what went wrong because of it.
            if not isinstance(exc, click.ClickException):
                not_couchdb(ctx.obj)
            raise

    def typed(self, ctx):
        """Invoke, with the package's typed errors as one-line failures."""
        try:
            return super().invoke(ctx)
        except Unavailable as exc:
            obj = ctx.obj if isinstance(ctx.obj, config_module.Config) else None
            message = str(exc)
            if not message.startswith("cannot reach"):
                message = f"{obj.safe_url if obj else 'the database'}: {message}"
            hint = " (`after server start` runs the embedded one)" if obj is not None and \
                is_local(obj) else ""
            raise Failure(f"{message}; is it running?{hint}", EXIT_UNAVAILABLE) from None
        except NotCouchDB as exc:
            raise Failure(str(exc), EXIT_UNAVAILABLE) from None
        except NotFound as exc:
            obj = ctx.obj if isinstance(ctx.obj, config_module.Config) else None
            not_couchdb(obj)  # another service's 404 is no missing database
            message = str(exc)
            if obj is not None and message in ("Database does not exist.", "no_db_file"):
                message = (f"the database {obj.db} does not exist at {obj.safe_url} "
                           "(run `after setup`)")
            raise Failure(message, EXIT_NOT_FOUND) from None
        except Unauthorized as exc:
            obj = ctx.obj if isinstance(ctx.obj, config_module.Config) else None
            raise Failure(unauthorized(obj, str(exc))) from None
        except (StoreError, ServerError, ProcessError, config_module.ConfigError) as exc:
            if isinstance(exc, StoreError):
                not_couchdb(ctx.obj)
            raise Failure(str(exc)) from None
        except BrokenPipeError:
            raise  # not a failure to report (see main)
        except OSError as exc:  # a folder, a file or a port of this machine
            where = f" ({exc.filename})" if exc.filename else ""
            raise Failure(f"{exc.strerror or exc}{where}") from None


def is_local(cfg) -> bool:
    """True when the configured URL is one the embedded server can serve (127.0.0.1 or
    localhost): only then is it the server meant, perhaps."""
    return len(cfg.urls) == 1 and urlsplit(cfg.urls[0]).hostname in server.EMBEDDED_HOSTS


def not_couchdb(cfg) -> None:
    """Raise Failure (exit 3) when the configured server is not CouchDB; else nothing (one
    quick request, made only once a command has failed)."""
    if not isinstance(cfg, config_module.Config):
        return
    try:
        with Store(cfg.url, cfg.db, timeout=5.0, retries=0) as store:
            store.check_couchdb()
    except NotCouchDB as exc:
        raise Failure(str(exc), EXIT_UNAVAILABLE) from None
    except Exception:  # unreachable, or anything else: the first error is the one to show
        return


def unauthorized(cfg, reason: str) -> str:
    """The one line for a 401: which server, and where the name and password come from."""
    where = cfg.safe_url if cfg is not None else "the database"
    reason = "" if reason in ("", "HTTP 401") else f" ({reason})"
    if cfg is not None and split_credentials(cfg.urls[0])[1] is None:
        return (f"{where} asks for a name and password{reason}: give them in the URL "
                "(AFTER_COUCHDB_URL=http://NAME:PASSWORD@host:5984) or as login and password "
                "in config.json")
    return (f"{where} refused the name or password{reason}; CouchDB locks a name out for a "
            "few minutes after repeated failures")


# click 8.2 and later raise this for a group called with no arguments; 8.1 prints the help
NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


def quiet_stdout() -> None:
    """Standard output's reader is gone: send what is left of it (buffered, or written at
    exit) nowhere, so that Python does not report the broken pipe again on its way out."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def hide_credentials(args: list[str]) -> None:
    """Run this command again without a password on its command line, where ``ps`` shows it
    to every user for the process's whole life: the URL moves to ``AFTER_COUCHDB_URL``."""
    kept, url = config_module.credentials_out_of_argv(args)
    if url is None:
        return
    environ = {**os.environ, "AFTER_COUCHDB_URL": url}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "after", *kept], environ)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="AFTER_CONFIG", metavar="FILE",
              help="config.json to read [env AFTER_CONFIG]")
@click.option("--url", envvar="AFTER_COUCHDB_URL", metavar="URL",
              help="CouchDB URL, credentials allowed [env AFTER_COUCHDB_URL]")
@click.option("--db", envvar="AFTER_DB", help="tasks database [env AFTER_DB]")
@click.option("--jobs", envvar="AFTER_JOBS", metavar="DIR",
              help="jobs folder [env AFTER_JOBS]")
@click.option("--jobs-module", "jobs_module", envvar="AFTER_JOBS_MODULE", metavar="MODULE",
              help="installed modules of jobs (pkg.jobs), comma separated "
                   "[env AFTER_JOBS_MODULE]")
@click.option("--home", envvar="AFTER_HOME", metavar="DIR",
              help="where pid and log files go [env AFTER_HOME]")
@click.version_option(package_name="after", prog_name="after")
@click.pass_context
def main(ctx, config_path, url, db, jobs, jobs_module, home):
    """Schedule work for later, with CouchDB as the only server."""
    environ = dict(os.environ)
    for key, value in (("AFTER_COUCHDB_URL", url), ("AFTER_DB", db), ("AFTER_JOBS", jobs),
                       ("AFTER_JOBS_MODULE", jobs_module), ("AFTER_HOME", home)):
        if value:
            environ[key] = value
    try:
        ctx.obj = config_module.load(config_path, environ)
    except config_module.BadURL as exc:  # --url or AFTER_COUCHDB_URL: bad usage
        raise Failure(str(exc), EXIT_USAGE) from None
    except config_module.ConfigError as exc:
        raise Failure(str(exc)) from None


for module in (server, workers, tasks, audit, dashboard, replica):
    for command in module.COMMANDS:
        main.add_command(command)
