"""In-process tracing for tests: one global SDK provider with an in-memory exporter.

The OTel global provider can be set once per process and the DB instrumentors
keep the provider they were first given, so every in-process test shares this
one; each test clears the exporter. Tests of the build-from-environment path
run in a subprocess instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from oslo_config import cfg
from osprofiler import initializer, notifier, profiler

import zaqar_otel
from zaqar_otel.bridge import backends

EXPORTER = InMemorySpanExporter()
HMAC_KEY = "test-secret"


def global_provider() -> TracerProvider:
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    return provider


def make_conf(**flags: object) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    zaqar_otel.register_opts(conf)
    conf([])
    overrides = {"enabled": True, "hmac_keys": HMAC_KEY, "connection_string": "otel://"}
    overrides.update(flags)
    for name, value in overrides.items():
        conf.set_override(name, value, "profiler")
    return conf


def init_bridge(**flags: object) -> zaqar_otel.OTelDriver:
    """init_from_conf with otel:// and these [profiler] flags; returns the driver."""
    global_provider()
    notifier.clear_notifier_cache()
    backends.reset()
    conf = make_conf(**flags)
    initializer.init_from_conf(conf, context={}, project="zaqar", service="test", host="localhost")
    driver = notifier.get().__self__  # type: ignore[attr-defined]
    assert isinstance(driver, zaqar_otel.OTelDriver)
    EXPORTER.clear()
    return driver


def finished() -> list[ReadableSpan]:
    return list(EXPORTER.get_finished_spans())


def by_trace(spans: Iterable[ReadableSpan], trace_hex: str) -> list[ReadableSpan]:
    return [s for s in spans if format(s.context.trace_id, "032x") == trace_hex]


def parent_of(span: ReadableSpan, spans: Iterable[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    for candidate in spans:
        if candidate.context.span_id == span.parent.span_id:
            return candidate
    return None


def start_profiling() -> profiler._Profiler:
    profiler.clean()
    return profiler.init(HMAC_KEY)


def exporting_provider(exporter: SpanExporter, service: str) -> TracerProvider:
    """A private SDK provider (not the global one) exporting each span at once."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def emit_parent_child(provider: TracerProvider, tag: str) -> tuple[str, str]:
    """Emit span 'parent' (server) with child 'child' (client); (trace id hex, parent id hex)."""
    tracer = provider.get_tracer("zaqar_otel.tests", "1.2.3")
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("test.tag", tag)
        with tracer.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
            child.set_attributes({"db.system": "redis", "n": 3, "ok": True, "xs": [1, 2]})
            child.add_event("evt", {"k": "v"})
            child.set_status(Status(StatusCode.ERROR, "boom"))
    ctx = parent.get_span_context()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
