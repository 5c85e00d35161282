"""Where spans go: the OTLP exporter chosen by ``connection_string`` and ``OTEL_*``.

``otel://`` alone: everything comes from the standard environment variables
(``OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT``, ``_PROTOCOL``, ``_HEADERS``,
``_CERTIFICATE``, ``_CLIENT_KEY``, ``_CLIENT_CERTIFICATE``, ``_COMPRESSION``,
``_TIMEOUT``; ``OTEL_TRACES_EXPORTER`` = otlp, console or none).

``otel://HOST:PORT``: that endpoint. Its protocol is, first found:
``?protocol=grpc`` or ``?protocol=http/protobuf`` in the string; else
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``; else
grpc for port 4317 and http/protobuf for any other port. ``?tls=true`` uses
TLS (https, or a secure gRPC channel); certificates still come from ``OTEL_*``.

``?query=http://jaeger:16686`` (any of the forms above) names Jaeger's query API,
where ``osprofiler trace show``/``list`` read traces back (``OTelDriver.get_report``);
without it, ``$ZAQAR_OTEL_JAEGER_QUERY``. It has no effect on export.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib import parse

import requests
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from zaqar_otel.bridge.logs import LOG

_SAMPLED = 0x01
GRPC = "grpc"
HTTP = "http/protobuf"
_PROTOCOLS = {GRPC, HTTP, "http/json"}


@dataclass(frozen=True)
class Endpoint:
    """What an ``otel://`` connection string asks for (None: from OTEL_*)."""

    url: str | None
    protocol: str
    tls: bool = False
    query: str | None = None  # Jaeger query API (``?query=``), for reading traces back


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def env_protocol() -> str | None:
    return _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL")


def parse_connection_string(connection_string: str) -> Endpoint:
    """Parse ``otel://[HOST:PORT][?protocol=...&tls=...]``; raise ``ValueError`` if bad."""
    parsed = parse.urlparse(connection_string)
    if parsed.scheme != "otel":
        raise ValueError(f"not an otel:// connection string: {connection_string!r}")
    query = dict(parse.parse_qsl(parsed.query))
    unknown = set(query) - {"protocol", "tls", "query"}
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} in {connection_string!r}")
    tls = query.get("tls", "false").lower() in ("1", "true", "yes")
    jaeger = query.get("query")
    if jaeger is not None:
        target = parse.urlparse(jaeger)
        if target.scheme not in ("http", "https") or not target.netloc:
            raise ValueError(f"?query= needs an http(s)://HOST:PORT URL, not {jaeger!r}")
        jaeger = jaeger.rstrip("/")
    try:
        port = parsed.port
    except ValueError as error:
        raise ValueError(f"bad port in {connection_string!r}") from error
    protocol = query.get("protocol") or env_protocol()
    if protocol and protocol not in _PROTOCOLS:
        raise ValueError(f"unknown OTLP protocol {protocol!r} (grpc or http/protobuf)")
    if not parsed.hostname:
        return Endpoint(None, protocol or HTTP, tls, jaeger)
    if protocol is None:
        protocol = GRPC if port == 4317 else HTTP
    if port is None:
        port = 4317 if protocol == GRPC else 4318
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    scheme = "https" if tls else "http"
    return Endpoint(f"{scheme}://{host}:{port}", protocol, tls, jaeger)


