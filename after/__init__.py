"""after: schedule work for later, with CouchDB as the only server."""

__version__ = "0.1.0"


def __getattr__(name):  # `from after import Client` without importing httpx for every use
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module 'after' has no attribute {name!r}")
