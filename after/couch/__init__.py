"""CouchDB: the one HTTP client (``store``), its in-memory twin for tests (``memstore``),
the databases and validation ``after setup`` writes (``schema``), the embedded server
(``server``), and the records the scheduler keeps in the database beside the tasks
(caps, pauses, the registry of processes, retention).

Imports the rules, never the worker, the Client or the command line
(tests/unit/test_layout.py).
"""
