"""Profile python-zaqarclient calls: a CLIENT span per HTTP request, the server's spans under it.

::

    from zaqar_otel.lookup import client as profiling
    from zaqar_otel.lookup.jaeger import JaegerQuery

    profiling.enable("otel://collector:4318", service="zaqar-client")
    with profiling.profile("SECRET_KEY") as call:      # a key of the server's hmac_keys
        queue.post([{"body": "hello", "ttl": 300}])
    print(call.base_id, call.trace_hex)               # OSProfiler UUID, Jaeger's 32 hex
    check = call.check_server(JaegerQuery("http://jaeger:16686"))
    print(check.message)                              # did the server trace it?

``enable()`` makes this process an OSProfiler client with the bridge as its
notifier (spans exported by OTLP like the server's; ``otel://`` connection
strings as in ``[profiler] connection_string``) and wraps python-zaqarclient's
HTTP client so that every request made while OSProfiler is initialised in the
thread:

* is an OSProfiler element ``requests`` of its own (method, host, port, path,
  query; status code at stop), which the bridge exports as a CLIENT span named
  by the method, with ``url.full`` and ``http.response.status_code``;
* carries ``X-Trace-Info``/``X-Trace-HMAC`` signed with the key and naming that
  element as parent, so the server's request span is the CLIENT span's child
  (span id = low 64 bits of the element id, see ``zaqar_otel.bridge.ids``);
* carries a W3C ``traceparent`` of the CLIENT span, for OTel-instrumented hops.

An HMAC key the server does not have cannot be detected from the response:
Zaqar serves the request and traces nothing. ``ProfiledCall.check_server``
asks Jaeger whether server spans arrived under the client spans and says which.
``enable()`` replaces OSProfiler's notifier in this process (a client, not a
traced server); it never instruments databases.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib import parse

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from osprofiler import notifier, profiler, web

from zaqar_otel.bridge import ids, keystoneauth
from zaqar_otel.bridge.spans import SpanBridge
from zaqar_otel.lookup.jaeger import JaegerQuery, TraceNotFound, trace_url

DEFAULT_SERVICE = "zaqar-client"
_PROPAGATOR = TraceContextTextMapPropagator()


class ClientTracing:
    """The bridge of a client process: OSProfiler notifications -> exported spans."""

    def __init__(self, provider: TracerProvider, bridge: SpanBridge, built_provider: bool) -> None:
        self.provider = provider
        self.bridge = bridge
        self.built_provider = built_provider

    def notify(self, payload: dict[str, Any], **kwargs: Any) -> None:
        self.bridge.handle(payload)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Export the queued spans now (bounded); False if that did not finish in time."""
        try:
            return bool(self.provider.force_flush(int(timeout_s * 1000)))
        except Exception:
            return False


_tracing: ClientTracing | None = None
_enable_lock = threading.Lock()
_local = threading.local()


def enable(connection_string: str = "otel://", service: str = DEFAULT_SERVICE) -> ClientTracing:
    """Export client spans (idempotent: a second call returns the first setup).

    ``connection_string`` is an ``otel://`` string (``otel://HOST:PORT``,
    ``?protocol=grpc``...; bare ``otel://`` uses ``OTEL_EXPORTER_OTLP_*``);
    ``service`` the default service.name (``OTEL_SERVICE_NAME`` wins). An
    existing SDK TracerProvider in the process is used, not replaced. Raises
    ``ValueError`` for a bad connection string.
    """
    global _tracing
    with _enable_lock:
        if _tracing is not None:
            return _tracing
        from zaqar_otel import __version__
        from zaqar_otel.bridge import export, logs, provider

        endpoint = export.parse_connection_string(connection_string)
        logs.install()

        def processor() -> export.CountingBatchSpanProcessor | None:
            inner = export.build_exporter(endpoint)
            return (
                None
                if inner is None
                else export.CountingBatchSpanProcessor(export.GuardedExporter(inner))
            )

        chosen, hints, built = provider.use_or_build(service, processor)
        tracer = chosen.get_tracer("zaqar_otel.client", __version__)
        _tracing = ClientTracing(chosen, SpanBridge(tracer, hints), built)
        notifier.set(_tracing.notify)
        patch_zaqarclient()
        keystoneauth.install()  # Keystone calls (authenticating): CLIENT spans too
        return _tracing


