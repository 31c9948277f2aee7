"""Task management commands of the ``after`` command line (add, show, tasks, cancel, ...)."""
