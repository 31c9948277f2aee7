"""A job that always fails, for error and retry tests."""


def fail(task, message="failed on purpose"):
    """Raise RuntimeError(message), every time."""
    raise RuntimeError(message)
