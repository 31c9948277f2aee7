"""The rules: what a task document means, its dates and its schedules, as pure functions.

Nothing here speaks to a server or logs, and no rule reads the clock: each takes the document
and ``now`` and returns data (``dates.utcnow`` is the clock the layers above read). The
layers above (``after.couch``, ``after.worker``, the Client and the command line) import
these; these import nothing of them (tests/unit/test_layout.py keeps it so).
"""
