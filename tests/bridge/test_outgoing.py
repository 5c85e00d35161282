"""Outgoing calls: python-requests inside profiled requests, context carried into thread pools.

A real HTTP server in this process records what arrives; spans go to the in-memory exporter.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
import requests
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from tests import tracing
from zaqar_otel.bridge import options, outgoing
from zaqar_otel.bridge.gate import PROFILED, in_profiled_request
from zaqar_otel.demo.process import pick_port


class Recorder(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        Recorder.received.append({k.lower(): v for k, v in self.headers.items()})
        status = 500 if self.path.startswith("/fail") else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    tracing.global_provider()
    outgoing.instrument_requests()
    options.activate(tracing.make_conf())
    tracing.EXPORTER.clear()
    Recorder.received.clear()
    yield
    options.activate(None)
    outgoing.uninstrument_requests()


@contextmanager
def profiled_request() -> Iterator[trace.Span]:
    """What the bridge sets up while a profiled request runs: its span, the PROFILED mark."""
    span = trace.get_tracer("test").start_span("POST /v2/queues/{queue_name}/messages")
    context = context_api.set_value(PROFILED, True, trace.set_span_in_context(span))
    token = context_api.attach(context)
    try:
        yield span
    finally:
        context_api.detach(token)
        span.end()


def client_spans() -> list[Any]:
    return [s for s in tracing.finished() if s.kind == SpanKind.CLIENT]


def test_outside_a_profiled_request_nothing_is_added_or_recorded(server):
    assert requests.get(f"http://{server}/plain", timeout=5).status_code == 200
    assert "traceparent" not in Recorder.received[0]
    assert client_spans() == []


def test_a_call_in_a_profiled_request_is_a_client_span_the_receiver_can_continue(server):
    with profiled_request() as parent:
        requests.get(f"http://user:pw@{server}/orders?token=abc&page=2", timeout=5)
    [span] = client_spans()
    assert span.name == "GET"
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    attrs = dict(span.attributes or {})
    host, port = server.split(":")
    assert attrs["url.full"] == (
        f"http://REDACTED:REDACTED@{server}/orders?token=REDACTED&page=REDACTED"
    )
    assert (attrs["server.address"], attrs["server.port"]) == (host, int(port))
    assert attrs["http.request.method"] == "GET"
    assert attrs["http.response.status_code"] == 200
    version, trace_id, span_id, flags = Recorder.received[0]["traceparent"].split("-")
    assert (version, trace_id) == ("00", f"{span.context.trace_id:032x}")
    assert span_id == f"{span.context.span_id:016x}" and int(flags, 16) & 1  # sampled
    assert "abc" not in str(span.attributes) and "pw" not in str(span.attributes)


def test_an_error_status_or_exception_marks_the_span_without_the_url(server):
    with profiled_request():
        requests.get(f"http://{server}/fail", timeout=5)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{pick_port()}/x?token=abc", timeout=5)
    failed, refused = sorted(client_spans(), key=lambda s: s.start_time or 0)
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == "500"
    assert refused.status.status_code == StatusCode.ERROR
    assert refused.attributes["error.type"] == "ConnectionError"
    assert "abc" not in str(refused.status.description) + str(refused.attributes)


def test_a_purpose_names_the_span_and_drops_osprofiler_headers(server):
    what = outgoing.Purpose("notify orders", {"messaging.destination.name": "orders"})
    with profiled_request(), outgoing.purpose(what):
        headers = {"X-Trace-Info": "signed", "X-Trace-HMAC": "mac", "Keep": "me"}
        requests.get(f"http://{server}/hook", headers=headers, timeout=5)
        what.resend_count = 2
        requests.get(f"http://{server}/hook", timeout=5)
    first, resent = sorted(client_spans(), key=lambda s: s.start_time or 0)
    assert first.name == resent.name == "notify orders"
    assert first.attributes["messaging.destination.name"] == "orders"
    assert "http.request.resend_count" not in first.attributes
    assert resent.attributes["http.request.resend_count"] == 2
    sent = Recorder.received[0]
    assert "x-trace-info" not in sent and "x-trace-hmac" not in sent
    assert sent["keep"] == "me" and "traceparent" in sent


def test_trace_outgoing_requests_false_leaves_plain_calls_alone(server):
    options.activate(tracing.make_conf(trace_outgoing_requests=False))
    with profiled_request():
        requests.get(f"http://{server}/plain", timeout=5)
        with outgoing.purpose(outgoing.Purpose("notify q")):
            requests.get(f"http://{server}/hook", timeout=5)
    assert "traceparent" not in Recorder.received[0]
    assert [s.name for s in client_spans()] == ["notify q"]


def test_carry_runs_in_the_submitters_context_only_for_profiled_requests():
    def seen() -> tuple[bool, int]:
        return in_profiled_request(), trace.get_current_span().get_span_context().span_id

    def plain() -> None:
        pass

    with ThreadPoolExecutor(1) as pool:
        assert outgoing.carry(plain) is plain  # not profiled: nothing to carry
        assert pool.submit(outgoing.carry(seen)).result() == (False, 0)
        with profiled_request() as span:
            carried = outgoing.ContextExecutor(pool)
            assert carried.submit(seen).result() == (True, span.get_span_context().span_id)
            never = outgoing.ContextExecutor(pool, when=lambda: False)
            assert never.submit(seen).result() == (False, 0)
            assert carried._max_workers == 1  # anything else: the inner executor's
        assert pool.submit(seen).result() == (False, 0)  # the pool thread is clean again


def test_instrumenting_twice_wraps_once():
    outgoing.instrument_requests()
    outgoing.instrument_requests()
    send = requests.Session.send
    assert getattr(send, "__zaqar_otel__", False)
    assert not getattr(send.__wrapped__, "__zaqar_otel__", False)  # type: ignore[attr-defined]
    outgoing.uninstrument_requests()
    assert not getattr(requests.Session.send, "__zaqar_otel__", False)


def test_no_second_span_under_a_client_span_only_its_traceparent(server):
    """A profiled zaqarclient call is already a CLIENT span (an OSProfiler element)."""
    with profiled_request():
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT) as client_span:
            requests.get(f"http://{server}/plain", timeout=5)
    assert [s.name for s in client_spans()] == ["POST"]
    span_id = Recorder.received[0]["traceparent"].split("-")[2]
    assert span_id == f"{client_span.get_span_context().span_id:016x}"


def test_suppressed_instrumentation_is_respected(server):
    """OpenTelemetry exporters suppress instrumentation while they send spans."""
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with profiled_request(), suppress_instrumentation():
        requests.get(f"http://{server}/export", timeout=5)
    assert "traceparent" not in Recorder.received[0]
    assert client_spans() == []


def test_osprofiler_trace_headers_come_with_a_traceparent():
    from osprofiler import profiler, web

    profiler.clean()
    profiler.init(tracing.HMAC_KEY)
    try:
        assert "traceparent" not in web.get_trace_id_headers()  # not a profiled request
        with profiled_request() as span:
            headers = web.get_trace_id_headers()
        assert {"X-Trace-Info", "X-Trace-HMAC"} <= set(headers)
        assert headers["traceparent"].split("-")[2] == f"{span.get_span_context().span_id:016x}"
    finally:
        profiler.clean()
    with profiled_request():
        assert web.get_trace_id_headers() == {}  # no OSProfiler profiler: nothing to add to
