"""Example job: ``{"job": {"name": "hello", "arguments": ["Ada"]}}``."""

import logging

log = logging.getLogger(__name__)


def hello(task, name="world"):
    """Greet someone: returns (and logs) "Hello, <name>!"."""
    greeting = f"Hello, {name}!"
    log.info("%s (task %s)", greeting, task.id)
    print(greeting, flush=True)
    return greeting
