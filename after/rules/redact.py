"""Keep secrets out of task documents, run records and logs.

One rule decides what a secret is: a name (dict key, header, query parameter) matching
``SECRET_NAME``. Its value is replaced by ``"***"``. URLs lose the password of their
userinfo and the values of secret-named query (and fragment) parameters.

    >>> redact_url("https://bob:hunter2@api.example.com/x?token=abc&page=2")
    'https://bob:***@api.example.com/x?token=***&page=2'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

MASK = "***"

#: Words that mark a name as secret wherever they appear in it ...
SECRET_WORDS = (
    "password", "passwd", "passphrase", "secret", "token", "credential", "apikey",
    "privatekey", "session", "cookie", "signature",
)
#: ... and short words that mark it only as a whole part (``api_key``, ``X-Api-Key`` and
#: ``key`` are secret, ``monkey`` is not; ``auth`` covers ``authorization``, not ``author``).
SECRET_PARTS = ("pwd", "pass", "key", "sig", "jwt", "bearer", "auth")

#: The single rule, applied to a name normalised by ``_normalise`` (lower case, camelCase
#: split with ``_``). Used for dict keys, headers and query parameters alike.
SECRET_NAME = re.compile(
    r"(?:" + "|".join(SECRET_WORDS) + r")"
    r"|(?:^|[-_. ])(?:" + "|".join(p for p in SECRET_PARTS if p != "auth") + r")(?=$|[-_. ])"
    r"|(?:^|[-_. ])auth(?!ors?(?:$|[-_. ]))[a-z]*(?=$|[-_. ])"
)

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
#: A URL inside free text (an exception message, a log line).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
#: Where a comma-separated list of URLs (the nodes of a cluster) starts its next URL.
_NEXT_URL = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")
#: Anything shaped like ``user:password@`` after a start, a space or a slash, in a string
#: that is no well-formed URL (``admin:pw@host``, ``http//admin:pw@host``, ``http:/a:pw@h``).
#: The password may hold anything but a space or an ``@`` (and does not start with ``//``,
#: which is ``scheme://``): over-masking beats a leak.
_USERINFO = re.compile(r"(^|[\s/])([^\s/@:]*):(?!//)[^\s@]*@")


def _normalise(name: str) -> str:
    return _CAMEL.sub(r"\1_\2", name).lower()


def is_secret_name(name: Any) -> bool:
    """True if ``name`` (a key, header or parameter name) names a secret."""
    return isinstance(name, str) and SECRET_NAME.search(_normalise(name)) is not None


def _redact_params(text: str) -> str:
    """Mask secret-named values in ``a=1&token=x``, leaving every other byte as it was."""
    if "=" not in text:
        return text
    pieces = []
    for piece in text.split("&"):
        name, sep, _value = piece.partition("=")
        if sep and is_secret_name(unquote_plus(name)):
            piece = f"{name}={MASK}"
        pieces.append(piece)
    return "&".join(pieces)


def redact_url(url: str) -> str:
    """``url`` with the userinfo password and secret-named parameters replaced by ``***``.

    The user name is kept (it helps to tell which account was used). Never raises: a
    string that does not parse as a URL still loses anything shaped like ``//user:pass@``.
    """
    if not isinstance(url, str):
        return url
    several = _NEXT_URL.split(url)
    if len(several) > 1:  # a comma-separated list of node URLs
        return ",".join(redact_url(part) for part in several)
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if not netloc:  # no //host: rebuilding could turn "ws:pw@h" into "ws:///pw@h"
            return _mask_userinfo(url)
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, colon, _password = userinfo.partition(":")
            netloc = f"{user}:{MASK}@{hostport}" if colon else netloc
        url = urlunsplit((
            parts.scheme, netloc, parts.path,
            _redact_params(parts.query), _redact_params(parts.fragment),
        ))
    except ValueError:
        pass
    return _mask_userinfo(url)


def _mask_userinfo(text: str) -> str:
    """Whatever still looks like ``user:password@`` loses the password (a mistyped URL)."""
    if "@" not in text:
        return text
    return _USERINFO.sub(rf"\1\2:{MASK}@", text)


def redact_text(text: str) -> str:
    """Free text (an error message) with every URL in it passed through ``redact_url``."""
    if not isinstance(text, str):
        return text
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    return _mask_userinfo(text)


def redact_headers(headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> dict:
    """A plain dict of ``headers`` with secret ones (Authorization, Cookie, X-Api-Key...)
    masked. Accepts a mapping (including ``httpx.Headers``), pairs, or None."""
    if headers is None:
        return {}
    items = headers.items() if hasattr(headers, "items") else headers
    return {
        str(name): MASK if is_secret_name(str(name)) else redact_text(str(value))
        for name, value in items
    }


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (JSON-like: dicts, lists, strings...) safe to record or log.

    Values under secret-named keys become ``***`` (whatever their type, except None);
    strings anywhere have the URLs in them redacted. Other values are returned as is.
    """
    if isinstance(obj, Mapping):
        return {
            key: MASK if is_secret_name(key) and value is not None else redact(value)
            for key, value in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [redact(item) for item in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


class RedactingFilter:
    """A logging filter that redacts URLs (credentials, secret query parameters) in records.

    Attached to the ``httpx`` logger, whose INFO lines name every URL it requests."""

    def filter(self, record) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging to report
            return True
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True
