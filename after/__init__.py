"""after: schedule work for later, with CouchDB as the only server."""

__version__ = "0.1.0"
