"""``after replicate NAME --central URL``: serve a worker name at a site whose CouchDB
replicates with a central one (:mod:`after.replica`). Run against the site's CouchDB
(``AFTER_COUCHDB_URL``): it sets the site's database up, and writes into the site's
``_replicator`` the continuous, filtered replications of the name's tasks, run records and
heartbeats. ``--status`` says how they are doing, ``--stop`` removes them (the site then goes
on alone; setting them up again resumes from where they stopped).
"""

from __future__ import annotations

from urllib.parse import quote

import click

from after import replica
from after.cli.common import Failure, echo_table, open_store, worker_name
from after.config import Config
from after.couch import schema
from after.couch.store import Conflict, NotFound, Store, StoreError, Unavailable, describe_error
from after.rules.redact import redact_text


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
    with open_store(cfg) as store:
        if stop:
            removed = _stop(store, cfg.db, name)
            click.echo(f"{name}: {removed} replication{'s' if removed != 1 else ''} with the "
                       "centre removed; the site goes on alone" if removed else
                       f"{name}: no replication with the centre to remove")
            return
        if not store.replicates():
            raise Failure(f"{store.safe_url} runs no replications ({_server(store)}): the "
                          "site's CouchDB must be Apache CouchDB")
        if show_status:
            _status(store, cfg.db, name)
            return
        docs = replica.replications(name, cfg.db, site or cfg.url, central, central_db)
        far = replica.endpoint(central)
        _check_central(far, central_db or cfg.db)
        schema.setup(store)
        if not store.database_exists(replica.REPLICATOR):
            store.create_database(replica.REPLICATOR)
        rows = [(replica.describe(doc), _write(store, doc)) for doc in docs]
    click.echo(f"{name}: replicating with {far.safe}/{central_db or cfg.db} (its tasks, run "
               "records and heartbeats; serve it from this side only)")
    for what, done in rows:
        click.echo(f"  {what} ({done})")


def _server(store: Store) -> str:
    info = store.info()
    vendor = (info.get("vendor") or {}).get("name") if isinstance(info, dict) else None
    return f"{vendor or 'a server'} {info.get('version', '')}".strip()


def _write(store: Store, doc: dict) -> str:
    """Write one replication document unless it is there as wanted; what was done."""
    for _ in range(3):
        current = store.get_or_none(doc["_id"], db=replica.REPLICATOR)
        if current is not None and replica.same(current, doc):
            return "unchanged"
        wanted = dict(doc)
        if current is not None:
            wanted["_rev"] = current["_rev"]
        try:
            store.put(wanted, db=replica.REPLICATOR)
            return "written" if current is None else "updated"
        except Conflict:  # the replicator wrote its state meanwhile: read it again
            continue
    raise Failure(f"replication {doc['_id']}: gave up after repeated conflicting writes")


def _check_central(far: replica.Endpoint, db: str) -> None:
    """The central database must be set up (its validator, views and indexes); a centre
    that does not answer now is no error: the replications start when it does."""
    url = far.url if far.user is None else far.url.replace(
        "://", f"://{_quoted(far.user)}:{_quoted(far.password or '')}@", 1)
    try:
        with Store(url, db, timeout=10.0, retries=0) as central:
            if not schema.is_set_up(central):
                raise Failure(f"the central database {db} at {far.safe} is not set up: run "
                              "`after setup` against it first")
    except Unavailable as exc:
        click.echo(f"warning: the centre does not answer now ({describe_error(exc)}): the "
                   "replications start when it does", err=True)
    except StoreError as exc:
        if isinstance(exc, NotFound):
            raise Failure(f"the central database {db} at {far.safe} does not exist: run "
                          "`after setup` against it first") from None
        raise Failure(f"the centre {far.safe}: {describe_error(exc)}") from None


def _quoted(text: str) -> str:
    return quote(text, safe="")


def _stop(store: Store, db: str, name: str) -> int:
    removed = 0
    for role in replica.ROLES:
        docid = replica.doc_id(db, name, role)
        current = store.get_or_none(docid, db=replica.REPLICATOR) \
            if store.database_exists(replica.REPLICATOR) else None
        if current is not None:
            try:
                store.delete(docid, current["_rev"], db=replica.REPLICATOR)
                removed += 1
            except Conflict:  # its state written meanwhile: once more
                current = store.get(docid, db=replica.REPLICATOR)
                store.delete(docid, current["_rev"], db=replica.REPLICATOR)
                removed += 1
    return removed


def _status(store: Store, db: str, name: str) -> None:
    rows = []
    for role in replica.ROLES:
        docid = replica.doc_id(db, name, role)
        doc = store.get_or_none(docid, db=replica.REPLICATOR) \
            if store.database_exists(replica.REPLICATOR) else None
        if doc is None:
            rows.append((role, "not set up", "-", "-"))
            continue
        state = store.replication_state(docid) or {}
        info = state.get("info") or {}
        error = info.get("error") if isinstance(info, dict) else None
        rows.append((role, state.get("state") or doc.get("_replication_state") or "pending",
                     str(info.get("docs_written", "-")) if isinstance(info, dict) else "-",
                     replica.describe(doc).split(": ", 1)[1]
                     + (f"; {redact_text(str(error))}" if error else "")))
    if all(row[1] == "not set up" for row in rows):
        raise Failure(f"{name}: no replication with the centre (`after replicate {name} "
                      "--central URL` sets it up)")
    echo_table([("ROLE", "STATE", "WRITTEN", "FROM -> TO"), *rows])


COMMANDS = (replicate,)
