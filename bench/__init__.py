"""Benchmarks of ``after`` on the servers it runs on, each started for the run and stopped by
pid: pouchdb-server in memory, an Apache CouchDB 3 single node and a 3-node CouchDB cluster
(from ``../shared/couchdb``).

``python -m bench`` (``make bench``) runs every measurement of issue 14 on each server and
prints each figure beside its goal; ``--quick`` runs smaller versions, ``--servers`` and
``--only`` narrow it. Every worker is a fresh ``after start`` process (the real thing,
default settings), timed from its spawn and killed by its pid when its measurement ends.
One module per measurement:

- :mod:`bench.raw`: the server's own ``_bulk_docs`` write rate, the baseline of the ratios;
- :mod:`bench.lateness`: actual start minus ``date``: 500 due at one instant (and the same
  burst on APScheduler 3, :mod:`bench.apsched`, in the same run), single sub-second tasks;
- :mod:`bench.throughput`: the drain of 2,000 due tasks posted before the workers start,
  with 1 and 3 processes;
- :mod:`bench.feed`: from a PUT to the worker holding the task;
- :mod:`bench.startup`: time to the first due run and RSS with 50,000 future tasks whose view
  was never queried, and a task posted meanwhile.
"""
