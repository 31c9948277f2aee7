"""Chaos runs on a 3-node CouchDB cluster, checked Jepsen's way (issue 24, item 3).

- :mod:`.history`: the append-only history (the ``history`` job's runs, the faults, the
  users' cancels and reschedules), read back;
- :mod:`.checker`: the history, the tasks and the run records in, a verdict per occurrence
  out (pure);
- :mod:`.schedule`: a random schedule of tasks and faults from a seed (pure: a seed replays
  it);
- :mod:`.driver`: plays a schedule on a cluster with a pool of worker processes, heals
  everything, lets it settle and runs the checker; ``python -m tests.chaos`` (``make
  chaos``) runs seeds for as long as it is given.
"""
