"""The test suite's servers (tests/servers.py) work: each server answers its own client."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExporter

from tests.servers import FerretDBServer, JaegerServer, PostgresServer, RedisServer
from tests.tracing import emit_parent_child, exporting_provider

pytestmark = pytest.mark.servers


# --------------------------------------------------------------------------- databases


@pytest.mark.servers
def test_redis_set_get(redis_server: RedisServer) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        key = f"k-{uuid.uuid4().hex}"
        assert client.set(key, "v")
        assert client.get(key) == b"v"
    finally:
        client.close()
    assert redis_server.url.startswith("redis://127.0.0.1:")


@pytest.mark.servers
def test_postgres_select_1(postgres_server: PostgresServer) -> None:
    import sqlalchemy as sa

    assert postgres_server.url.endswith("/zaqar")
    engine = sa.create_engine(postgres_server.url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
            assert conn.execute(sa.text("SELECT current_database()")).scalar() == "zaqar"
    finally:
        engine.dispose()


@pytest.mark.servers
def test_postgres_create_database(postgres_server: PostgresServer) -> None:
    import sqlalchemy as sa

    url = postgres_server.create_database("zaqar_fresh")
    assert url.endswith("/zaqar_fresh")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x int)"))
            conn.execute(sa.text("INSERT INTO t VALUES (42)"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT x FROM t")).scalar() == 42
    finally:
        engine.dispose()
    # created afresh: the table is gone
    url = postgres_server.create_database("zaqar_fresh")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT to_regclass('t')")).scalar() is None
    finally:
        engine.dispose()


@pytest.mark.servers
def test_ferretdb_insert_find(ferretdb_server: FerretDBServer) -> None:
    import pymongo

    client: Any = pymongo.MongoClient(ferretdb_server.url, serverSelectionTimeoutMS=5000)
    try:
        coll = client["zaqar_test"]["messages"]
        marker = uuid.uuid4().hex
        coll.insert_one({"marker": marker, "body": {"event": "x"}, "ttl": 300})
        doc = coll.find_one({"marker": marker})
        assert doc is not None and doc["body"] == {"event": "x"} and doc["ttl"] == 300
    finally:
        client.close()


# --------------------------------------------------------------------------- Jaeger


def _v3_spans(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        span
        for rs in result["result"]["resourceSpans"]
        for ss in rs.get("scopeSpans", [])
        for span in ss.get("spans", [])
    ]


def _check_jaeger_trace(jaeger: JaegerServer, trace_id: str, parent_id: str, service: str) -> None:
    trace = jaeger.wait_for_trace(trace_id, min_spans=2, timeout=20)
    [data] = trace["data"]
    assert data["traceID"] == trace_id
    spans = {s["operationName"]: s for s in data["spans"]}
    assert set(spans) == {"parent", "child"}
    assert spans["parent"]["spanID"] == parent_id
    refs = spans["child"]["references"]
    assert refs == [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": parent_id}]
    tags = {t["key"]: t["value"] for t in spans["child"]["tags"]}
    assert tags["db.system"] == "redis" and tags["error"] is True
    process = data["processes"][spans["child"]["processID"]]
    assert process["serviceName"] == service

    v3 = jaeger.get_trace_v3(trace_id)
    assert v3 is not None
    v3_spans = _v3_spans(v3)
    assert sorted(s["name"] for s in v3_spans) == ["child", "parent"]
    assert {s["traceId"] for s in v3_spans} == {trace_id}


@pytest.fixture
def grpc_exporter(jaeger_server: JaegerServer) -> Iterator[SpanExporter]:
    grpc_mod = pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    exporter = grpc_mod.OTLPSpanExporter(endpoint=jaeger_server.otlp_grpc_endpoint, insecure=True)
    yield exporter


@pytest.mark.servers
def test_jaeger_otlp_http(jaeger_server: JaegerServer) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{jaeger_server.otlp_http_endpoint}/v1/traces")
    provider = exporting_provider(exporter, "svc-http")
    try:
        trace_id, parent_id = emit_parent_child(provider, "http")
    finally:
        provider.shutdown()
    _check_jaeger_trace(jaeger_server, trace_id, parent_id, "svc-http")


@pytest.mark.servers
def test_jaeger_otlp_grpc(jaeger_server: JaegerServer, grpc_exporter: SpanExporter) -> None:
    provider = exporting_provider(grpc_exporter, "svc-grpc")
    try:
        trace_id, parent_id = emit_parent_child(provider, "grpc")
    finally:
        provider.shutdown()
    _check_jaeger_trace(jaeger_server, trace_id, parent_id, "svc-grpc")


@pytest.mark.servers
def test_jaeger_unknown_trace_and_restart(jaeger_server: JaegerServer) -> None:
    assert jaeger_server.get_trace("0123456789abcdef0123456789abcdef") is None
    assert jaeger_server.get_trace_v3("0123456789abcdef0123456789abcdef") is None
    endpoints = (jaeger_server.otlp_http_endpoint, jaeger_server.query_url)
    jaeger_server.stop()
    try:
        assert not jaeger_server.running
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{jaeger_server.query_url}/api/services", timeout=2)
    finally:
        jaeger_server.start()
    assert jaeger_server.running
    assert (jaeger_server.otlp_http_endpoint, jaeger_server.query_url) == endpoints
    with pytest.raises(TimeoutError, match="trace 0123456789abcdef0123456789abcdef with 1"):
        jaeger_server.wait_for_trace("0123456789abcdef0123456789abcdef", 1, timeout=0.5)
