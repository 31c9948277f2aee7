"""Who runs which task: the partitions of a worker name, each owned by one process at a time.

A worker name's tasks fall into :data:`PARTITIONS` partitions by a hash of their id
(:func:`partition_of`). Each partition has a lease document in ``<db>_workers``,
``NAME@part:KK``, whose ``owner`` is the process that runs its tasks. A process runs a task
only while it owns the task's partition and its own lease (its heartbeat) is sure: so one
write covers every task of a partition, and nothing is written between the timer and the
job. The ownership rules (DESIGN.md, "Guarantees"):

- a process takes a partition only by writing its lease document with ``_rev``, and only
  when the document says it is free (no owner, an owner found dead, or itself after a lapse
  of its lease): of two processes taking it, one gets a conflict;
- it uses the partition from the moment that write is answered, and while its heartbeat
  lands within a lease (:meth:`after.worker.peers.Peers.sure_until`); past that it lets go
  of every partition and holds off for a lease before taking any again (another process may
  have found it dead and be taking them);
- it gives a partition up (``owner`` null) when another live process should have it, once
  each run of that partition going is written ``running``, so the next owner leaves those
  runs to it.

Which process should own which partition is computed the same way by every process from the
live processes it knows (:func:`assign`): each partition goes to the process that ranks it
highest (rendezvous hashing, so a process joining or leaving moves few partitions), no
process above its share. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: How many partitions a worker name's tasks fall into (the most processes that share the
#: work of one name; every process of every version must agree on it).
PARTITIONS = 64
PART = "part"  # the lease documents' type
INFIX = "@part:"


def partition_of(docid: str) -> int:
    """The partition of the task ``docid`` (CRC-32 of its UTF-8 id: stable everywhere)."""
    return zlib.crc32(docid.encode("utf-8", "surrogatepass")) % PARTITIONS


def part_id(name: str, k: int) -> str:
    return f"{name}{INFIX}{k:02d}"


def part_doc(name: str, k: int, owner: str | None, since: str,
             current: Mapping | None = None) -> dict:
    """The lease document of partition ``k`` naming ``owner`` (None: free), written over
    ``current`` (the version read, whose ``_rev`` the write is checked against)."""
    doc = {"_id": part_id(name, k), "type": PART, "name": name, "partition": k,
           "owner": owner, "since": since}
    if current is not None and current.get("_rev"):
        doc["_rev"] = current["_rev"]
    return doc


def parts_of(docs: Iterable[dict], name: str) -> dict[int, dict]:
    """The lease documents of ``name`` among ``docs`` (a read of its registry), by partition."""
    found = {}
    for doc in docs:
        k = doc.get("partition")
        if doc.get("type") == PART and doc.get("name") == name and isinstance(k, int) \
                and 0 <= k < PARTITIONS and doc.get("_id") == part_id(name, k):
            found[k] = doc
    return found


def _weight(process: str, k: int) -> bytes:
    return hashlib.blake2b(f"{process}|{k}".encode(), digest_size=8).digest()


def assign(live: Iterable[str], count: int = PARTITIONS) -> dict[int, str]:
    """Partition -> the process that should own it, among ``live``: each partition to the
    process that ranks it highest, no process above its share (``count // len(live)``, one
    more for as many as the division leaves over). The same answer in every process that
    knows the same live processes."""
    processes = sorted(set(live))
    if not processes:
        return {}
    share, extra = divmod(count, len(processes))
    ranked = sorted(((_weight(p, k), k, p) for k in range(count) for p in processes),
                    reverse=True)
    owners: dict[int, str] = {}
    load: Counter = Counter()
    for _, k, process in ranked:
        if k in owners or load[process] > share or load[process] == share and not extra:
            continue
        if load[process] == share:
            extra -= 1
        owners[k] = process
        load[process] += 1
    return owners


@dataclass(frozen=True)
class Plan:
    """What a process does about the partitions: take some, give some up, and wait for some
    (its own by :func:`assign`, still held by another live process, which is to give them up)."""

    take: tuple[int, ...] = ()
    give: tuple[int, ...] = ()
    wait: tuple[int, ...] = ()


def free_for(doc: Mapping | None, me: str, dead: Iterable[str]) -> bool:
    """May ``me`` take the partition whose lease document is ``doc``?"""
    if doc is None or doc.get("_deleted"):
        return True
    dead = set(dead)
    owners = [doc.get("owner"), *doc.get("_contested", ())]
    return all(not owner or owner == me or owner in dead for owner in owners)


def plan(me: str, docs: Mapping[int, dict], live: Iterable[str], dead: Iterable[str],
         owned: Iterable[int], count: int = PARTITIONS) -> Plan:
    """The partitions ``me`` should take (its own by :func:`assign`, free) and give up (those
    it owns, or whose lease names it, that another live process should have)."""
    live = set(live) | {me}
    dead = set(dead) - {me}
    owned = set(owned)
    owners = assign(live, count)
    mine = [k for k, process in sorted(owners.items()) if process == me and k not in owned]
    take = tuple(k for k in mine if free_for(docs.get(k), me, dead))
    # its own in memory, and those whose lease still names it (after a lapse of its lease
    # it let go of them in memory only): the process that should own them cannot take them
    # from a live owner
    named = {k for k, doc in docs.items()
             if doc is not None and not doc.get("_deleted") and doc.get("owner") == me}
    give = tuple(k for k in sorted(owned | named) if owners.get(k, me) != me)
    return Plan(take, give, tuple(k for k in mine if k not in take))


# -- conflicts on a cluster ------------------------------------------------------------------
#
# A CouchDB cluster may keep two versions of a lease document side by side: two processes
# wrote it through two nodes, one answered 201 (a quorum of copies took it), the other 202
# (fewer did; its version is stored all the same, as a conflicting branch). The rules:
#
# - a write answered 201 that names this process, read back from every copy, is its own if
#   no other live version names a process that may be using the partition; otherwise it
#   yields: two 201s need a quorum each, so of two processes each sees the other's, and at
#   most one goes on (both yield when both see each other);
# - a write answered 202 is never its writer's: it is buried at once (:func:`tombstone`);
# - a version of the document no process may be using (no owner, a dead owner, or this
#   process in a version it does not know as its own) is buried by whoever reads it beside
#   another, so that the document comes back to one version; a partition is free only if
#   every live version of its lease document is.


def winner(leaves: Iterable[Mapping]) -> Mapping | None:
    """CouchDB's winning revision among live ``leaves``: the longest history, then the
    highest revision id (the same answer on every node)."""
    live = [leaf for leaf in leaves if not leaf.get("_deleted")]
    return max(live, key=lambda leaf: (_position(leaf["_rev"]), leaf["_rev"]), default=None)


def _position(rev: str) -> int:
    head, _, _ = rev.partition("-")
    return int(head) if head.isdigit() else 0


def tombstone(leaf: Mapping) -> dict:
    """A deleted child of the revision ``leaf``, to be written with ``new_edits=false``: it
    lands on every copy whatever that copy has (an interactive delete would be refused by a
    copy the branch has not reached yet), and a write of the same branch still in flight
    finds it no longer a leaf. Its revision id is derived from ``leaf``'s, so processes
    burying the same version at once write the same revision."""
    rev = leaf["_rev"]
    position, _, parent = rev.partition("-")
    child = hashlib.blake2b(f"{rev}:buried".encode(), digest_size=16).hexdigest()
    return {"_id": leaf["_id"], "_rev": f"{int(position) + 1}-{child}", "_deleted": True,
            "_revisions": {"start": int(position) + 1, "ids": [child, parent]}}


def claims(leaf: Mapping, me: str, mine: Iterable[str], dead: Iterable[str]) -> bool:
    """May the process a live version of a lease document names be using the partition?
    Not with no owner, not a dead owner, not ``me`` in a revision not among ``mine`` (the
    revisions of its own writes it confirmed)."""
    owner = leaf.get("owner")
    if leaf.get("_deleted") or not isinstance(owner, str) or not owner:
        return False
    if owner == me:
        return leaf.get("_rev") in set(mine)
    return owner not in set(dead)


@dataclass(frozen=True)
class Settled:
    """A conflicted lease document, once its versions are weighed."""

    doc: dict | None  # the version to go by (None: no live version left)
    buried: tuple[dict, ...] = ()  # tombstones to write (new_edits=false)
    owners: tuple[str, ...] = ()  # the owners of the live versions kept (two: contested)


def settle(leaves: Iterable[Mapping], me: str, mine: Iterable[str],
           dead: Iterable[str]) -> Settled:
    """The versions of a lease document to keep (those whose owners may be using the
    partition; when none does, CouchDB's winner) and those to bury. Kept with another, a
    version is contested: the partition is free only if every owner kept is
    (:func:`free_for` reads ``_contested``)."""
    live = [dict(leaf) for leaf in leaves if not leaf.get("_deleted")]
    mine, dead = set(mine), set(dead)
    kept = [leaf for leaf in live if claims(leaf, me, mine, dead)]
    if not kept and live:
        kept = [dict(winner(live))]
    kept_revs = {leaf["_rev"] for leaf in kept}
    buried = tuple(tombstone(leaf) for leaf in live if leaf["_rev"] not in kept_revs)
    if not kept:
        return Settled(None, buried)
    doc = dict(winner(kept))
    owners = tuple(sorted({leaf.get("owner") for leaf in kept
                           if isinstance(leaf.get("owner"), str)}))
    doc.pop("_conflicts", None)
    if len(kept) > 1:
        doc["_contested"] = owners
    return Settled(doc, buried, owners)


def taken(doc: Mapping, leaves: Iterable[Mapping], me: str, dead: Iterable[str]
          ) -> tuple[bool, tuple[dict, ...]]:
    """After a write answered 201 took the partition (``doc``, with its new ``_rev``), and
    its leaves were read back from every copy: is it this process's, and what to bury (the
    others' versions no process may be using; or, when another may be, its own)."""
    rev = doc["_rev"]
    others = [leaf for leaf in leaves if not leaf.get("_deleted") and leaf.get("_rev") != rev]
    if any(claims(leaf, me, (), dead) for leaf in others):
        return False, (tombstone(doc),)
    return True, tuple(tombstone(leaf) for leaf in others)
