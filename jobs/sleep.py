"""A job that takes its time, for timeout and graceful-stop tests."""

import time


def sleep(task, seconds):
    """Sleep for the given number of seconds, then return that number."""
    time.sleep(float(seconds))
    return seconds
