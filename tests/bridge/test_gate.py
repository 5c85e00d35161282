"""What keeps the bridge cheap where it traces nothing (found by the benchmarks in bench/)."""

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from tests import tracing
from zaqar_otel.bridge import backends
from zaqar_otel.bridge.gate import PROFILED, GatedTracer


def teardown_function():
    backends.reset()


def test_enabled_false_instruments_no_backend():
    """No request is ever profiled: DB calls must not pay for instrumentation."""
    driver = tracing.init_bridge(enabled=False, trace_redis=True, trace_sqlalchemy=True)
    assert driver.backends == {"mongodb": False, "redis": False, "sqlalchemy": False}
    assert not backends.active("redis")
    assert not backends.active("sqlalchemy")


def test_enabled_true_instruments_the_flagged_backends():
    driver = tracing.init_bridge(enabled=True, trace_redis=True, trace_sqlalchemy=True)
    assert driver.backends["redis"] and driver.backends["sqlalchemy"]
    assert not driver.backends["mongodb"]


def test_unprofiled_current_span_is_invalid_and_leaves_the_context_alone():
    tracer = GatedTracer(TracerProvider().get_tracer("t"), lambda: False)
    before = context_api.get_current()
    with tracer.start_as_current_span("GET") as span:
        assert span is trace.INVALID_SPAN
        assert not span.is_recording()
        assert context_api.get_current() is before


def test_profiled_current_span_is_recording_and_current():
    tracer = GatedTracer(TracerProvider().get_tracer("t"), lambda: False)
    token = context_api.attach(context_api.set_value(PROFILED, True))
    try:
        with tracer.start_as_current_span("GET") as span:
            assert span.is_recording()
            assert trace.get_current_span().get_span_context() == span.get_span_context()
        assert not span.is_recording()  # ended on exit
    finally:
        context_api.detach(token)


def test_bridge_resource_is_hashed_once_and_equals_the_plain_resource(monkeypatch):
    """The OTLP encoder hashes the resource of every exported span."""
    from opentelemetry.sdk import resources

    from zaqar_otel.bridge import provider

    resource = provider.resource_for("zaqar-api")
    plain = resources.Resource(resource.attributes, resource.schema_url)
    assert resource == plain and hash(resource) == hash(plain)
    dumps = []
    real = resources.dumps
    monkeypatch.setattr(resources, "dumps", lambda *a, **k: dumps.append(1) or real(*a, **k))
    fresh = provider.resource_for("zaqar-api")
    expected = hash(plain)
    dumps.clear()
    assert {hash(fresh) for _ in range(100)} == {expected}
    assert len(dumps) == 1
    hash(plain)
    assert len(dumps) == 2  # a plain Resource dumps on every hash


def test_queue_full_drops_are_counted_exactly_and_cheaply(caplog):
    """Two producers, an exporter stuck until released: every span exported or counted."""
    import threading

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from zaqar_otel.bridge.export import CountingBatchSpanProcessor

    release = threading.Event()
    exported = []

    class Stuck(SpanExporter):
        def export(self, spans):
            release.wait(30)
            exported.extend(spans)
            return SpanExportResult.SUCCESS

    processor = CountingBatchSpanProcessor(Stuck(), max_queue_size=64, max_export_batch_size=16)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")

    def produce():
        for _ in range(500):
            tracer.start_span("s").end()

    threads = [threading.Thread(target=produce) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert processor.dropped > 0
    release.set()
    processor.force_flush()
    assert len(exported) + processor.dropped == 1000
    assert "Queue full" not in caplog.text  # no per-span record from the SDK
    processor.shutdown()
