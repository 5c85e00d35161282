"""An in-process OTLP/HTTP (protobuf) trace receiver, and the OTLP request decoder.

Used by the demo when there is no Jaeger to send spans to, and by the tests as a collector
stand-in with fault switches::

    from zaqar_otel.demo.receiver import OTLPReceiver

    with OTLPReceiver() as receiver:      # 127.0.0.1, a free port
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        ...                               # something exports spans
        for span in receiver.wait_for(3): # the first 3 spans, decoded
            print(span.trace_id, span.name, span.kind_name)

:func:`decode_export_request` turns one serialized ``ExportTraceServiceRequest`` into
:class:`ReceivedSpan` records. Only OTLP/HTTP with protobuf bodies (optionally gzip or
deflate) is accepted; JSON bodies get HTTP 415.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = [
    "SPAN_KIND_NAMES",
    "STATUS_CODE_NAMES",
    "OTLPReceiver",
    "ReceivedRequest",
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


@dataclass(frozen=True)
class ReceivedRequest:
    """One POST the receiver got (whatever it answered)."""

    path: str
    headers: dict[str, str]
    status: int
    span_count: int


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
        self._reply(404 if self.path != "/" else 200, b"OTLP receiver\n")

    def do_POST(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, _ = receiver._handle(self.path, headers, body)
        if status == 0:  # hung and released: drop the connection without an answer
            self.close_connection = True
            return
        if status == 200:
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

    ``POST /v1/traces`` bodies are decoded into :class:`ReceivedSpan` records. Thread-safe.
    Fault switches: :meth:`fail_with` (answer an HTTP error), :meth:`hang` (hold requests
    without answering until :meth:`heal`/:meth:`stop`; then the connection is dropped),
    each optionally for the next ``count`` requests only.
    """

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._requests: list[ReceivedRequest] = []
        self._fail_status: int | None = None
        self._fail_count: int | None = None
        self._hang_count: int | None = None
        self._hanging = False
        self._release = threading.Event()
        self._httpd = _ReceiverHTTPServer((LOCALHOST, port), self)
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> OTLPReceiver:
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
        self.heal()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
        with self._lock:
            return list(self._spans)

    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def requests_received(self) -> int:
        """All POSTs so far, including the ones answered with an error or hung."""
        with self._lock:
            return len(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._requests.clear()

    def wait_for(
        self,
        predicate_or_count: int | Callable[[list[ReceivedSpan]], object],
        timeout: float = 10.0,
    ) -> list[ReceivedSpan]:
        """Wait until ``count`` spans arrived or ``predicate(spans)`` is true; the spans."""
        predicate: Callable[[list[ReceivedSpan]], object]
        if isinstance(predicate_or_count, int):
            count = predicate_or_count

            def predicate(spans: list[ReceivedSpan]) -> object:
                return len(spans) >= count

            what = f"{count} span(s)"
        else:
            predicate = predicate_or_count
            what = getattr(predicate, "__name__", "predicate")
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                spans = list(self._spans)
                if predicate(spans):
                    return spans
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"OTLPReceiver: {what} not satisfied after {timeout}s; got "
                        f"{len(spans)} span(s) {[s.name for s in spans]} in "
                        f"{len(self._requests)} request(s)"
                    )
                self._lock.wait(min(remaining, 0.5))

    # -- fault switches
    def fail_with(self, status: int = 503, count: int | None = None) -> None:
        """Answer ``status`` (no spans kept) to every POST, or to the next ``count`` ones."""
        with self._lock:
            self._fail_status, self._fail_count = status, count

    def hang(self, count: int | None = None) -> None:
        """Hold POSTs without answering (all, or the next ``count``) until heal()/stop()."""
        with self._lock:
            self._release.clear()
            self._hanging, self._hang_count = True, count

    def heal(self) -> None:
        """Back to normal: answer 200 again and release the hung requests."""
        with self._lock:
            self._fail_status = self._fail_count = None
            self._hanging, self._hang_count = False, None
            self._release.set()
            self._lock.notify_all()

    # -- called by the handler threads
    def _handle(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[ReceivedSpan]]:
        with self._lock:
            hang = self._hanging
            if hang and self._hang_count is not None:
                self._hang_count -= 1
                if self._hang_count <= 0:
                    self._hanging = False
            fail = None if hang else self._fail_status
            if fail is not None and self._fail_count is not None:
                self._fail_count -= 1
                if self._fail_count <= 0:
                    self._fail_status = self._fail_count = None
        status, spans = 200, list[ReceivedSpan]()
        if hang:
            self._release.wait(120)
            status = 0
        elif fail is not None:
            status = fail
        elif path.split("?")[0] != "/v1/traces":
            status = 404
        else:
            status, spans = self._decode(headers, body)
        with self._lock:
            self._requests.append(ReceivedRequest(path, headers, status, len(spans)))
            self._spans.extend(spans)
            self._lock.notify_all()
        return status, spans

    @staticmethod
    def _decode(headers: dict[str, str], body: bytes) -> tuple[int, list[ReceivedSpan]]:
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
