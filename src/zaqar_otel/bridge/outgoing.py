"""Outgoing calls carry the trace: what a profiled request sends on continues its trace.

* ``instrument_requests()``: an HTTP request made with python-requests inside a
  profiled request (the ``PROFILED`` mark of ``zaqar_otel.bridge.gate``) becomes a
  CLIENT span and carries a W3C ``traceparent`` naming it, so that an
  OpenTelemetry-instrumented receiver continues the trace. Outside profiled
  requests the call goes through untouched (one context lookup). The URL is
  recorded by ``attributes.redact_url`` (no credentials, no query values).
  ``[profiler] trace_outgoing_requests`` switches this off for plain calls.
  No second span where one exists: under a CLIENT span (an OSProfiler
  ``requests`` element, e.g. a profiled zaqarclient call) or when OSProfiler's own
  requests adapter (``trace_requests``) traces the call, only ``traceparent`` is
  added (OSProfiler's ``get_trace_id_headers`` gets it too, so every request that
  carries ``X-Trace-*`` also carries ``traceparent``). Suppressed instrumentation
  (OpenTelemetry exporters sending spans) is respected.
* ``purpose(Purpose(...))``: an integration says what the calls made inside a
  block are for (span name, attributes, resend count), e.g. Zaqar's webhook
  notifications. Such calls go to third parties: OSProfiler's ``X-Trace-*``
  headers (signed with an HMAC key) are removed from them, only ``traceparent``
  (and ``tracestate``) go out.
* ``carry(fn)`` and ``ContextExecutor``: the OpenTelemetry context of the
  submitting thread (current span and ``PROFILED`` mark) travels into a thread
  pool, so work done there for a profiled request is traced in its trace.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib import parse

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.instrumentation.utils import (
    is_http_instrumentation_enabled,
    suppress_http_instrumentation,
)
from opentelemetry.semconv.attributes import (
    error_attributes,
    http_attributes,
    server_attributes,
    url_attributes,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from zaqar_otel.bridge import options, provider
from zaqar_otel.bridge.attributes import AttributeValue
from zaqar_otel.bridge.gate import in_profiled_request
from zaqar_otel.bridge.logs import LOG
from zaqar_otel.bridge.redact import redact_url

OSPROFILER_HEADERS = ("X-Trace-Info", "X-Trace-HMAC")
TRACER = "zaqar_otel.outgoing"
_PROPAGATOR = TraceContextTextMapPropagator()  # traceparent/tracestate only, never baggage
_DEFAULT_PORTS = {"http": 80, "https": 443}
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Purpose:
    """What the outgoing calls of a block are for (set by an integration)."""

    name: str  # the span name, e.g. "notify orders"
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    third_party: bool = True  # never OSProfiler's X-Trace-* headers
    resend_count: int = 0  # > 0: the calls are resends (http.request.resend_count)


_PURPOSE: contextvars.ContextVar[Purpose | None] = contextvars.ContextVar(
    "zaqar_otel_outgoing_purpose", default=None
)


@contextmanager
def purpose(what: Purpose) -> Iterator[Purpose]:
    """Calls made inside this block (this thread) are for ``what``."""
    token = _PURPOSE.set(what)
    try:
        yield what
    finally:
        _PURPOSE.reset(token)


def current_purpose() -> Purpose | None:
    return _PURPOSE.get()


def inject(headers: MutableMapping[str, str], context: context_api.Context | None = None) -> None:
    """Add ``traceparent`` (and ``tracestate``) of the span current in ``context``."""
    _PROPAGATOR.inject(headers, context)


def client_attributes(method: str, url: str) -> dict[str, AttributeValue]:
    """HTTP client attributes (current semantic conventions) of a request, URL redacted."""
    attrs: dict[str, AttributeValue] = {
        http_attributes.HTTP_REQUEST_METHOD: method,
        url_attributes.URL_FULL: redact_url(url),
    }
    try:
        parts = parse.urlsplit(url)
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return attrs
    if host:
        attrs[server_attributes.SERVER_ADDRESS] = host
    if port:
        attrs[server_attributes.SERVER_PORT] = port
    return attrs


# -- python-requests


def _traced_send(original: F) -> F:
    @functools.wraps(original)
    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        if not in_profiled_request() or not is_http_instrumentation_enabled():
            return original(self, request, **kwargs)
        what = _PURPOSE.get()
        if what is None and not options.flag("trace_outgoing_requests", True):
            return original(self, request, **kwargs)
        if what is None and (_in_client_span() or _osprofiler_traces_it()):
            if "traceparent" not in request.headers:
                inject(request.headers)  # the call's own span is current, or soon will be
            return original(self, request, **kwargs)
        return _send_in_span(original, self, request, kwargs, what)

    send.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return send  # type: ignore[return-value]


def _in_client_span() -> bool:
    """A CLIENT span is current: it stands for this call already."""
    return getattr(trace.get_current_span(), "kind", None) is SpanKind.CLIENT


def _osprofiler_traces_it() -> bool:
    """OSProfiler's requests adapter (``trace_requests``) makes its own span for the call."""
    try:
        from osprofiler import profiler
        from osprofiler import requests as osprofiler_requests
        from requests.adapters import HTTPAdapter
    except ImportError:
        return False
    return HTTPAdapter.send is osprofiler_requests.send and profiler.get() is not None


