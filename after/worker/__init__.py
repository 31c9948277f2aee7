"""The worker: a named process that runs the tasks addressed to its name (``after start``).

Layers, each a module of this package:

- :mod:`.partitions`, :mod:`.decide`, :mod:`.runs`: pure rules (which process runs what,
  what to do about a task or a write's answer, the documents a run writes);
- :mod:`.state`: the loop's state, one object the loop alone owns;
- :mod:`.loop`: the loop (:class:`Worker`), which carries the decisions out;
- the threads it talks to, each doing I/O and posting to the loop: :mod:`.peers`
  (heartbeats, the registry, partition leases), :mod:`.writer` (task writes),
  :mod:`.runner` (job threads, run records), :mod:`.polling`, :mod:`.timer`;
- :mod:`.gates` (calendars and concurrency caps) and :mod:`.stop` (stopping, lapses).
"""

from after.config import Settings
from after.couch.store import Unavailable
from after.worker.loop import Worker

__all__ = ["Settings", "Unavailable", "Worker"]
