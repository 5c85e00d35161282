"""The request span outermost: it covers the whole request, authentication included.

Zaqar's WSGI driver puts OSProfiler's ``WsgiMiddleware`` (which opens the request span of
a signed request) innermost, directly around the Falcon app, and wraps auth (Keystone's
``auth_token`` middleware), request ids and CORS around it. With
``auth_strategy = keystone`` the token validation then runs before the span starts and
with no profiler active: its time is invisible, keystonemiddleware's call to Keystone
carries no OSProfiler headers, and a request refused by auth (401) leaves no trace.

The hooks here move the tracer outside everything else Zaqar installs::

    WsgiMiddleware (request span) -> ResponseStatus -> CORS -> RequestId
        -> SignedHeadersAuth -> auth_token (Keystone) -> Falcon app

* ``deferred_tracer`` replaces ``profile.install_wsgi_tracer`` during
  ``Driver._init_middleware`` by a no-op;
* ``outermost_tracer`` wraps ``Driver._init_middleware``: after Zaqar built its chain,
  the deferred ``install_wsgi_tracer`` (``releases.wsgi_tracer``) wraps the whole of it;
* ``ResponseStatus`` (just inside the tracer) puts the response status on the request
  span, and, for a request that never reached Falcon's routing (refused by auth), names
  the span by the route Falcon would have used (``PUT /v2/queues/{queue_name}``).

An unsigned request is not traced at all, refused or not, unless ``[profiler]``
sampling or a trusted ``traceparent`` chooses it: ``sampled_requests.SamplingTracer``
decides, around the tracer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.semconv.attributes import http_attributes
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import Status, StatusCode

from zaqar_otel.bridge.gate import in_profiled_request
from zaqar_otel.bridge.logs import LOG
from zaqar_otel.zaqar import sampled_requests

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def route_of(falcon_app: Any, path: str) -> str | None:
    """The URI template Falcon routes ``path`` to (None if none or unknown)."""
    router = getattr(falcon_app, "_router", None)
    find = getattr(router, "find", None)
    if find is None or not path:
        return None
    try:
        found = find(path)
    except Exception:
        return None
    if not found or len(found) < 4 or not isinstance(found[3], str):
        return None
    return found[3]


def record_status(span: Any, status_line: str, environ: dict[str, Any], falcon_app: Any) -> None:
    """The response status on the request span; its route if Falcon did not route it."""
    code = int(status_line.split(None, 1)[0])
    span.set_attribute(http_attributes.HTTP_RESPONSE_STATUS_CODE, code)
    if code >= 500:  # server side: a 5xx is an error, a 4xx (401 included) the client's
        span.set_attribute(ERROR_TYPE, str(code))
        span.set_status(Status(StatusCode.ERROR, status_line))
    if http_attributes.HTTP_ROUTE in (getattr(span, "attributes", None) or {}):
        return
    route = route_of(falcon_app, str(environ.get("PATH_INFO") or ""))
    if route:
        method = str(environ.get("REQUEST_METHOD") or "HTTP")
        span.update_name(f"{method} {route}")
        span.set_attribute(http_attributes.HTTP_ROUTE, route)


class ResponseStatus:
    """WSGI middleware inside the tracer: the response status of profiled requests."""

    def __init__(self, app: WSGIApp, falcon_app: Any) -> None:
        self.app = app
        self.falcon_app = falcon_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not in_profiled_request():
            return self.app(environ, start_response)
        span = trace.get_current_span()  # the request span, just opened by the tracer

        def recording_start_response(status: str, headers: Any, *exc_info: Any) -> Any:
            try:
                if span.is_recording():
                    record_status(span, status, environ, self.falcon_app)
            except Exception:
                LOG.debug("zaqar-otel: could not record the response status", exc_info=True)
            return start_response(status, headers, *exc_info)

        return self.app(environ, recording_start_response)


def deferred_tracer(original: Any) -> Any:
    """``profile.install_wsgi_tracer`` as a no-op: ``outermost_tracer`` installs it later."""

    @functools.wraps(original)
    def install_wsgi_tracer(app: Any, conf: Any) -> Any:
        return app

    install_wsgi_tracer.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return install_wsgi_tracer


def outermost_tracer(original: Any) -> Any:
    """Wraps ``Driver._init_middleware``: the tracer around the chain Zaqar built."""

    @functools.wraps(original)
    def _init_middleware(self: Any) -> Any:
        falcon_app = self.app
        result = original(self)
        from zaqar.transport.middleware import profile

        install = getattr(profile.install_wsgi_tracer, "__wrapped__", None)
        if install is None:  # not deferred: Zaqar already installed it, innermost
            return result
        inner = ResponseStatus(self.app, falcon_app)
        # signed? sampled? trusted parent? decided here, around the tracer
        self.app = sampled_requests.SamplingTracer(install(inner, self._conf), inner)
        return result

    _init_middleware.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return _init_middleware
