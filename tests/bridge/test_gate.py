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


# -- DbSpan: what a DB span becomes on its way out


def _gated(full: bool = False, keep_old: bool = False):
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return GatedTracer(provider.get_tracer("t"), lambda: full, keep_old), exporter


def _profiled_context():
    return context_api.attach(context_api.set_value(PROFILED, True))


def test_db_span_speaks_the_stable_conventions_and_is_renamed_at_end():
    tracer, exporter = _gated()
    token = _profiled_context()
    try:
        span = tracer.start_span("SELECT /srv/zaqar.db", attributes={"db.system": "sqlite"})
        span.set_attribute("db.statement", "SELECT name FROM \"Queues\" WHERE name = 'secret'")
        span.set_attributes({"db.name": "/srv/zaqar.db", "db.operation": "SELECT /srv/zaqar.db"})
        span.end()
    finally:
        context_api.detach(token)
    [done] = exporter.get_finished_spans()
    assert done.name == 'SELECT "Queues"'
    assert dict(done.attributes) == {
        "db.system.name": "sqlite",
        "db.query.text": 'SELECT name FROM "Queues" WHERE name = ?',
        "db.namespace": "/srv/zaqar.db",
        "db.operation.name": "SELECT",
        "db.query.summary": 'SELECT "Queues"',
    }


def test_db_span_keeps_old_keys_and_values_when_asked():
    tracer, exporter = _gated(full=True, keep_old=True)
    token = _profiled_context()
    try:
        with tracer.start_as_current_span("GET") as span:
            span.set_attributes({"db.system": "redis", "db.statement": "GET 'k'"})
    finally:
        context_api.detach(token)
    [done] = exporter.get_finished_spans()
    assert done.attributes["db.statement"] == done.attributes["db.query.text"] == "GET 'k'"
    assert done.attributes["db.system"] == done.attributes["db.system.name"] == "redis"


def test_db_span_errors_are_errors_with_their_values_scrubbed():
    from opentelemetry.trace import StatusCode

    tracer, exporter = _gated()
    token = _profiled_context()
    try:
        with tracer.start_as_current_span("FOO") as span:
            span.set_attribute("db.system", "redis")
            raise ValueError("bad value 'secret-value'")
    except ValueError:
        pass
    finally:
        context_api.detach(token)
    [done] = exporter.get_finished_spans()
    assert done.status.status_code == StatusCode.ERROR
    assert "secret-value" not in str(done.status.description)
    assert done.attributes["error.type"] == "ValueError"
    [event] = done.events
    assert event.name == "exception"
    assert "secret-value" not in str(dict(event.attributes))
    assert event.attributes["exception.message"] == "bad value '?'"


def test_db_span_status_descriptions_set_by_instrumentations_are_scrubbed():
    from opentelemetry.trace import Status, StatusCode

    tracer, exporter = _gated()
    token = _profiled_context()
    try:
        span = tracer.start_span("insert")
        span.set_status(Status(StatusCode.ERROR, 'E11000 duplicate key: { _id: "secret" }'))
        span.end()
    finally:
        context_api.detach(token)
    [done] = exporter.get_finished_spans()
    assert done.status.description == "E11000 duplicate key: { _id: '?' }"
