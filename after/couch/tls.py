"""One TLS context per process, shared by every HTTP client ``after`` makes.

``httpx.Client()`` builds a context of its own unless given one, and building one loads the
CA bundle: about 25 ms of CPU each time, for a plain ``http://`` server too. A worker makes
a client per node and one for its feed, and the ``http`` job one per run, so that was most of
a worker's start after its imports, and most of a short ``http`` run. A context is safe to
share between clients and threads; made once, on first use, as httpx would make it (the
``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` variables are honoured).
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def context() -> ssl.SSLContext:
    """The process's verifying TLS context (certificates checked, host names matched)."""
    return httpx.create_ssl_context()
