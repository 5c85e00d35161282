"""OSProfiler notification -> span name, kind and attributes (OTel semantic conventions).

OSProfiler ``info`` shapes and what they become:

=============  ======  ==================================================
info key       kind    name / attributes
=============  ======  ==================================================
``request``    SERVER  ``GET`` or ``GET /v2/queues/{queue_name}`` when a route is
                       known; ``http.request.method``, ``url.path``, ``url.query``,
                       ``url.scheme``, ``http.route``; at stop
                       ``http.response.status_code``
``requests``   CLIENT  ``GET``; ``url.full``, ``server.address``, ``server.port``
``db``         CLIENT  ``SELECT``...; ``db.operation.name``, ``db.query.text``
                       (literals replaced by ``?`` unless full capture is on)
``function``   INTERNAL ``<osprofiler name> <Class.method>``; ``code.function.name``
``websocket``  SERVER  ``websocket message_post``; ``messaging.*``, ``zaqar.project_id``;
                       at stop ``zaqar.response.status``
anything else  INTERNAL the OSProfiler name
=============  ======  ==================================================

Every span also gets ``osprofiler.name``, ``osprofiler.id`` (the element UUID),
``osprofiler.base_id`` and ``host.name``. Other scalar info values are kept
as ``osprofiler.<key>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib import parse

from opentelemetry.trace import SpanKind

MAX_VALUE = 1024
_SQL_LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")
# scheme://user:password@host -> scheme://user:***@host; password=... in URI queries
_URI_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^\s:/@'\"]*):[^\s@/'\"]+@")
_QUERY_SECRET = re.compile(
    r"(?P<head>(?:^|[?&])(?:password|passwd|pwd|secret|token)=)[^&\s'\"]*", re.I
)
REDACTED = "***"


def redact(text: str) -> str:
    """Hide credentials in connection URIs (``redis://:pw@h``, ``?password=pw``)."""
    if "@" in text:
        text = _URI_PASSWORD.sub(rf"\g<head>:{REDACTED}@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(rf"\g<head>{REDACTED}", text)
    return text


URL_REDACTED = "REDACTED"  # the semantic conventions' word for url.full


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


_KNOWN = {"request", "requests", "db", "function", "websocket", "host", "etype", "message"}

AttributeValue = str | bool | int | float


def _text(value: Any, limit: int = MAX_VALUE) -> str:
    text = redact(value if isinstance(value, str) else repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sanitize_sql(statement: str) -> str:
    """Replace SQL literals (strings, numbers) by ``?``."""
    return _SQL_LITERALS.sub("?", statement)


def short_function(name: str) -> str:
    """``zaqar.storage.redis.messages.MessageController.post`` -> ``MessageController.post``."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if len(parts) > 1 else name


def base_name(notification_name: str) -> str:
    """``wsgi-start`` -> ``wsgi`` (suffix removed, never other characters)."""
    for suffix in ("-start", "-stop"):
        if notification_name.endswith(suffix):
            return notification_name[: -len(suffix)]
    return notification_name


def _mapping(info: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = info.get(key)
    if value is None:
        return None
    # a plain dict first: isinstance(x, Mapping) is an ABC check, slow on every span
    return value if type(value) is dict or isinstance(value, Mapping) else None


def describe_start(
    name: str, info: Mapping[str, Any], full_statements: bool = False
) -> tuple[str, SpanKind, dict[str, AttributeValue]]:
    """(span name, kind, attributes) for a ``<name>-start`` notification."""
    attrs: dict[str, AttributeValue] = {"osprofiler.name": name}
    host = info.get("host")
    if isinstance(host, str):
        attrs["host.name"] = host
    for key, value in info.items():
        if key not in _KNOWN and isinstance(value, str | bool | int | float):
            attrs[f"osprofiler.{key}"] = _text(value) if isinstance(value, str) else value

    request = _mapping(info, "request")
    if request is not None:
        method = str(request.get("method") or "HTTP")
        attrs["http.request.method"] = method
        for src, dst in (("path", "url.path"), ("query", "url.query"), ("scheme", "url.scheme")):
            if request.get(src):
                attrs[dst] = _text(request[src])
        route = request.get("route")
        if route:
            attrs["http.route"] = str(route)
            return f"{method} {route}", SpanKind.SERVER, attrs
        return method, SpanKind.SERVER, attrs

    requests = _mapping(info, "requests")
    if requests is not None:
        method = str(requests.get("method") or "HTTP")
        attrs["http.request.method"] = method
        host_name, port = requests.get("hostname"), requests.get("port")
        if host_name:
            attrs["server.address"] = str(host_name)
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            attrs["server.port"] = int(port)
        scheme = requests.get("scheme") or "http"
        url = f"{scheme}://{host_name or ''}"
        if port:
            url += f":{port}"
        url += str(requests.get("path") or "")
        if requests.get("query"):
            url += f"?{requests['query']}"
        attrs["url.full"] = _text(url)
        return method, SpanKind.CLIENT, attrs

    db = _mapping(info, "db")
    if db is not None:
        statement = str(db.get("statement") or "")
        operation = statement.split(None, 1)[0].upper() if statement.strip() else "QUERY"
        attrs["db.operation.name"] = operation
        attrs["db.query.text"] = _text(statement if full_statements else sanitize_sql(statement))
        if full_statements and db.get("params") is not None:
            attrs["osprofiler.db.params"] = _text(db["params"])
        return operation, SpanKind.CLIENT, attrs

    websocket = _mapping(info, "websocket")
    if websocket is not None:
        action = str(websocket.get("action") or "message")
        attrs["network.protocol.name"] = "websocket"
        attrs["messaging.system"] = "zaqar"
        attrs["messaging.operation.name"] = action
        for src, dst in (
            ("queue_name", "messaging.destination.name"),
            ("project_id", "zaqar.project_id"),
            ("message_count", "messaging.batch.message_count"),
        ):
            value = websocket.get(src)
            if isinstance(value, int) and not isinstance(value, bool):
                attrs[dst] = value
            elif isinstance(value, str) and value:
                attrs[dst] = _text(value)
        return f"websocket {action}", SpanKind.SERVER, attrs

    function = _mapping(info, "function")
    if function is not None and function.get("name"):
        full = str(function["name"])
        attrs["code.function.name"] = full
        for key in ("args", "kwargs"):
            if key in function:
                attrs[f"osprofiler.function.{key}"] = _text(function[key])
        return f"{name} {short_function(full)}", SpanKind.INTERNAL, attrs

    return name, SpanKind.INTERNAL, attrs


def describe_stop(
    info: Mapping[str, Any],
) -> tuple[dict[str, AttributeValue], tuple[str, str] | None]:
    """(attributes to add, (error type, message) or None) for a ``-stop`` notification."""
    attrs: dict[str, AttributeValue] = {}
    for key in ("function", "db"):
        section = _mapping(info, key)
        if section is not None and section.get("result") is not None:
            attrs[f"osprofiler.{key}.result"] = _text(section["result"])
    for key in ("requests", "response"):
        section = _mapping(info, key)
        status = section.get("status_code") if section else None
        if isinstance(status, int):
            attrs["http.response.status_code"] = status
    error = None
    websocket = _mapping(info, "websocket")
    status = websocket.get("status") if websocket else None
    if isinstance(status, int):
        attrs["zaqar.response.status"] = status
        if status >= 500:
            error = ("ServerError", f"status {status}")
    if info.get("etype"):
        error = (str(info["etype"]), _text(info.get("message") or ""))
    return attrs, error
