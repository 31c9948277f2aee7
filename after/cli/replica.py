"""``after replicate NAME --central URL``: serve a worker name at a site whose CouchDB
replicates with a central one (:mod:`after.replica`). Run against the site's CouchDB
(``AFTER_COUCHDB_URL``): it sets the site's database up, and writes into the site's
``_replicator`` the continuous, filtered replications of the name's tasks, run records and
heartbeats. ``--status`` says how they are doing, ``--stop`` removes them (the site then goes
on alone; setting them up again resumes from where they stopped). Thin: each calls a method
of :class:`after.client.Client` (``replicate``, ``replication``, ``stop_replication``), which
the dashboard calls too.
"""

from __future__ import annotations

import click

from after import replica
from after.cli.common import Failure, echo_table, worker_name
from after.client import Client
from after.config import Config


@click.command()
@click.argument("name", callback=lambda ctx, param, value: worker_name(value))
@click.option("--central", metavar="URL", envvar="AFTER_CENTRAL_URL",
              help="the central CouchDB, as the site's CouchDB reaches it (credentials "
                   "allowed; better in the environment) [env AFTER_CENTRAL_URL]")
@click.option("--central-db", metavar="DB",
              help="the tasks database at the centre [default: the site's]")
@click.option("--site", metavar="URL",
              help="the site's CouchDB as that server reaches itself [default: the "
                   "configured URL]")
@click.option("--status", "show_status", is_flag=True,
              help="say how the replications are doing")
@click.option("--stop", is_flag=True,
              help="remove the replications: the site goes on alone")
@click.pass_obj
def replicate(cfg: Config, name, central, central_db, site, show_status, stop):
    """Replicate the tasks of worker NAME, its run records and heartbeats, between this
    CouchDB (the site's, where NAME's processes run) and a central one.

    The tasks of NAME posted centrally run here on time, also while the link is down; the
    results and run records flow back when it returns. Serve NAME from this side only."""
    if show_status and stop:
        raise click.UsageError("--status and --stop: one at a time")
    if not (show_status or stop):
        if not central:
            raise click.UsageError("Missing option '--central' (the central CouchDB's URL, "
                                   "or AFTER_CENTRAL_URL)")
        for option, url in (("--central", central), ("--site", site or cfg.url)):
            try:
                replica.endpoint(url)
            except replica.ReplicaError as exc:
                raise click.BadParameter(str(exc), param_hint=f"'{option}'") from None
    with Client(cfg.url, cfg.db, retries=2, jobs=False) as client:
        try:
            if stop:
                removed = client.stop_replication(name)
            elif show_status:
                rows = client.replication(name)
            else:
                done = client.replicate(name, central, central_db=central_db, site=site)
        except replica.ReplicaError as exc:
            raise Failure(str(exc)) from None
    if stop:
        click.echo(f"{name}: {removed} replication{'s' if removed != 1 else ''} with the "
                   "centre removed; the site goes on alone" if removed else
                   f"{name}: no replication with the centre to remove")
    elif show_status:
        if all(row["state"] is None for row in rows):
            raise Failure(f"{name}: no replication with the centre (`after replicate {name} "
                          "--central URL` sets it up)")
        echo_table([("ROLE", "STATE", "WRITTEN", "FROM -> TO"), *(
            (row["role"], "not set up", "-", "-") if row["state"] is None else
            (row["role"], row["state"], "-" if row["written"] is None else str(row["written"]),
             f"{row['source']} -> {row['target']}"
             + (f"; {row['error']}" if row["error"] else "")) for row in rows)])
    else:
        if done["warning"]:
            click.echo(f"warning: {done['warning']}", err=True)
        click.echo(f"{name}: replicating with {done['central']} (its tasks, run records and "
                   "heartbeats; serve it from this side only)")
        for row in done["replications"]:
            click.echo(f"  {row['role']}: {row['source']} -> {row['target']} ({row['done']})")


COMMANDS = (replicate,)
