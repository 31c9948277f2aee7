"""A job that does nothing, for benchmarks."""


def noop(task, *args, **kwargs):
    """Do nothing and return None (for benchmarks)."""
    return None