def tracing() -> ClientTracing | None:
    """The setup made by ``enable()``, or None."""
    return _tracing


def disable() -> None:
    """Undo ``enable()``: flush, unwrap zaqarclient, OSProfiler's no-op notifier again.

    The TracerProvider stays (OpenTelemetry sets the global provider once).
    """
    global _tracing
    with _enable_lock:
        if _tracing is None:
            return
        _tracing.flush()
        if notifier.get() == _tracing.notify:
            notifier.set(notifier._noop_notifier)
        _tracing = None
        keystoneauth.uninstall()
        try:
            from zaqarclient.common import http
        except ImportError:
            return
        wrapped = getattr(http.Client.request, "__wrapped__", None)
        if wrapped is not None and getattr(http.Client.request, "__zaqar_otel__", False):
            http.Client.request = wrapped


def patch_zaqarclient() -> bool:
    """Wrap python-zaqarclient's HTTP client (idempotent); False if it is not installed."""
    try:
        from zaqarclient.common import http
    except ImportError:
        return False
    original = http.Client.request
    if getattr(original, "__zaqar_otel__", False):
        return True
    http.Client.request = _traced(original)
    return True


def _traced(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        active = profiler.get()
        if active is None or not getattr(active, "hmac_key", None):
            return original(self, *args, **kwargs)
        method = str(args[0] if args else kwargs.get("method", "GET")).upper()
        url = str(args[1] if len(args) > 1 else kwargs.get("url", ""))
        active.start("requests", info={"requests": _request_info(method, url, kwargs)})
        call: ProfiledCall | None = getattr(_local, "call", None)
        if call is not None:
            call.client_spans.append(ids.span_hex(active.get_id()))
        try:
            headers = dict(kwargs.get("headers") or {})
            headers.update(web.get_trace_id_headers())  # parent: this request's element
            _PROPAGATOR.inject(headers)  # traceparent: the CLIENT span, current now
            kwargs["headers"] = headers
            response = original(self, *args, **kwargs)
        except BaseException as error:
            active.stop(info={"etype": type(error).__name__, "message": str(error)})
            raise
        status = getattr(response, "status_code", None)
        stop: dict[str, Any] = {"requests": {"status_code": status}}
        if isinstance(status, int) and status >= 400:
            stop.update(etype=f"HTTP {status}", message=str(getattr(response, "reason", "")))
        active.stop(info=stop)
        return response

    request.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return request


def _request_info(method: str, url: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    parts = parse.urlsplit(url)
    query = parts.query
    params = kwargs.get("params")
    if params:
        extra = parse.urlencode(params, doseq=True) if not isinstance(params, str) else params
        query = f"{query}&{extra}" if query else extra
    return {
        "method": method,
        "scheme": parts.scheme,
        "hostname": parts.hostname or "",
        "port": parts.port or (443 if parts.scheme == "https" else 80),
        "path": parts.path,
        "query": query,
    }


@dataclass(frozen=True)
class ServerCheck:
    """Whether the server traced a profiled call (what Jaeger shows under the client spans)."""

    traced: bool | None  # None: cannot tell (nothing reached Jaeger, or no request made)
    requests: int  # CLIENT spans the call made (one per HTTP request)
    traced_requests: int  # of those, how many have server spans under them
    server_spans: int  # spans of the trace that are not the client's
    message: str


@dataclass
class ProfiledCall:
    """One profiled block: its trace id and the span ids of its HTTP requests."""

    base_id: str
    client_spans: list[str] = field(default_factory=list)

    @property
    def trace_hex(self) -> str:
        """The 32-hex trace id Jaeger shows."""
        return ids.trace_hex(self.base_id)

    def url(self, jaeger_ui: str) -> str:
        """The trace's page in the Jaeger UI at ``jaeger_ui``."""
        return trace_url(jaeger_ui, self.base_id)

    def check_server(self, query: JaegerQuery, timeout: float = 10.0) -> ServerCheck:
        """Wait up to ``timeout`` s for server spans under every client span of this call.

        Servers export in batches (``OTEL_BSP_SCHEDULE_DELAY``, 5 s by default),
        so a trace is complete only seconds later. Raises ``JaegerUnreachable``.
        """
        mine = set(self.client_spans)
        if not mine:
            return ServerCheck(None, 0, 0, 0, "no HTTP request was made while profiling")
        deadline = time.monotonic() + timeout
        while True:
            try:
                spans = query.get_trace(self.base_id)
            except TraceNotFound:
                spans = []
            answered = {span.parent_id for span in spans} & mine
            if answered == mine or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        others = sum(1 for span in spans if span.span_id not in mine)
        n, k = len(mine), len(answered)
        requests = f"{n} request{'s' if n != 1 else ''}"
        if k == n:
            message = f"the server traced this call ({others} spans under {requests})"
            return ServerCheck(True, n, k, others, message)
        if not spans:
            message = (
                f"nothing of this trace reached Jaeger in {timeout:g} s: neither the client's "
                "spans (check the client's OTLP endpoint) nor the server's (is the HMAC key "
                "in the server's [profiler] hmac_keys?)"
            )
            return ServerCheck(None, n, k, others, message)
        if k == 0:
            message = (
                f"the server did not trace this call (no server span in {timeout:g} s): is "
                "the HMAC key in its [profiler] hmac_keys, with [profiler] enabled = true, "
                "and does it export to this Jaeger?"
            )
            return ServerCheck(False, n, k, others, message)
        message = f"the server traced only {k} of {requests} within {timeout:g} s"
        return ServerCheck(False, n, k, others, message)


def zaqar_client(
    url: str, project: str = "", *, session: Any = None, insecure: bool = False
) -> Any:
    """A python-zaqarclient v2 client: with a keystoneauth1 ``session``, Keystone auth;
    else for a Zaqar with ``auth_strategy =`` (noauth), ``project`` the id it sends."""
    from zaqarclient.queues.v2 import client

    if session is None:
        auth = {"backend": "noauth", "options": {"os_project_id": project}}
        return client.Client(url, version=2, conf={"auth_opts": auth})
    auth = {"backend": "keystone", "options": {"insecure": insecure}}
    return client.Client(url, version=2, conf={"auth_opts": auth}, session=session)


@contextmanager
def profiled(hmac_key: str) -> Iterator[str]:
    """OSProfiler on in this thread for the block (zaqarclient signs its requests with
    ``hmac_key``); yields the trace's base id. Exports nothing itself: see :func:`profile`."""
    profiler.clean()
    active = profiler.init(hmac_key)
    try:
        yield active.get_base_id()
    finally:
        profiler.clean()


@contextmanager
def profile(hmac_key: str, flush_timeout: float = 5.0) -> Iterator[ProfiledCall]:
    """Profile the zaqarclient calls made inside (this thread) with ``hmac_key``.

    Calls ``enable()`` with its defaults if it was not called. The spans are
    flushed (at most ``flush_timeout`` s) when the block ends. Any OSProfiler
    profiler already initialised in the thread is replaced.
    """
    if not hmac_key:
        raise ValueError("an HMAC key is needed: one of the server's [profiler] hmac_keys")
    setup = _tracing or enable()
    try:
        with profiled(hmac_key) as base_id:
            _local.call = call = ProfiledCall(base_id)
            try:
                yield call
            finally:
                _local.call = None
    finally:
        setup.flush(flush_timeout)
