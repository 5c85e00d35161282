"""A webhook subscriber instrumented with OpenTelemetry, for the e2e tests.

    python -m tests.apps.subscriber --port 8123 [--status 200]

A WSGI app behind OpenTelemetry's own WSGI middleware (opentelemetry-instrumentation-wsgi)
and the OTel SDK, exporting by OTLP/HTTP as configured by ``OTEL_*`` (service name
``subscriber`` unless ``OTEL_SERVICE_NAME`` says otherwise): a request with a W3C
``traceparent`` becomes a SERVER span in the caller's trace. Every POST is recorded (path,
headers, body) and answered with ``--status``; ``GET /deliveries`` (not traced) returns the
recorded POSTs as JSON. Spans are exported as each request ends (a simple span processor).
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

StartResponse = Callable[..., Any]
_deliveries: list[dict[str, Any]] = []
_lock = threading.Lock()


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").title(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    return headers


def hook(status: int) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length).decode("utf-8", "replace")
        span = trace.get_current_span().get_span_context()
        with _lock:
            _deliveries.append(
                {
                    "path": environ.get("PATH_INFO", ""),
                    "query": environ.get("QUERY_STRING", ""),
                    "headers": _headers(environ),
                    "body": body,
                    "span": {
                        "trace_id": format(span.trace_id, "032x"),
                        "span_id": format(span.span_id, "016x"),
                    },
                }
            )
        # Content-Length: the caller need not wait for the connection to close
        start_response(f"{status} X", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    return app


def dispatcher(traced: Any) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO") == "/deliveries":
            with _lock:
                data = json.dumps(_deliveries).encode()
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
            start_response("200 OK", headers)
            return [data]
        result: Iterable[bytes] = traced(environ, start_response)
        return result

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--status", type=int, default=200)
    args = parser.parse_args(argv)
    resource = Resource.create({SERVICE_NAME: "subscriber"}).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    app = dispatcher(OpenTelemetryMiddleware(hook(args.status), tracer_provider=provider))
    with make_server("127.0.0.1", args.port, app, handler_class=_Quiet) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
