"""What must not leave the process in a span: credentials, capabilities, values.

* ``redact``: passwords in connection URIs and ``password=`` / ``token=`` query values;
  always applied.
* ``scrub_url_path`` / ``scrub_url_query``: capability ids in URLs (Zaqar's claim ids:
  whoever knows one can delete the claimed messages) become ``REDACTED``, as the
  semantic conventions ask for sensitive parts of ``url.path`` and ``url.query``;
  applied unless ``[profiler] trace_message_content`` is on.
* ``redact_url``: the URL of an outgoing call (a webhook subscriber, a mailto address)
  for ``url.full``: user, password, query values, fragment, token-like path segments
  and email local parts become ``REDACTED``; always applied.
* ``scrub_error_text``: an exception message may echo input (a Redis error quotes the
  arguments of an unknown command, a MongoDB duplicate key error the key, SQLAlchemy
  appends the parameters): only its first line is kept (SQLAlchemy puts the statement
  and its parameters on the next ones) and quoted literals become ``'?'``; applied
  unless the operator opted in.
"""

from __future__ import annotations

import re
from urllib import parse

MAX_VALUE = 1024
REDACTED = "***"
URL_REDACTED = "REDACTED"  # the semantic conventions' placeholder for url.path / url.query

# scheme://user:password@host -> scheme://user:***@host; password=... in URI queries
_URI_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^\s:/@'\"]*):[^\s@/'\"]+@")
_QUERY_SECRET = re.compile(
    r"(?P<head>(?:^|[?&])(?:password|passwd|pwd|secret|token)=)[^&\s'\"]*", re.I
)
# URL paths that end in a capability id (group 1 is kept), query keys whose value is one
CAPABILITY_PATHS = (re.compile(r"(/queues/[^/]+/claims/)[^/]+"),)
CAPABILITY_QUERY_KEYS = frozenset({"claim_id"})
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def cap(text: str, limit: int = MAX_VALUE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def redact(text: str) -> str:
    """Hide credentials in connection URIs (``redis://:pw@h``, ``?password=pw``)."""
    if "@" in text:
        text = _URI_PASSWORD.sub(rf"\g<head>:{REDACTED}@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(rf"\g<head>{REDACTED}", text)
    return text


def scrub_url_path(path: str) -> str:
    """``/v2/queues/q/claims/<id>`` -> ``/v2/queues/q/claims/REDACTED``."""
    for pattern in CAPABILITY_PATHS:
        path = pattern.sub(rf"\g<1>{URL_REDACTED}", path)
    return path


def scrub_url_query(query: str) -> str:
    """``claim_id=<id>&x=1`` -> ``claim_id=REDACTED&x=1`` (order and other keys kept)."""
    if not any(key in query for key in CAPABILITY_QUERY_KEYS):
        return query
    pairs = query.split("&")
    for index, pair in enumerate(pairs):
        key, sep, _ = pair.partition("=")
        if sep and key in CAPABILITY_QUERY_KEYS:
            pairs[index] = f"{key}={URL_REDACTED}"
    return "&".join(pairs)


def scrub_url(url: str) -> str:
    """Both of the above on a full URL (``scheme://host/path?query``)."""
    head, sep, query = url.partition("?")
    scheme, authority, path = "", "", head
    if "://" in head:
        scheme, _, rest = head.partition("://")
        authority, slash, path = rest.partition("/")
        path = slash + path
        scheme += "://"
    return f"{scheme}{authority}{scrub_url_path(path)}{sep}{scrub_url_query(query)}"


def scrub_error_text(text: str) -> str:
    """An exception message without the values it may echo (see the module docstring)."""
    first = text.strip().split("\n", 1)[0]  # SQLAlchemy: "[SQL: ...]", "[parameters: ...]" follow
    return cap(redact(_QUOTED.sub("'?'", first)))


def _redacted_query(query: str) -> str:
    return "&".join(
        f"{part.split('=', 1)[0]}={URL_REDACTED}" if "=" in part else URL_REDACTED
        for part in query.split("&")
    )


_UUID = re.compile(r"^[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-.~]{16,}$")


def _secret_like(segment: str) -> bool:
    """A path segment that looks like a token (``/services/T0/B0/XXXXXXXX...`` webhook
    URLs carry their secret in the path): 16+ token characters with letters and digits,
    not a dashed UUID (resource ids are not secrets)."""
    return (
        bool(_TOKEN.match(segment))
        and not _UUID.match(segment)
        and any(c.isdigit() for c in segment)
        and any(c.isalpha() for c in segment)
    )


def _redacted_path(path: str) -> str:
    return "/".join(URL_REDACTED if _secret_like(part) else part for part in path.split("/"))


def _redacted_mailboxes(path: str) -> str:
    """``alice@example.com,bob@b.org`` -> ``REDACTED@example.com,REDACTED@b.org``."""
    boxes = []
    for box in path.split(","):
        domain = box.rpartition("@")[2] if "@" in box else ""
        boxes.append(f"{URL_REDACTED}@{domain}" if domain else URL_REDACTED)
    return ",".join(boxes)


def redact_url(url: str) -> str:
    """A URL for ``url.full`` without secrets: user and password, every query value,
    the fragment, path segments that look like tokens (16+ characters, letters and
    digits, not a UUID) and, for ``mailto:``, the local part of each address become
    ``REDACTED`` (a query part without ``=`` too); scheme, host, port, the rest of
    the path and query keys stay.

    ``https://u:pw@hooks.example.com/in?token=abc`` ->
    ``https://REDACTED:REDACTED@hooks.example.com/in?token=REDACTED``.
    Anything that does not parse as a URL is replaced whole.
    """
    try:
        parts = parse.urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return URL_REDACTED
    if not parts.scheme:
        return URL_REDACTED
    if parts.scheme.lower() == "mailto":
        text = f"mailto:{_redacted_mailboxes(parts.path)}"
        return text + (f"?{_redacted_query(parts.query)}" if parts.query else "")
    netloc = host or ""
    if ":" in netloc:  # IPv6 literal
        netloc = f"[{netloc}]"
    if port is not None:
        netloc += f":{port}"
    if parts.username is not None or parts.password is not None:
        userinfo = URL_REDACTED if parts.password is None else f"{URL_REDACTED}:{URL_REDACTED}"
        netloc = f"{userinfo}@{netloc}"
    query = _redacted_query(parts.query) if parts.query else ""
    fragment = URL_REDACTED if parts.fragment else ""
    path = _redacted_path(parts.path)
    return parse.urlunsplit((parts.scheme, netloc, path, query, fragment))
