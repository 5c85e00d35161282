"""The OSProfiler driver behind ``connection_string = otel://``.

OSProfiler finds drivers by subclass and name: importing this module (done by
``import zaqar_otel``) is what makes ``otel://`` known. The driver never raises
into the traced code: a bad connection string is reported by OSProfiler's own
``notifier.create`` (which then disables profiling with an error in the log),
and every notification goes through ``SpanBridge.handle``, which swallows and
logs (once) whatever goes wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oslo_config import cfg
from osprofiler.drivers import base

from zaqar_otel.bridge import options

if TYPE_CHECKING:  # the modules themselves are imported when the driver is used
    from zaqar_otel.bridge.export import Endpoint
    from zaqar_otel.bridge.flags import Flags
    from zaqar_otel.bridge.provider import HintedIdGenerator
    from zaqar_otel.bridge.spans import SpanBridge


def service_name(project: str | None, service: str | None) -> str:
    """The default service.name: what OSProfiler's init passed (project-service).

    ``("zaqar", "api")`` -> ``zaqar-api``; ``("Zaqar", "Zaqar-server")`` -> ``zaqar-server``.
    """
    project = (project or "").lower()
    service = (service or "").lower()
    if project and service and not service.startswith(project):
        return f"{project}-{service}"
    return service or project or "osprofiler"


def host_attributes(provider: Any, host: str | None) -> dict[str, str]:
    """``host.name`` for every bridge span, only if the provider's resource lacks it.

    The bridge's own provider has it in its resource. A provider set up by someone
    else (``opentelemetry-instrument``) keeps the resource the operator configured
    (``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS=host,process`` adds the host there);
    until it has ``host.name``, the bridge's spans carry it so that hosts stay apart.
    """
    import socket

    from opentelemetry.semconv._incubating.attributes.host_attributes import HOST_NAME

    resource = getattr(provider, "resource", None)
    if resource is not None and resource.attributes.get(HOST_NAME):
        return {}
    return {HOST_NAME: host or socket.gethostname()}


class OTelDriver(base.Driver):
    """OSProfiler events as OpenTelemetry spans, exported by OTLP."""

    def __init__(
        self,
        connection_str: str,
        project: str | None = None,
        service: str | None = None,
        host: str | None = None,
        conf: cfg.ConfigOpts = cfg.CONF,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            connection_str, project=project, service=service, host=host, conf=conf, **kwargs
        )
        # Heavy imports only when the driver is really used.
        from zaqar_otel.bridge import export, logs, spans

        self.conf = conf
        self._profiler_group: Any = None
        self.bridge: spans.SpanBridge | None = None
        self.exporter: export.GuardedExporter | None = None
        self.processor: export.CountingBatchSpanProcessor | None = None
        self.backends: dict[str, bool] = {}
        self._sqlalchemy_active: Callable[[], bool] = lambda: False
        endpoint = export.parse_connection_string(connection_str)  # a bad one raises here
        if "conn_str" in kwargs:
            # OSProfiler's CLI (osprofiler trace show / list) builds the driver
            # with its argument namespace only to read traces back: no provider,
            # exporter, instrumentation or signal handler then.
            return
        options.register_opts(conf)
        options.activate(conf)
        logs.install()
        hints = self._use_or_build_provider(endpoint, service_name(project, service), host)
        self.bridge = self._make_bridge(hints, host)
        self._instrument_backends()
        global _current
        _current = self
        _register_metrics()

    def _use_or_build_provider(
        self, endpoint: Endpoint, service: str, host: str | None
    ) -> HintedIdGenerator:
        """The process's SDK TracerProvider, or one built for ``endpoint`` (with the
        counting processor and guarded exporter; ``service`` and ``host`` in its
        resource); flushed on SIGTERM. The id hints."""
        from zaqar_otel.bridge import export, logs, provider

        def processor() -> export.CountingBatchSpanProcessor | None:
            inner = export.build_exporter(endpoint)
            if inner is None:
                return None
            self.exporter = export.GuardedExporter(inner)
            self.processor = export.CountingBatchSpanProcessor(self.exporter)
            return self.processor

        self.provider, hints, self.built_provider = provider.use_or_build(service, processor, host)
        if not self.built_provider and endpoint.url is not None:
            logs.LOG.info(
                "zaqar-otel: this process already has a TracerProvider; spans go where it "
                "exports, not to %s",
                endpoint.url,
            )
        # SIGTERM would end the process without atexit: flush first (ours or not).
        provider.flush_on_sigterm(self.provider)
        provider.flush_at_uwsgi_exit(self.provider)
        return hints

    def _make_bridge(self, hints: HintedIdGenerator, host: str | None) -> SpanBridge:
        """The SpanBridge: OSProfiler notifications -> spans of this driver's tracer
        (``host.name`` on them when the provider's resource lacks it)."""
        from zaqar_otel import __version__
        from zaqar_otel.bridge import logs, spans
        from zaqar_otel.zaqar import outcomes

        tracer = self.provider.get_tracer("zaqar_otel", __version__)
        on_spans = host_attributes(self.provider, host)
        if on_spans:
            logs.LOG.info(
                "zaqar-otel: the TracerProvider's resource has no host.name: the bridge's spans "
                "carry it (OTEL_EXPERIMENTAL_RESOURCE_DETECTORS=host,process puts the host and "
                "process in the resource instead)"
            )
        return spans.SpanBridge(
            tracer,
            hints,
            flags=self.request_flags,
            expected=outcomes.is_answer,
            span_attributes=on_spans,
        )

    def _instrument_backends(self) -> None:
        """Instrument the DB clients the ``[profiler]`` flags ask for, again whenever the
        mutable flags change (``conf.mutate_config_files()``, e.g. on SIGHUP); and the
        service's calls to other services, its outgoing requests and Flask routes."""
        from zaqar_otel.bridge import backends, flask_routes, keystoneauth, logs, outgoing

        self.backends = backends.apply(self.conf.profiler, self.provider, self._full_statements)
        self._sqlalchemy_active = lambda: backends.active("sqlalchemy")
        keystoneauth.install()  # calls to other services (keystonemiddleware): CLIENT spans
        flask_routes.install()  # Flask services (Keystone): route names, status codes
        # other requests made inside profiled requests: CLIENT spans and traceparent
        outgoing.instrument_requests()

        def reapply(conf: cfg.ConfigOpts, fresh: Any) -> None:
            self.backends = backends.apply(conf.profiler, self.provider, self._full_statements)
            logs.LOG.info("zaqar-otel: [profiler] reloaded, backends traced: %s", self.backends)

        register_hook = getattr(self.conf, "register_mutate_hook", None)
        if register_hook is not None:
            register_hook(reapply)

    def _full_statements(self) -> bool:
        """``[profiler] trace_db_statements``, read at each use (it is mutable)."""
        return bool(self._flag("trace_db_statements"))

    @classmethod
    def get_name(cls) -> str:
        return "otel"

    def _flag(self, name: str) -> Any:
        # read on every notification (a flag may be overridden at run time), from
        # the [profiler] group looked up once: half the oslo.config lookups
        try:
            group = self._profiler_group
            if group is None:
                group = self._profiler_group = self.conf.profiler
            return getattr(group, name)
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError, AttributeError):
            return None

    def request_flags(self) -> Flags:
        """The ``[profiler]`` flags for a request starting now (read once per request)."""
        from zaqar_otel.bridge.flags import Flags

        flag = self._flag
        return Flags(
            enabled=bool(flag("enabled")),  # enabled = false exports nothing
            pooling=bool(flag("trace_pooling")),  # Zaqar's pooling catalog/controllers
            # OSProfiler's own SQL events: never with trace_sqlalchemy = false, and
            # not beside the OTel SQLAlchemy spans (one span per statement). They
            # become spans only if the flag is on and the instrumentation missing.
            osprofiler_sql=bool(flag("trace_sqlalchemy")) and not self._sqlalchemy_active(),
            statements=bool(flag("trace_db_statements")),
            content=bool(flag("trace_message_content")),
        )

    def notify(self, info: dict[str, Any], **kwargs: Any) -> None:
        if self.bridge is not None:
            self.bridge.handle(info)

    def status(self) -> dict[str, int]:
        """Counters: what was exported, lost and why, and what is open now."""
        exporter, processor, bridge = self.exporter, self.processor, self.bridge
        if bridge is None:
            return {}
        return {
            "exported": exporter.exported if exporter else 0,
            "export_failed": exporter.failed if exporter else 0,
            "dropped_queue_full": processor.dropped if processor else 0,
            "queued": processor.queued() if processor else 0,
            "open_spans": bridge.open_count(),
            "malformed_notifications": bridge.malformed,
            "evicted_unfinished": bridge.evicted,
        }

    # -- reading traces back (osprofiler trace show / list), from Jaeger's query API

    def _jaeger(self) -> Any:
        """The Jaeger query client: ``?query=`` in the connection string, else the env var."""
        import os

        from osprofiler import exc

        from zaqar_otel.bridge import export
        from zaqar_otel.lookup import jaeger

        url = export.parse_connection_string(self.connection_str).query
        url = url or os.environ.get("ZAQAR_OTEL_JAEGER_QUERY", "").strip()
        if not url:
            raise exc.CommandError(
                "otel:// reads traces from Jaeger's query API: add ?query=http://JAEGER:16686 "
                "to the connection string or set ZAQAR_OTEL_JAEGER_QUERY"
            )
        try:
            return jaeger.JaegerQuery(url)
        except ValueError as error:
            raise exc.CommandError(str(error)) from None

    def get_report(self, base_id: str) -> dict[str, Any]:
        """The OSProfiler report of trace ``base_id`` (UUID or 32 hex), read from Jaeger.

        An unknown trace gives the empty report (OSProfiler's CLI: "not found");
        an unreachable Jaeger or a bad id raise ``osprofiler.exc.CommandError``.
        """
        from osprofiler import exc

        from zaqar_otel.lookup import jaeger, report

        query = self._jaeger()
        try:
            spans = query.get_trace(base_id)
        except jaeger.TraceNotFound:
            spans = []
        except (jaeger.JaegerError, ValueError) as error:
            raise exc.CommandError(str(error)) from None
        return report.osprofiler_report(spans, base_id)

    def list_traces(self, fields: set[str] | None = None) -> list[dict[str, Any]]:
        """Traces in Jaeger (every service, last 7 days, at most 1000 per service), oldest first.

        Each is ``{"base_id": UUID, "timestamp": start}`` (OSProfiler's default
        fields), plus ``trace_id`` (the 32-hex form), ``services`` and ``error`` when
        asked for in ``fields``.
        """
        wanted = fields or DEFAULT_TRACE_FIELDS
        return [
            {key: value for key, value in trace.items() if key in wanted}
            for trace in self._traces()
        ]

    def list_error_traces(self) -> list[dict[str, Any]]:
        """Like ``list_traces``, only the traces with a span in error."""
        return [
            {"base_id": trace["base_id"], "timestamp": trace["timestamp"]}
            for trace in self._traces()
            if trace["error"]
        ]

    def _traces(self) -> list[dict[str, Any]]:
        from osprofiler import exc

        from zaqar_otel.bridge import ids
        from zaqar_otel.lookup import jaeger, report

        query = self._jaeger()
        found: dict[str, list[jaeger.SpanRecord]] = {}
        try:
            for service in query.services():
                for trace_hex, spans in query.find_traces(service, limit=1000).items():
                    known = {span.span_id for span in found.get(trace_hex, [])}
                    found.setdefault(trace_hex, []).extend(
                        span for span in spans if span.span_id not in known
                    )
        except jaeger.JaegerError as error:
            raise exc.CommandError(str(error)) from None
        traces = []
        for trace_hex, spans in found.items():
            start = min(span.start_us for span in spans)
            base_ids = {span.attributes.get("osprofiler.base_id") for span in spans} - {None}
            base_id = str(base_ids.pop()) if len(base_ids) == 1 else ids.uuid_form(trace_hex)
            traces.append(
                {
                    "base_id": base_id,
                    "timestamp": report.timestamp(start),
                    "trace_id": trace_hex,
                    "services": sorted({span.service for span in spans}),
                    "error": any(span.error for span in spans),
                }
            )
        return sorted(traces, key=lambda trace: (trace["timestamp"], trace["base_id"]))


