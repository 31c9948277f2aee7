"""Reading a task back from every copy before acting on a write the cluster may not hold.

On a CouchDB cluster a write can be accepted by fewer nodes than the quorum (202), and another
process's write through another node reaches this process's node late under load. Two reads
of every leaf (``open_revs=all``, so no branch hides behind CouchDB's winner) guard the two
moments a stale copy could make a task run twice:

- :meth:`Confirm.unclaimed`: before a deferred claim, is the revision seen still the one live
  revision? Claiming on a stale copy made a second branch (6 of 300 tasks ran twice);
- :meth:`Confirm.started`: after a start answered 202 (or an overlap-allow start answered
  after this process's lease may have lapsed), is our revision the only live one? If not,
  the task is decided again on the cluster's winner, and a process whose revision lost
  leaves it alone. (Other starts past a lapse are handed back, not read back: see
  Worker._lapsed.)

Either way, a read that fails means "not now": the next poll decides the task again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .store import StoreError, describe_error, winner

log = logging.getLogger("after.worker")


class Confirm:
    def __init__(self, store, recheck: Callable[[dict], None], poll: Callable[[], None]):
        self.store = store
        self.recheck = recheck  # decide again on this version
        self.poll = poll  # decide again from what the database holds, at the next poll

    def alone(self, doc: dict, doing: str) -> tuple[bool, dict | None]:
        """(is ``doc``'s revision the only live one on every copy, the winner read back)."""
        try:
            current = winner(self.store.leaves(doc["_id"]))
        except StoreError as exc:
            log.warning("cannot read %s back before %s: %s", doc["_id"], doing,
                        describe_error(exc))
            return False, None
        return (current is not None and current.get("_rev") == doc["_rev"]
                and not current.get("_conflicts")), current

    def unclaimed(self, doc: dict) -> bool:
        """Before a deferred claim on a cluster; otherwise the fresh revision is decided
        again instead."""
        ok, current = self.alone(doc, "claiming it")
        if not ok and current is not None:
            self.recheck(current)
        return ok

    def started(self, doc: dict) -> bool:
        """After a start answered 202: run only if our revision is the only live one;
        otherwise decide again on the cluster's winner (with the other leaves as its
        conflicts, resolved first)."""
        ok, current = self.alone(doc, "running it")
        if ok:
            log.info("the start of %s was confirmed by reading every copy back", doc["_id"])
            return True
        log.warning("the start of %s was not confirmed by reading it back: deciding again",
                    doc["_id"])
        if current is not None:  # another branch with our revision's number
            self.recheck(current)  # may be seen first
        else:
            self.poll()
        return False
