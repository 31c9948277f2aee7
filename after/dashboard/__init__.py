"""The web dashboard: its static page (the ``.js``, ``.html`` and ``.css`` files here),
its views in the database (``design``) and the server ``after dashboard`` runs (``server``).
"""
