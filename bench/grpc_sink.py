"""A counting OTLP/gRPC receiver for the benchmarks (``bench.sink`` is its HTTP sibling).

``python -m bench.grpc_sink`` serves the OTLP ``TraceService/Export`` method on a free
127.0.0.1 port, parses each request (C-accelerated protobuf) and counts the spans;
``GET /count`` on a second port answers ``{"spans": N, "requests": M}``. The first
stdout line is ``GRPC_PORT HTTP_PORT``.

Usage::

    with grpc_sink.GrpcSink() as receiver:   # a subprocess
        receiver.endpoint                    # 127.0.0.1:PORT (gRPC, insecure)
        receiver.count()                     # {"spans": ..., "requests": ...}
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from bench.common import ROOT

LOCALHOST = "127.0.0.1"
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


class GrpcSink:
    """The counting gRPC receiver in a subprocess (``python -m bench.grpc_sink``)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.port = self.count_port = 0

    def start(self) -> GrpcSink:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.grpc_sink"], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        ports = self.process.stdout.readline().split()
        if len(ports) != 2 or not all(p.isdigit() for p in ports):
            self.stop()
            raise RuntimeError(f"bench.grpc_sink did not start (said {ports!r})")
        self.port, self.count_port = int(ports[0]), int(ports[1])
        return self

    @property
    def endpoint(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def count(self) -> dict[str, int]:
        url = f"http://{LOCALHOST}:{self.count_port}/count"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return dict(json.load(answer))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> GrpcSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> int:
    import grpc

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(_export)},  # bytes in, bytes out
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{LOCALHOST}:0")
    server.start()
    counter = ThreadingHTTPServer((LOCALHOST, 0), _Count)
    print(port, counter.server_address[1], flush=True)
    try:
        counter.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
