"""A long job that stops when its task is canceled while it runs."""


def wait(task, seconds):
    """Wait up to ``seconds``; a ``cancel`` written meanwhile ends the wait at once."""
    if task.canceled.wait(float(seconds)):
        return "canceled"
    return seconds
