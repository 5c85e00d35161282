"""Local OTLP/HTTP endpoints for the benchmarks: a fast counting receiver and a blackhole.

``python -m bench.sink`` serves ``POST /v1/traces`` on a free 127.0.0.1 port
(printed as the first stdout line), parses each body (gzip or deflate too) as an
``ExportTraceServiceRequest`` (protobuf, C-accelerated: no per-span Python
objects) and counts the spans; ``GET /count`` answers
``{"spans": N, "requests": M}``. It runs in its own process so that its CPU is
not the benchmarked process's GIL.

Usage::

    with sink.Sink() as receiver:        # a subprocess
        receiver.endpoint                # http://127.0.0.1:PORT
        receiver.count()                 # {"spans": ..., "requests": ...}
    with sink.Blackhole() as hole:       # accepts TCP connections, never answers
        hole.endpoint
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import subprocess
import sys
import threading
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from bench.common import ROOT

LOCALHOST = "127.0.0.1"


class _Counter:
    def __init__(self) -> None:
        self.spans = 0
        self.requests = 0
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        counter = self.server.counter
        with counter.lock:
            body = json.dumps({"spans": counter.spans, "requests": counter.requests})
        self._reply(200, body.encode(), "application/json")

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb

        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        request = pb.ExportTraceServiceRequest.FromString(body)
        spans = sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
        counter = self.server.counter
        with counter.lock:
            counter.spans += spans
            counter.requests += 1
        self._reply(
            200, pb.ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.counter = _Counter()
        super().__init__((LOCALHOST, 0), _Handler)


class Sink:
    """The counting receiver in a subprocess (``python -m bench.sink``)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self) -> Sink:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.sink"], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"bench.sink did not start (said {line!r})")
        self.port = int(line)
        return self

    @property
    def endpoint(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def count(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.endpoint}/count", timeout=10) as answer:
            return dict(json.load(answer))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Blackhole:
    """A port that completes TCP handshakes (the kernel's backlog) and never answers."""

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

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def refused_endpoint() -> str:
    """An endpoint where nothing listens (connection refused)."""
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        port = probe.getsockname()[1]
    return f"http://{LOCALHOST}:{port}"


def main() -> int:
    server = _Server()
    print(server.server_address[1], flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
