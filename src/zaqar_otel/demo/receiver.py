"""An in-process OTLP/HTTP (protobuf) trace receiver, and the OTLP request decoder.

In: ``POST /v1/traces`` requests from any OTLP/HTTP exporter. Out: the spans, decoded into
:class:`ReceivedSpan` records. The demo shows its trees from here while there is no Jaeger
(yet)::

    from zaqar_otel.demo.receiver import OTLPReceiver

    with OTLPReceiver() as receiver:      # 127.0.0.1, a free port
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        ...                               # something exports spans
        for span in receiver.spans():
            print(span.trace_id, span.name, span.kind_name)

:func:`decode_export_request` turns one serialized ``ExportTraceServiceRequest`` into
:class:`ReceivedSpan` records. Only OTLP/HTTP with protobuf bodies (optionally gzip or
deflate) is accepted; JSON bodies get HTTP 415. Subclasses see every request in
:meth:`OTLPReceiver.handle` (the tests' receiver adds fault switches there).
"""

from __future__ import annotations

import gzip
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

__all__ = [
    "SPAN_KIND_NAMES",
    "STATUS_CODE_NAMES",
    "OTLPReceiver",
    "ReceivedSpan",
    "decode_export_request",
]

LOCALHOST = "127.0.0.1"

SPAN_KIND_NAMES = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER",
                   5: "CONSUMER"}  # fmt: skip
STATUS_CODE_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as decoded from OTLP.

    ``kind`` is the OTLP enum value (0 unspecified, 1 internal, 2 server, 3 client, 4 producer,
    5 consumer) - *not* ``opentelemetry.trace.SpanKind`` (which is one less); compare
    ``kind_name`` with ``SpanKind.X.name`` instead. ``status_code`` is 0 unset, 1 ok, 2 error
    (same numbers as ``opentelemetry.trace.StatusCode``).
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    events: list[tuple[str, dict[str, Any]]]
    service_name: str
    scope_name: str
    scope_version: str = ""
    resource_attributes: dict[str, Any] = field(default_factory=dict)
    links: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    @property
    def kind_name(self) -> str:
        return SPAN_KIND_NAMES.get(self.kind, str(self.kind))

    @property
    def status_name(self) -> str:
        return STATUS_CODE_NAMES.get(self.status_code, str(self.status_code))

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def is_root(self) -> bool:
        return not self.parent_span_id


def _any_value(value: Any) -> Any:
    """opentelemetry.proto AnyValue -> Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


def decode_export_request(body: bytes) -> list[ReceivedSpan]:
    """Decode a serialized ``ExportTraceServiceRequest`` into :class:`ReceivedSpan` records."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=int(span.kind),
                        start_ns=int(span.start_time_unix_nano),
                        end_ns=int(span.end_time_unix_nano),
                        attributes=_attributes(span.attributes),
                        status_code=int(span.status.code),
                        status_message=span.status.message,
                        events=[(e.name, _attributes(e.attributes)) for e in span.events],
                        service_name=service,
                        scope_name=scope_spans.scope.name,
                        scope_version=scope_spans.scope.version,
                        resource_attributes=resource,
                        links=[
                            (link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
                            for link in span.links
                        ],
                    )
                )
    return spans


R = TypeVar("R", bound="OTLPReceiver")


class _Handler(BaseHTTPRequestHandler):
    server: _ReceiverHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if status in (429, 503):
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(*self.server.receiver.answer_get(self.path))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status = self.server.receiver.handle(self.path, headers, body)
        if status == 0:  # no answer: drop the connection
            self.close_connection = True
        elif status == 200:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                ExportTraceServiceResponse,
            )

            payload = ExportTraceServiceResponse().SerializeToString()
            self._reply(200, payload, "application/x-protobuf")
        else:
            self._reply(status, f"OTLPReceiver: HTTP {status}\n".encode())


class _ReceiverHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], receiver: OTLPReceiver) -> None:
        self.receiver = receiver
        super().__init__(address, _Handler)


class OTLPReceiver:
    """In-process OTLP/HTTP trace receiver (protobuf, optionally gzip/deflate) on 127.0.0.1.

    ``POST /v1/traces`` bodies are decoded into :class:`ReceivedSpan` records, kept in
    arrival order (:meth:`spans`). Thread-safe: ``lock`` (a condition) guards them and is
    notified whenever spans arrive.
    """

    def __init__(self, port: int = 0) -> None:
        self.lock = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._httpd = _ReceiverHTTPServer((LOCALHOST, port), self)
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self: R) -> R:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"OTLPReceiver:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self: R) -> R:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- endpoints
    @property
    def endpoint(self) -> str:
        """Base URL (OTEL_EXPORTER_OTLP_ENDPOINT style; exporters append /v1/traces)."""
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def traces_url(self) -> str:
        """Full URL for ``OTLPSpanExporter(endpoint=...)``."""
        return f"{self.endpoint}/v1/traces"

    # -- results
    def spans(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self._spans)

    # -- called by the handler threads
    def answer_get(self, path: str) -> tuple[int, bytes]:
        """A GET's status and body."""
        return (200, b"OTLP receiver\n") if path == "/" else (404, b"")

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        """Decode and keep one POST's spans; the HTTP status to answer (0: none)."""
        status, spans = self.decode(path, headers, body)
        with self.lock:
            self._spans.extend(spans)
            self.lock.notify_all()
        return status

    @staticmethod
    def decode(path: str, headers: dict[str, str], body: bytes) -> tuple[int, list[ReceivedSpan]]:
        """(HTTP status, spans) for one POST: 404 off /v1/traces, 415 not protobuf, 400 bad."""
        if path.split("?")[0] != "/v1/traces":
            return 404, []
        ctype = headers.get("content-type", "application/x-protobuf").split(";")[0].strip()
        if ctype not in ("application/x-protobuf", "application/protobuf"):
            return 415, []
        encoding = headers.get("content-encoding", "").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("", "identity"):
                return 415, []
            return 200, decode_export_request(body)
        except Exception:
            return 400, []


class RelayReceiver(OTLPReceiver):
    """An :class:`OTLPReceiver` that keeps the requests it answered 200 and, from
    :meth:`relay_to` on, sends them (and every later one) to another OTLP/HTTP receiver:
    the demo's traces go into Jaeger once Jaeger is there."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self._kept: list[tuple[dict[str, str], bytes]] = []
        self._target: str | None = None

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        status = super().handle(path, headers, body)
        if status == 200:
            with self.lock:
                target = self._target
                if target is None:
                    self._kept.append((headers, body))
            if target is not None:
                _post(target, headers, body)
        return status

    def relay_to(self, traces_url: str) -> int:
        """Send what was received so far to ``traces_url``, and what comes later as it comes;
        how many of the requests so far it accepted."""
        with self.lock:
            self._target, kept, self._kept = traces_url, self._kept, []
        return sum(_post(traces_url, headers, body) for headers, body in kept)


def _post(url: str, headers: dict[str, str], body: bytes) -> bool:
    """POST one OTLP request as it came (content type and encoding kept); True if accepted."""
    import urllib.request

    keep = ("content-type", "content-encoding")
    request = urllib.request.Request(url, data=body, method="POST")
    for name in keep:
        if name in headers:
            request.add_header(name, headers[name])
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status) == 200
    except OSError:
        return False
