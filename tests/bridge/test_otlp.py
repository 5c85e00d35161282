"""The bridge's OTLP exporters send what the SDK's send: to a capturing receiver (HTTP and
gRPC, bodies decoded and compared), with the same env settings, retries, and to Jaeger."""

from __future__ import annotations

import gzip
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as StockGrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as StockHttpExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from packaging.version import Version

from zaqar_otel.bridge import export, otlp

# The bridge's encoder is wired into the SDK's exporters where their layout is the one it was
# built against (SDK 1.45); older SDKs (the oldest compat row: 1.35) get the stock exporters.
# Either way the receiver must get what the stock exporter sends.
FAST = Version(version("opentelemetry-sdk")) >= Version("1.45")


class _Capture(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _CaptureServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.received.append((dict(self.headers), body))
            status = self.server.statuses.pop(0) if self.server.statuses else 200
        payload = ExportTraceServiceResponse().SerializeToString()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _CaptureServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Capture)
        self.lock = threading.Lock()
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []  # answers for the next requests (then 200)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def requests(self) -> list[tuple[dict[str, str], ExportTraceServiceRequest]]:
        decoded = []
        for headers, body in self.received:
            if headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            decoded.append((headers, ExportTraceServiceRequest.FromString(body)))
        return decoded


@pytest.fixture
def capture() -> Iterator[_CaptureServer]:
    server = _CaptureServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class _Ids(IdGenerator):
    """Fixed ids: the same spans again under another trace id."""

    def __init__(self, trace_id: int) -> None:
        self.trace = trace_id
        self.span = 0x1000

    def generate_trace_id(self) -> int:
        return self.trace

    def generate_span_id(self) -> int:
        self.span += 1
        return self.span


def _spans(trace_id: int = 0x5EED) -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "otlp-test", "host.name": "h"}),
        id_generator=_Ids(trace_id),
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("zaqar_otel.test", "1.0")
    remote = SpanContext(0xABCDEF, 0x42, True, TraceFlags(1))
    t0 = 1_700_000_000_000_000_000
    root = tracer.start_span(
        "GET /v2/queues", kind=SpanKind.SERVER, links=[Link(remote)], start_time=t0
    )
    root.set_attributes({"http.request.method": "GET", "http.response.status_code": 200})
    child = tracer.start_span(
        "redis_message_controller MessageController.post",
        context=set_span_in_context(root),
        attributes={"list": ["a", "b"], "ratio": 0.5, "ok": True, "count": 3},
        start_time=t0 + 1000,
    )
    child.add_event("exception", {"exception.type": "KeyError"}, timestamp=t0 + 5000)
    child.set_status(Status(StatusCode.ERROR, "KeyError"))
    child.end(end_time=t0 + 100_000)
    root.end(end_time=t0 + 200_000)
    return list(memory.get_finished_spans())


def _export(exporter, spans) -> None:
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def test_http_sends_what_the_sdk_sends_with_the_env_settings(capture, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", capture.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=ops,authorization=Bearer t")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    spans = _spans()
    ours = otlp.HttpSpanExporter()
    assert ours.fast is FAST
    _export(ours, spans)
    _export(StockHttpExporter(), spans)
    (our_headers, our_request), (their_headers, their_request) = capture.requests()
    assert our_request == their_request
    assert len(our_request.resource_spans[0].scope_spans[0].spans) == 2
    for name in ("Content-Type", "Content-Encoding", "x-tenant", "authorization"):
        assert our_headers.get(name) == their_headers.get(name), name
    assert our_headers["Content-Encoding"] == "gzip"


def test_http_retries_a_503_like_the_sdk(capture):
    capture.statuses = [503]
    started = time.monotonic()
    _export(otlp.HttpSpanExporter(endpoint=capture.url, timeout=5), _spans())
    assert len(capture.requests()) == 2  # refused once, then delivered
    assert time.monotonic() - started >= 0.5  # after a backoff


def test_http_failure_is_reported_not_raised(capture):
    capture.statuses = [400]
    exporter = otlp.HttpSpanExporter(endpoint=capture.url, timeout=5)
    assert exporter.export(_spans()) is SpanExportResult.FAILURE
    exporter.shutdown()


def test_build_exporter_makes_the_bridge_exporters():
    http = export.build_exporter(export.parse_connection_string("otel://127.0.0.1:4318"))
    grpc_exporter = export.build_exporter(export.parse_connection_string("otel://127.0.0.1:4317"))
    try:
        assert isinstance(http, otlp.HttpSpanExporter) and http.fast is FAST
        assert isinstance(grpc_exporter, StockGrpcExporter) and grpc_exporter.fast is FAST
    finally:
        http.shutdown()
        grpc_exporter.shutdown()


@pytest.fixture
def grpc_capture() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []

    def handle(request: bytes, context: object) -> bytes:
        received.append(request)
        return ExportTraceServiceResponse().SerializeToString()

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(handle)},  # raw bytes in and out
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", received
    server.stop(None)


def test_grpc_sends_what_the_sdk_sends(grpc_capture, monkeypatch):
    endpoint, received = grpc_capture
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=ops")
    spans = _spans()
    ours = otlp.grpc_exporter_class()(endpoint=endpoint, insecure=True)
    assert ours.fast is FAST
    _export(ours, spans)
    _export(StockGrpcExporter(endpoint=endpoint, insecure=True), spans)
    ours_request, theirs_request = (ExportTraceServiceRequest.FromString(b) for b in received)
    assert ours_request == theirs_request
    assert len(ours_request.resource_spans[0].scope_spans[0].spans) == 2


def _jaeger_trace(jaeger_server, trace_id: int) -> dict:
    url = f"{jaeger_server.query_url}/api/v3/traces/{trace_id:032x}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                found = json.load(answer)
            spans = [
                span
                for resource in found["result"]["resourceSpans"]
                for scope in resource["scopeSpans"]
                for span in scope["spans"]
            ]
            if len(spans) == 2:
                return found
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"trace {trace_id:x} not in Jaeger")
        time.sleep(0.2)


def _without_trace_ids(trace: dict) -> str:
    text = json.dumps(trace, sort_keys=True)
    for span in (
        s for r in trace["result"]["resourceSpans"] for sc in r["scopeSpans"] for s in sc["spans"]
    ):
        text = text.replace(span["traceId"], "TRACE")
    return text


def test_jaeger_stores_the_same_trace_from_both(jaeger_server):
    ours_id, theirs_id = 0x1A2B3C4D5E6F7081, 0x1A2B3C4D5E6F7082
    url = f"{jaeger_server.otlp_http_endpoint}/v1/traces"
    _export(otlp.HttpSpanExporter(endpoint=url), _spans(ours_id))
    _export(StockHttpExporter(endpoint=url), _spans(theirs_id))
    ours, theirs = _jaeger_trace(jaeger_server, ours_id), _jaeger_trace(jaeger_server, theirs_id)
    assert _without_trace_ids(ours) == _without_trace_ids(theirs)
    assert "redis_message_controller MessageController.post" in json.dumps(ours)