def build_exporter(endpoint: Endpoint) -> SpanExporter | None:
    """The exporter for ``endpoint`` and ``OTEL_TRACES_EXPORTER``; None for 'none'."""
    kinds = [k.strip() for k in (_env("OTEL_TRACES_EXPORTER") or "otlp").split(",")]
    if "none" in kinds:
        return None
    if "console" in kinds and "otlp" not in kinds:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    # the SDK's OTLP exporters, encoding with zaqar_otel.bridge.encoder (zaqar_otel.bridge.otlp)
    if endpoint.protocol == GRPC:
        try:
            from zaqar_otel.bridge.otlp import grpc_exporter_class

            GrpcExporter = grpc_exporter_class()
        except ImportError as error:
            raise ValueError(
                "OTLP over gRPC needs the grpc extra: pip install 'zaqar-otel[grpc]'"
            ) from error
        if endpoint.url is None:
            return GrpcExporter()  # type: ignore[no-any-return]
        return GrpcExporter(endpoint=endpoint.url, insecure=not endpoint.tls)  # type: ignore[no-any-return]
    from zaqar_otel.bridge.otlp import HttpSpanExporter as HttpExporter

    session = PinnedVerifySession()
    if endpoint.url is None:
        return HttpExporter(session=session)
    return HttpExporter(endpoint=f"{endpoint.url}/v1/traces", session=session)


class PinnedVerifySession(requests.Session):
    """A requests session whose own ``verify`` (the OTLP CA file) is not overridden.

    requests lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` win over
    ``session.verify`` (the exporter puts ``OTEL_EXPORTER_OTLP_CERTIFICATE``
    there); on machines that set those variables the collector's CA would be
    ignored and every export would fail certificate verification.
    """

    def merge_environment_settings(
        self, url: str, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        settings: dict[str, Any] = super().merge_environment_settings(
            url, proxies, stream, verify, cert
        )
        if verify is None and isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings


class GuardedExporter(SpanExporter):
    """Never raises; counts spans; says once that export fails and once that it is back."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.exported = 0
        self.failed = 0
        self._failing = False
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except requests.RequestException:
            # the collector is down or does not answer: the OTLP/HTTP exporter before
            # 1.40 raises requests' ConnectionError / Timeout; later ones return FAILURE
            result = SpanExportResult.FAILURE
        except Exception:
            result = SpanExportResult.FAILURE
            if not self._failing:
                LOG.warning("zaqar-otel: span export raised", exc_info=True)
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
                if self._failing:
                    self._failing = False
                    LOG.warning(
                        "zaqar-otel: span export works again (%d spans lost meanwhile)",
                        self.failed,
                    )
            else:
                self.failed += len(spans)
                if not self._failing:
                    self._failing = True
                    LOG.warning(
                        "zaqar-otel: cannot export spans (collector down or unreachable?); "
                        "tracing goes on, lost spans are counted"
                    )
        return result

    def shutdown(self) -> None:
        try:
            self.inner.shutdown()
        except Exception:
            LOG.debug("zaqar-otel: exporter shutdown failed", exc_info=True)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self.inner.force_flush(timeout_millis)
        except Exception:
            return False


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans it drops because its queue is full.

    A span that finds the queue full is dropped here (the newest, not the
    oldest as the SDK would) and counted (``dropped``), exactly: the check and
    the enqueue are one step under a lock (the exporter thread only ever makes
    room meanwhile). The drop is said once in the log; the SDK's own per-span
    log record, which cost more than the span, is never built.
    """

    def __init__(self, exporter: SpanExporter, **kwargs: int) -> None:
        super().__init__(exporter, **kwargs)  # type: ignore[arg-type]
        self.dropped = 0
        self._warned = False
        self._enqueue = threading.Lock()

    def queued(self) -> int:
        queue = getattr(getattr(self, "_batch_processor", None), "_queue", None)
        return len(queue) if queue is not None else 0

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        batch: Any = getattr(self, "_batch_processor", None)
        queue = getattr(batch, "_queue", None)
        if context is None or not context.trace_flags & _SAMPLED or queue is None:
            super().on_end(span)  # not sampled (dropped), or an SDK without a queue
            return
        limit = queue.maxlen
        with self._enqueue:
            full = limit is not None and len(queue) >= limit
            if full:
                self.dropped += 1
            else:
                batch.emit(span)
        if full and not self._warned:
            self._warned = True
            LOG.warning(
                "zaqar-otel: the span queue is full, spans are dropped and counted "
                "(OTEL_BSP_MAX_QUEUE_SIZE, collector too slow or down?)"
            )