def _with_traceparent(original: F) -> F:
    """OSProfiler's ``get_trace_id_headers``, plus ``traceparent`` in profiled requests."""

    @functools.wraps(original)
    def get_trace_id_headers() -> dict[str, str]:
        headers: dict[str, str] = original()
        if headers and in_profiled_request() and is_http_instrumentation_enabled():
            inject(headers)
        return headers

    get_trace_id_headers.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return get_trace_id_headers  # type: ignore[return-value]


def _send_in_span(
    original: Callable[..., Any],
    session: Any,
    request: Any,
    kwargs: dict[str, Any],
    what: Purpose | None,
) -> Any:
    method = str(request.method or "GET").upper()
    attrs = client_attributes(method, str(request.url or ""))
    name = method
    if what is not None:
        name = what.name
        attrs.update(what.attributes)
        if what.resend_count > 0:
            attrs[http_attributes.HTTP_REQUEST_RESEND_COUNT] = what.resend_count
    span = provider.tracer(TRACER).start_span(name, kind=SpanKind.CLIENT, attributes=attrs)
    context = trace.set_span_in_context(span)
    if what is not None and what.third_party:
        for header in OSPROFILER_HEADERS:
            request.headers.pop(header, None)
    inject(request.headers, context)
    token = context_api.attach(context)
    try:
        with suppress_http_instrumentation():  # one span per call, not one per layer
            response = original(session, request, **kwargs)
    except BaseException as error:
        # the type only: requests' messages repeat the URL, query string included
        etype = type(error).__qualname__
        span.set_attribute(error_attributes.ERROR_TYPE, etype)
        span.set_status(Status(StatusCode.ERROR, etype))
        raise
    else:
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            span.set_attribute(http_attributes.HTTP_RESPONSE_STATUS_CODE, status)
            if status >= 400:
                span.set_attribute(error_attributes.ERROR_TYPE, str(status))
                span.set_status(Status(StatusCode.ERROR))
        return response
    finally:
        context_api.detach(token)
        span.end()


_lock = threading.Lock()


def instrument_requests() -> bool:
    """Wrap ``requests.Session.send`` (idempotent); False if requests is missing."""
    try:
        import requests
    except ImportError:
        return False
    with _lock:
        current = requests.Session.send
        if not getattr(current, "__zaqar_otel__", False):
            requests.Session.send = _traced_send(current)  # type: ignore[method-assign]
        try:
            from osprofiler import web
        except ImportError:
            return True
        if not getattr(web.get_trace_id_headers, "__zaqar_otel__", False):
            web.get_trace_id_headers = _with_traceparent(web.get_trace_id_headers)
    return True


def uninstrument_requests() -> None:
    """Undo ``instrument_requests`` (tests)."""
    try:
        import requests
    except ImportError:
        return
    with _lock:
        current = requests.Session.send
        if getattr(current, "__zaqar_otel__", False):
            requests.Session.send = current.__wrapped__  # type: ignore[attr-defined,method-assign]
        from osprofiler import web

        if getattr(web.get_trace_id_headers, "__zaqar_otel__", False):
            web.get_trace_id_headers = web.get_trace_id_headers.__wrapped__  # type: ignore[attr-defined]


# -- thread pools


def carry(fn: F) -> F:
    """``fn`` run in the current OpenTelemetry context, whichever thread calls it.

    Outside a profiled request ``fn`` itself is returned: nothing is carried.
    """
    if not in_profiled_request():
        return fn
    captured = context_api.get_current()

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        token = context_api.attach(captured)
        try:
            return fn(*args, **kwargs)
        finally:
            try:
                context_api.detach(token)
            except Exception:
                LOG.debug("zaqar-otel: context detach failed", exc_info=True)

    return run  # type: ignore[return-value]


def _always() -> bool:
    return True


class ContextExecutor:
    """An executor whose ``submit`` carries the submitter's context (``carry``)
    whenever ``when()`` is true (read at each submit)."""

    def __init__(self, inner: Any, when: Callable[[], bool] = _always) -> None:
        self.inner = inner
        self.when = when

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if in_profiled_request() and self.when():
            fn = carry(fn)
        return self.inner.submit(fn, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
