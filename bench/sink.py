"""Local OTLP/HTTP endpoints for the benchmarks: a fast counting receiver and a blackhole.

``python -m bench.sink PORT`` serves ``POST /v1/traces`` on 127.0.0.1:PORT
(the package's OTLP receiver, counting instead of decoding), parses each body (gzip or
deflate too) as an
``ExportTraceServiceRequest`` (protobuf, C-accelerated: no per-span Python
objects) and counts the spans; ``GET /count`` answers
``{"spans": N, "requests": M}``. It runs in its own process so that its CPU is
not the benchmarked process's GIL.

Usage::

    with sink.Sink() as receiver:        # a subprocess (a ServerProcess)
        receiver.endpoint                # http://127.0.0.1:PORT
        receiver.count()                 # {"spans": ..., "requests": ...}
    with closing(sink.Blackhole()) as hole:  # accepts TCP connections, never answers
        hole.endpoint
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import sys
import threading
import urllib.request
import zlib
from pathlib import Path

from bench.common import ROOT
from zaqar_otel.demo.process import LOCALHOST, ServerProcess, http_get
from zaqar_otel.demo.receiver import OTLPReceiver


class CountingReceiver(OTLPReceiver):
    """Counts the spans of each POST: C-accelerated protobuf parsing, no per-span objects."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.span_count = self.request_count = 0

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb

        encoding = headers.get("content-encoding")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        request = pb.ExportTraceServiceRequest.FromString(body)
        spans = sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
        with self.lock:
            self.span_count += spans
            self.request_count += 1
        return 200

    def answer_get(self, path: str) -> tuple[int, bytes]:
        with self.lock:
            counts = {"spans": self.span_count, "requests": self.request_count}
        return 200, json.dumps(counts).encode()


class Sink(ServerProcess):
    """The counting receiver in a subprocess (``python -m bench.sink PORT``)."""

    name = "sink"

    def __init__(self) -> None:
        super().__init__(startup_timeout=30)

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "bench.sink", str(self.port)]

    def _cwd(self) -> Path:
        return ROOT

    def _is_ready(self) -> bool:
        return http_get(f"{self.endpoint}/count", timeout=1)[0] == 200

    @property
    def endpoint(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def count(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.endpoint}/count", timeout=10) as answer:
            return dict(json.load(answer))


class Blackhole:
    """A port that completes TCP handshakes (the kernel's backlog) and never answers;
    ``with contextlib.closing(Blackhole()) as hole``."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOCALHOST, 0))
        self.sock.listen(1024)
        self.port = int(self.sock.getsockname()[1])

    @property
    def endpoint(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def close(self) -> None:
        self.sock.close()


def refused_endpoint() -> str:
    """An endpoint where nothing listens (connection refused)."""
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        port = probe.getsockname()[1]
    return f"http://{LOCALHOST}:{port}"


def main(argv: list[str] | None = None) -> int:
    port = int((argv or sys.argv[1:] or ["0"])[0])
    with CountingReceiver(port), contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
