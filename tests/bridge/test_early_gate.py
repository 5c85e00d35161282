"""Unprofiled Redis and SQLAlchemy calls skip the instrumentations' work; profiled ones are
traced as before; what the operator instrumented with another tracer is left alone."""

from __future__ import annotations

import uuid

import pytest
import redis
import sqlalchemy as sa
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from osprofiler import profiler

from tests import tracing
from zaqar_otel.bridge import backends

pytestmark = pytest.mark.servers


def teardown_function():
    profiler.clean()
    backends.reset()


def _profiled(work):
    tracing.start_profiling()
    with profiler.Trace("wsgi", info={"request": {"method": "POST", "path": "/x"}}):
        work()
    profiler.clean()


@pytest.fixture
def counted(monkeypatch):
    """Calls of the helpers the instrumentations run before they ask for a span."""
    import opentelemetry.instrumentation.redis as redis_instrumentation
    from opentelemetry.instrumentation.sqlalchemy import engine as sqlalchemy_engine

    calls = {"redis": 0, "sqlalchemy": 0}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        redis_instrumentation,
        "_format_command_args",
        counting("redis", redis_instrumentation._format_command_args),
    )
    monkeypatch.setattr(
        sqlalchemy_engine,
        "_get_attributes_from_url",
        counting("sqlalchemy", sqlalchemy_engine._get_attributes_from_url),
    )
    return calls


def test_unprofiled_redis_commands_skip_the_instrumentation(redis_server, counted):
    tracing.init_bridge(trace_redis=True)
    client = redis.Redis.from_url(redis_server.url)
    key = f"k-{uuid.uuid4()}"
    client.set(key, "v")
    assert client.get(key) == b"v"
    pipe = client.pipeline()
    pipe.get(key)
    assert pipe.execute() == [b"v"]
    assert counted["redis"] == 0 and tracing.finished() == []
    _profiled(lambda: client.get(key))
    assert counted["redis"] == 1
    assert [s.name for s in tracing.finished() if s.name != "POST"] == ["GET"]


def test_uninstrumenting_redis_restores_the_original_methods(redis_server):
    original = redis.client.Redis.__dict__["execute_command"]
    tracing.init_bridge(trace_redis=True)
    assert redis.client.Redis.__dict__["execute_command"] is not original
    backends.reset()
    assert redis.client.Redis.__dict__["execute_command"] is original


def test_a_client_the_operator_instrumented_keeps_its_own_spans(redis_server):
    tracing.init_bridge(trace_redis=True)
    theirs = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(theirs))
    client = redis.Redis.from_url(redis_server.url)
    RedisInstrumentor.instrument_client(client, tracer_provider=provider)
    client.ping()  # not profiled: their span, none of the bridge's
    assert [s.name for s in theirs.get_finished_spans()] == ["PING"]
    assert tracing.finished() == []


def test_unprofiled_sql_skips_the_instrumentation(tmp_path, counted):
    tracing.init_bridge(trace_sqlalchemy=True)
    engine = sa.create_engine(f"sqlite:///{tmp_path}/db.sqlite")

    def select_one():
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    select_one()
    assert counted["sqlalchemy"] == 0 and tracing.finished() == []
    _profiled(select_one)
    assert counted["sqlalchemy"] >= 1  # the connect span and the statement
    assert "SELECT" in [s.name for s in tracing.finished()]
    engine.dispose()


def test_an_engine_traced_with_another_tracer_keeps_its_own_spans(tmp_path):
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpMeterProvider

    backends.reset()
    engine = sa.create_engine(f"sqlite:///{tmp_path}/theirs.sqlite")  # not the bridge's
    tracing.init_bridge(trace_sqlalchemy=True)
    theirs = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(theirs))
    usage = NoOpMeterProvider().get_meter("t").create_up_down_counter("connections")
    EngineTracer(provider.get_tracer("theirs"), engine, usage)  # not the bridge's tracer
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))  # not profiled: traced by their tracer
        assert [s.name.split()[0] for s in theirs.get_finished_spans()] == ["SELECT"]
    finally:  # their listeners, not the instrumentor's to remove
        for entry in list(EngineTracer._remove_event_listener_params):
            if entry[0]() is engine:
                sa.event.remove(engine, entry[1], entry[2])
                EngineTracer._remove_event_listener_params.remove(entry)
        engine.dispose()
