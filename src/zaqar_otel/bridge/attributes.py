"""OSProfiler notification -> span name, kind and attributes (OTel semantic conventions).

One handler per ``info`` shape, chosen from ``SHAPES`` (the first key present wins):

=============  ======== ==================================================
info key       kind     name / attributes
=============  ======== ==================================================
``request``    SERVER   ``GET`` or ``GET /v2/queues/{queue_name}`` when a route is
                        known; ``http.request.method``, ``url.path``, ``url.query``,
                        ``url.scheme``, ``http.route``; at stop
                        ``http.response.status_code``
``requests``   CLIENT   ``GET``; ``url.full``, ``server.address``, ``server.port`` (at
                        stop if the start had only a path); at stop
                        ``http.response.status_code``
``db``         CLIENT   ``SELECT``...; ``db.operation.name``, ``db.query.text``
                        (literals replaced by ``?`` unless full capture is on)
``websocket``  SERVER   ``websocket message_post``; ``messaging.*``, ``zaqar.project_id``;
                        at stop ``zaqar.response.status``
``function``   INTERNAL ``<osprofiler name> <Class.method>``; ``code.function.name``
anything else  INTERNAL the OSProfiler name
=============  ======== ==================================================

Every span also gets ``osprofiler.name``; the bridge adds ``osprofiler.id`` (the
element UUID) and ``osprofiler.base_id``. Other scalar info values are kept as
``osprofiler.<key>``.

What is content (``Capture.content``, ``[profiler] trace_message_content``): function
arguments and results (message bodies, project and client ids), capability ids in
URLs (claim ids, see ``redact``) and the text of exceptions. Without the opt-in none
of it is recorded: a function span carries its name, an exception its type and a
message without quoted values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.semconv._incubating.attributes.messaging_attributes import (
    MESSAGING_BATCH_MESSAGE_COUNT,
    MESSAGING_DESTINATION_NAME,
    MESSAGING_OPERATION_NAME,
    MESSAGING_SYSTEM,
)
from opentelemetry.semconv.attributes.code_attributes import CODE_FUNCTION_NAME
from opentelemetry.semconv.attributes.db_attributes import DB_OPERATION_NAME, DB_QUERY_TEXT
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_TYPE,
)
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_NAME
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import (
    URL_FULL,
    URL_PATH,
    URL_QUERY,
    URL_SCHEME,
)
from opentelemetry.trace import SpanKind

from zaqar_otel.bridge.redact import (
    MAX_VALUE,
    REDACTED,
    cap,
    redact,
    scrub_error_text,
    scrub_url,
    scrub_url_path,
    scrub_url_query,
)

__all__ = [
    "MAX_VALUE",
    "REDACTED",
    "SHAPES",
    "Capture",
    "Stop",
    "base_name",
    "describe_start",
    "describe_stop",
    "redact",
    "sanitize_sql",
    "short_function",
    "stop_matters",
]

_SQL_LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")
_KNOWN = {"request", "requests", "db", "function", "websocket", "host", "etype", "message"}
ZAQAR_PROJECT_ID = "zaqar.project_id"
ZAQAR_RESPONSE_STATUS = "zaqar.response.status"

AttributeValue = str | bool | int | float
Attributes = dict[str, AttributeValue]
Described = tuple[str, SpanKind, Attributes]


@dataclass(frozen=True)
class Capture:
    """What the operator allowed to leave: statement values, content (see module doc)."""

    statements: bool = False  # [profiler] trace_db_statements
    content: bool = False  # [profiler] trace_message_content


NOTHING = Capture()


def _text(value: Any, limit: int = MAX_VALUE) -> str:
    return cap(redact(value if isinstance(value, str) else repr(value)), limit)


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


# -- one handler per info shape: (name, section, attrs to fill, capture) -> (name, kind)
# or None to let the next shape (finally the plain INTERNAL span) describe it.

Handler = Callable[[str, Mapping[str, Any], Attributes, Capture], tuple[str, SpanKind] | None]


def _server_request(
    name: str, request: Mapping[str, Any], attrs: Attributes, capture: Capture
) -> tuple[str, SpanKind]:
    method = str(request.get("method") or "HTTP")
    attrs[HTTP_REQUEST_METHOD] = method
    if request.get("path"):
        path = _text(request["path"])
        attrs[URL_PATH] = path if capture.content else scrub_url_path(path)
    if request.get("query"):
        query = _text(request["query"])
        attrs[URL_QUERY] = query if capture.content else scrub_url_query(query)
    if request.get("scheme"):
        attrs[URL_SCHEME] = _text(request["scheme"])
    route = request.get("route")
    if route:
        attrs[HTTP_ROUTE] = str(route)
        return f"{method} {route}", SpanKind.SERVER
    return method, SpanKind.SERVER


def _client_request(
    name: str, requests: Mapping[str, Any], attrs: Attributes, capture: Capture
) -> tuple[str, SpanKind]:
    method = str(requests.get("method") or "HTTP")
    attrs[HTTP_REQUEST_METHOD] = method
    host_name, port = requests.get("hostname"), requests.get("port")
    if host_name:
        attrs[SERVER_ADDRESS] = str(host_name)
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        attrs[SERVER_PORT] = int(port)
    if not host_name:  # a URL relative to a catalog endpoint (keystoneauth): url.full at stop
        return method, SpanKind.CLIENT
    url = f"{requests.get('scheme') or 'http'}://{host_name}"
    if port:
        url += f":{port}"
    url += str(requests.get("path") or "")
    if requests.get("query"):
        url += f"?{requests['query']}"
    attrs[URL_FULL] = _text(url if capture.content else scrub_url(url))
    return method, SpanKind.CLIENT


def _url_attributes(url: str, capture: Capture) -> Attributes:
    """``url.full``, ``server.address``, ``server.port`` of a URL known only at the end."""
    attrs: Attributes = {URL_FULL: _text(url if capture.content else scrub_url(url))}
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return attrs
    if parts.hostname:
        attrs[SERVER_ADDRESS] = parts.hostname
    if port:
        attrs[SERVER_PORT] = port
    return attrs


def _db(
    name: str, db: Mapping[str, Any], attrs: Attributes, capture: Capture
) -> tuple[str, SpanKind]:
    statement = str(db.get("statement") or "")
    operation = statement.split(None, 1)[0].upper() if statement.strip() else "QUERY"
    attrs[DB_OPERATION_NAME] = operation
    attrs[DB_QUERY_TEXT] = _text(statement if capture.statements else sanitize_sql(statement))
    if capture.statements and db.get("params") is not None:
        attrs["osprofiler.db.params"] = _text(db["params"])
    return operation, SpanKind.CLIENT


_WEBSOCKET_FIELDS = (
    ("queue_name", MESSAGING_DESTINATION_NAME),
    ("project_id", ZAQAR_PROJECT_ID),
    ("message_count", MESSAGING_BATCH_MESSAGE_COUNT),
)


def _websocket(
    name: str, websocket: Mapping[str, Any], attrs: Attributes, capture: Capture
) -> tuple[str, SpanKind]:
    action = str(websocket.get("action") or "message")
    attrs[NETWORK_PROTOCOL_NAME] = "websocket"
    attrs[MESSAGING_SYSTEM] = "zaqar"
    attrs[MESSAGING_OPERATION_NAME] = action
    for src, dst in _WEBSOCKET_FIELDS:
        value = websocket.get(src)
        if isinstance(value, int) and not isinstance(value, bool):
            attrs[dst] = value
        elif isinstance(value, str) and value:
            attrs[dst] = _text(value)
    return f"websocket {action}", SpanKind.SERVER


def _function(
    name: str, function: Mapping[str, Any], attrs: Attributes, capture: Capture
) -> tuple[str, SpanKind] | None:
    if not function.get("name"):
        return None
    full = str(function["name"])
    attrs[CODE_FUNCTION_NAME] = full
    if capture.content:
        # OSProfiler's trace(hide_args=False): the arguments' str(), message bodies included
        for key in ("args", "kwargs"):
            if key in function:
                attrs[f"osprofiler.function.{key}"] = _text(function[key])
    return f"{name} {short_function(full)}", SpanKind.INTERNAL


SHAPES: tuple[tuple[str, Handler], ...] = (
    ("request", _server_request),
    ("requests", _client_request),
    ("db", _db),
    ("websocket", _websocket),
    ("function", _function),
)


# (osprofiler name, function name) -> described span, for the traced calls (most spans):
# computed once per function instead of once per span
_FUNCTIONS: dict[tuple[str, str], Described] = {}
_FUNCTIONS_MAX = 4096


def _traced_call(name: str, info: Mapping[str, Any]) -> Described | None:
    """A traced call (``info`` is ``{"function": {"name": ...}, "host": ...}``) as before."""
    if len(info) > 2 or (len(info) == 2 and "host" not in info):
        return None
    function = info.get("function")
    if type(function) is not dict:
        return None
    full = function.get("name")
    if type(full) is not str or not full:
        return None
    key = (name, full)
    described = _FUNCTIONS.get(key)
    if described is None:
        described = _describe(name, info, NOTHING)
        if len(_FUNCTIONS) < _FUNCTIONS_MAX:
            _FUNCTIONS[key] = described
    return described[0], described[1], dict(described[2])


def describe_start(name: str, info: Mapping[str, Any], capture: Capture = NOTHING) -> Described:
    """(span name, kind, attributes) for a ``<name>-start`` notification."""
    if capture is NOTHING and "function" in info:
        described = _traced_call(name, info)
        if described is not None:
            return described
    return _describe(name, info, capture)


def _describe(name: str, info: Mapping[str, Any], capture: Capture) -> Described:
    attrs: Attributes = {"osprofiler.name": name}
    for key, value in info.items():
        if key not in _KNOWN and isinstance(value, str | bool | int | float):
            attrs[f"osprofiler.{key}"] = _text(value) if isinstance(value, str) else value
    for key, handler in SHAPES:
        section = _mapping(info, key)
        if section is not None:
            described = handler(name, section, attrs, capture)
            if described is not None:
                return described[0], described[1], attrs
    return name, SpanKind.INTERNAL, attrs


@dataclass
class Stop:
    """What a ``-stop`` notification adds: attributes, an error, an exception event."""

    attributes: Attributes
    error: str | None = None  # the span's status description when it failed
    event: Attributes | None = None  # the attributes of an "exception" event


def stop_matters(info: Mapping[str, Any]) -> bool:
    """Whether ``describe_stop(info)`` can find anything (most stops carry only the host)."""
    return (
        "etype" in info
        or "function" in info
        or "db" in info
        or "requests" in info
        or "response" in info
        or "websocket" in info
    )


def _never(etype: str) -> bool:
    return False


def describe_stop(
    info: Mapping[str, Any],
    capture: Capture = NOTHING,
    expected: Callable[[str], bool] = _never,
) -> Stop:
    """Attributes, error and exception event of a ``-stop`` notification.

    ``expected(etype)`` tells an exception that is an answer, not a failure (a
    "does not exist" that becomes a 404): it gets an event, not an error status.
    """
    stop = Stop({})
    if capture.content:
        for key in ("function", "db"):
            section = _mapping(info, key)
            if section is not None and section.get("result") is not None:
                stop.attributes[f"osprofiler.{key}.result"] = _text(section["result"])
    for key in ("requests", "response"):
        section = _mapping(info, key)
        status = section.get("status_code") if section else None
        if isinstance(status, int):
            stop.attributes[HTTP_RESPONSE_STATUS_CODE] = status
    requests = _mapping(info, "requests")
    if requests is not None and isinstance(requests.get("url"), str):
        stop.attributes.update(_url_attributes(requests["url"], capture))
    websocket = _mapping(info, "websocket")
    status = websocket.get("status") if websocket else None
    if isinstance(status, int):
        stop.attributes[ZAQAR_RESPONSE_STATUS] = status
        if status >= 500:
            stop.attributes[ERROR_TYPE] = str(status)
            stop.error = f"status {status}"
    if info.get("etype"):
        _exception(stop, str(info["etype"]), info.get("message"), capture, expected)
    return stop


def _exception(
    stop: Stop, etype: str, message: Any, capture: Capture, expected: Callable[[str], bool]
) -> None:
    text = _text(message or "") if capture.content else scrub_error_text(str(message or ""))
    stop.event = {EXCEPTION_TYPE: etype}
    if expected(etype):
        # an answer such as "does not exist": the type tells it; the message
        # names what was looked for (a claim id is a capability), so only with content
        if capture.content and text:
            stop.event[EXCEPTION_MESSAGE] = text
        return
    if text:
        stop.event[EXCEPTION_MESSAGE] = text
    stop.attributes[ERROR_TYPE] = etype
    stop.error = f"{etype}: {text}" if text else etype
