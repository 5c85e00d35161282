"""Route names and status codes for the request spans of Flask services (Keystone).

OSProfiler's ``WsgiMiddleware`` knows a request's method and path only, so the bridge names
the request span by the method (``GET``, ``POST``) and nothing records the response status.
In a Flask application (Keystone since Rocky) the URL rule Flask matched is known before
the view runs: it is a template from the code (``/v3/users/<string:user_id>``), one per
endpoint, so naming by it adds no cardinality.

``install()`` connects two receivers to Flask's signals (any app in the process):
``request_started`` renames the request span ``GET /v3/users/{user_id}`` and sets
``http.route``; ``request_finished`` sets ``http.response.status_code`` (an error status
for 5xx). Both act only inside a profiled request and only on a SERVER span (the span of
``WsgiMiddleware``, current while Flask dispatches). A request that matched no rule (404)
keeps its method-only name. Nothing is imported: a process that has not imported Flask
is left alone.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.semconv.attributes import http_attributes
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import SpanKind, Status, StatusCode

from zaqar_otel.bridge.gate import in_profiled_request
from zaqar_otel.bridge.logs import LOG

# <converter(args):name> or <name> -> {name}
_VARIABLE = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")


def route_template(rule: str) -> str:
    """``/v3/users/<string:user_id>`` -> ``/v3/users/{user_id}`` (OpenTelemetry's form)."""
    return _VARIABLE.sub(r"{\1}", rule)


def _request_span() -> Any | None:
    """The current span if it is the SERVER span of a profiled request, else None."""
    if not in_profiled_request():
        return None
    span = trace.get_current_span()
    if not span.is_recording() or getattr(span, "kind", None) is not SpanKind.SERVER:
        return None
    return span


def name_by_route(sender: Any, **extra: Any) -> None:
    """``request_started``: the span named by the matched URL rule."""
    try:
        span = _request_span()
        if span is None:
            return
        from flask import request

        rule = getattr(request.url_rule, "rule", None)
        if not rule:
            return
        route = route_template(str(rule))
        span.update_name(f"{request.method} {route}")
        span.set_attribute(http_attributes.HTTP_ROUTE, route)
    except Exception:
        LOG.debug("zaqar-otel: could not name the request span by its route", exc_info=True)


def record_status(sender: Any, response: Any = None, **extra: Any) -> None:
    """``request_finished``: the response status on the span."""
    try:
        span = _request_span()
        code = getattr(response, "status_code", None)
        if span is None or not isinstance(code, int):
            return
        span.set_attribute(http_attributes.HTTP_RESPONSE_STATUS_CODE, code)
        if code >= 500:  # server side: a 5xx is an error, a 4xx the client's
            span.set_attribute(ERROR_TYPE, str(code))
            span.set_status(Status(StatusCode.ERROR, str(getattr(response, "status", code))))
    except Exception:
        LOG.debug("zaqar-otel: could not record the response status", exc_info=True)


def install() -> bool:
    """Connect the receivers to Flask's signals (idempotent); False if Flask is not loaded."""
    flask = sys.modules.get("flask")
    if flask is None:
        return False
    try:
        flask.request_started.connect(name_by_route, weak=False)
        flask.request_finished.connect(record_status, weak=False)
    except Exception:
        LOG.warning("zaqar-otel: could not connect to Flask's signals", exc_info=True)
        return False
    return True


def uninstall() -> None:
    """Disconnect the receivers."""
    flask = sys.modules.get("flask")
    if flask is not None:
        flask.request_started.disconnect(name_by_route)
        flask.request_finished.disconnect(record_status)