DEFAULT_TRACE_FIELDS = frozenset({"base_id", "timestamp"})  # osprofiler.drivers.base
_current: OTelDriver | None = None
_metrics_registered = False


def status() -> dict[str, int]:
    """The counters of the bridge in this process ({} before ``otel://`` is initialised).

    ``exported``/``export_failed`` count spans handed to the exporter,
    ``dropped_queue_full`` spans the batch queue had no room for (when the
    bridge built the provider), ``open_spans`` spans started and not ended yet.
    The same counters are OTel metrics ``zaqar_otel.spans.*`` (observable
    counters/gauges) on the global MeterProvider, if one is set.
    """
    return _current.status() if _current is not None else {}


def _register_metrics() -> None:
    global _metrics_registered
    if _metrics_registered:
        return
    _metrics_registered = True
    from opentelemetry import metrics

    meter = metrics.get_meter("zaqar_otel")

    def observe(key: str) -> Callable[[Any], list[metrics.Observation]]:
        def callback(options: Any) -> list[metrics.Observation]:
            value = status().get(key)
            return [] if value is None else [metrics.Observation(value)]

        return callback

    for key in ("exported", "export_failed", "dropped_queue_full", "malformed_notifications"):
        meter.create_observable_counter(f"zaqar_otel.spans.{key}", callbacks=[observe(key)])
    for key in ("queued", "open_spans"):
        meter.create_observable_gauge(f"zaqar_otel.spans.{key}", callbacks=[observe(key)])
