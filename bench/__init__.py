"""Benchmarks of ``after`` against an in-memory pouchdb-server started for the run.

``python -m bench`` (``make bench``) runs every measurement of issue 7 and prints each figure
beside its goal; ``--quick`` runs smaller versions. One module per measurement:

- :mod:`bench.raw`: the server's own ``_bulk_docs`` write rate, the baseline;
- :mod:`bench.throughput`: no-op tasks due now, run to ``done`` by 1 and by 3 processes;
- :mod:`bench.lateness`: actual start minus ``date``, 500 due at once and single tasks;
- :mod:`bench.feed`: from a PUT to the worker holding the task;
- :mod:`bench.startup`: RSS and time to the first due run with 50,000 future tasks.

Workers run as ``after start NAME`` subprocesses (the real thing, default settings), each
killed by its pid when its measurement ends; the server is stopped by its pid at the end.
"""
