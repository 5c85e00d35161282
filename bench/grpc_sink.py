"""A counting OTLP/gRPC receiver for the benchmarks (``bench.sink`` is its HTTP sibling).

``python -m bench.grpc_sink GRPC_PORT COUNT_PORT`` serves the OTLP
``TraceService/Export`` method on 127.0.0.1:GRPC_PORT, parses each request
(C-accelerated protobuf) and counts the spans; ``GET /count`` on COUNT_PORT answers
``{"spans": N, "requests": M}``.

Usage::

    with grpc_sink.GrpcSink() as receiver:   # a subprocess (a ServerProcess)
        receiver.endpoint                    # 127.0.0.1:PORT (gRPC, insecure)
        receiver.count()                     # {"spans": ..., "requests": ...}
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import ROOT
from zaqar_otel.demo.process import LOCALHOST, ServerProcess, http_get, pick_port

_counts = {"spans": 0, "requests": 0}
_lock = threading.Lock()


def _export(request: bytes, context: Any) -> bytes:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb

    parsed = pb.ExportTraceServiceRequest.FromString(request)
    spans = sum(len(scope.spans) for rs in parsed.resource_spans for scope in rs.scope_spans)
    with _lock:
        _counts["spans"] += spans
        _counts["requests"] += 1
    return bytes(pb.ExportTraceServiceResponse().SerializeToString())


class _Count(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        with _lock:
            body = json.dumps(_counts).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class GrpcSink(ServerProcess):
    """The counting gRPC receiver in a subprocess (``python -m bench.grpc_sink``)."""

    name = "grpc-sink"

    def __init__(self) -> None:
        self.count_port = pick_port()
        super().__init__(startup_timeout=30)

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "bench.grpc_sink", str(self.port), str(self.count_port)]

    def _cwd(self) -> Path:
        return ROOT

    def _ports(self) -> list[int]:
        return [self.port, self.count_port]

    def _new_ports(self) -> bool:
        self.count_port = pick_port()
        return super()._new_ports()

    def _is_ready(self) -> bool:
        return http_get(f"http://{LOCALHOST}:{self.count_port}/count", timeout=1)[0] == 200

    @property
    def endpoint(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def count(self) -> dict[str, int]:
        url = f"http://{LOCALHOST}:{self.count_port}/count"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return dict(json.load(answer))


def main(argv: list[str] | None = None) -> int:
    import grpc

    grpc_port, count_port = (int(arg) for arg in (argv or sys.argv[1:3]))

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(_export)},  # bytes in, bytes out
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{LOCALHOST}:{grpc_port}")
    server.start()
    counter = ThreadingHTTPServer((LOCALHOST, count_port), _Count)
    try:
        counter.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
