"""keystoneauth1 requests made inside a profiled request: a CLIENT span each, the callee joined.

keystoneauth1's ``Session.request`` already adds the signed OSProfiler headers
(``X-Trace-Info``/``X-Trace-HMAC``) whenever a profiler is active in the thread, so an
OpenStack service called by it (Keystone, when keystonemiddleware validates a token) can
join the caller's trace, but the call itself leaves no trace: its time is only a gap in
the caller's request span and the callee's spans hang under that request span.
``install()`` wraps ``Session.request`` so that, while a profiler is active, each call is
an OSProfiler element ``keystoneauth`` (a CLIENT span: method, ``url.full``, status code,
an error for a failed call). Because the element is started first, the OSProfiler headers
keystoneauth adds name it as the parent, and a W3C ``traceparent`` of the CLIENT span is
added for OpenTelemetry-instrumented callees.

One span per ``Session.request`` call, retries and redirects included; authenticating
first (a token request of its own) is a CLIENT span inside it. Outside a profiled request
nothing is done. With OSProfiler's own ``[profiler] trace_requests = true`` every HTTP
request is already an element with re-signed headers: the wrapper then steps aside.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any
from urllib import parse

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from osprofiler import profiler

from zaqar_otel.bridge.logs import LOG

ELEMENT = "keystoneauth"
_PROPAGATOR = TraceContextTextMapPropagator()


def request_info(method: str, url: str, params: Any = None) -> dict[str, Any]:
    """OSProfiler's ``requests`` info for ``method url`` (``params`` join the query)."""
    parts = parse.urlsplit(url)
    query = parts.query
    if params:
        extra = params if isinstance(params, str) else parse.urlencode(params, doseq=True)
        query = f"{query}&{extra}" if query else extra
    port = parts.port or (443 if parts.scheme == "https" else 80 if parts.scheme else None)
    info: dict[str, Any] = {"method": method.upper(), "path": parts.path, "query": query}
    if parts.scheme:
        info.update(scheme=parts.scheme, hostname=parts.hostname or "", port=port)
    return info


def _osprofiler_traces_requests() -> bool:
    """Whether ``[profiler] trace_requests`` patched requests (an element per HTTP request)."""
    try:
        from osprofiler import requests as osprofiler_requests
        from requests.adapters import HTTPAdapter
    except ImportError:
        return False
    return getattr(HTTPAdapter, "send", None) is getattr(osprofiler_requests, "send", object())


def _stop_info(response: Any) -> dict[str, Any]:
    status = getattr(response, "status_code", None)
    info: dict[str, Any] = {"requests": {"status_code": status, "url": str(response.url)}}
    if isinstance(status, int) and status >= 400:  # client side: a 4xx is an error too
        info.update(etype=str(status), message=str(getattr(response, "reason", "")))
    return info


def _error_info(error: BaseException) -> dict[str, Any]:
    info: dict[str, Any] = {"etype": type(error).__name__, "message": str(error)}
    status, url = getattr(error, "http_status", None), getattr(error, "url", None)
    if isinstance(status, int):
        info["requests"] = {"status_code": status, **({"url": url} if url else {})}
    return info


def traced(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Session.request`` as a CLIENT span inside profiled requests."""

    @functools.wraps(original)
    def request(self: Any, url: str, method: str, *args: Any, **kwargs: Any) -> Any:
        active = profiler.get()
        if active is None or _osprofiler_traces_requests():
            return original(self, url, method, *args, **kwargs)
        info = request_info(str(method), str(url), kwargs.get("params"))
        active.start(ELEMENT, info={"requests": info})
        try:
            headers = kwargs.get("headers")
            headers = dict(headers) if isinstance(headers, Mapping) else {}
            _PROPAGATOR.inject(headers)  # the CLIENT span is the current span now
            kwargs["headers"] = headers
            response = original(self, url, method, *args, **kwargs)
        except BaseException as error:
            active.stop(info=_error_info(error))
            raise
        try:
            stop = _stop_info(response)
        except Exception:
            LOG.debug("zaqar-otel: could not read a keystoneauth response", exc_info=True)
            stop = {}
        active.stop(info=stop)
        return response

    request.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return request


def install() -> bool:
    """Wrap keystoneauth1's ``Session.request`` (idempotent); False if it is not installed."""
    try:
        from keystoneauth1 import session
    except ImportError:
        return False
    if not getattr(session.Session.request, "__zaqar_otel__", False):
        session.Session.request = traced(session.Session.request)  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    """Undo ``install()``."""
    try:
        from keystoneauth1 import session
    except ImportError:
        return
    wrapped = getattr(session.Session.request, "__wrapped__", None)
    if wrapped is not None and getattr(session.Session.request, "__zaqar_otel__", False):
        session.Session.request = wrapped  # type: ignore[method-assign]
