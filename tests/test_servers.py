"""The real-server harness (tests/servers.py) works: each server answers its own client."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.servers import (
    BinaryNotFoundError,
    FerretDBServer,
    JaegerServer,
    OTLPReceiver,
    PostgresServer,
    ProcessServer,
    ReceivedSpan,
    RedisServer,
    ServerStartError,
    find_binary,
    free_port,
)


def _provider(exporter: SpanExporter, service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _emit_parent_child(provider: TracerProvider, tag: str) -> tuple[str, str]:
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


# --------------------------------------------------------------------------- helpers


def test_free_port_is_unique_and_bindable() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    assert all(1024 < p < 65536 for p in ports)


def test_missing_binary_says_how_to_build_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ZAQAR_OTEL_TOOLS", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BinaryNotFoundError, match=r"\.ci/build-go-tools"):
        find_binary("jaeger")
    tool = tmp_path / "jaeger"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert find_binary("jaeger") == str(tool)


@pytest.mark.servers
def test_start_failure_reports_the_log_tail(redis_server: RedisServer) -> None:
    clash = RedisServer(port=redis_server.port, startup_timeout=10)
    try:
        with pytest.raises(ServerStartError, match=r"(?s)exited with code.*in use"):
            clash.start()
        assert not clash.running
    finally:
        clash.close()


class _NeverReady(ProcessServer):
    name = "never-ready"

    def _command(self) -> list[str]:
        return ["sh", "-c", "echo hello-from-the-server; exec sleep 30"]

    def _is_ready(self) -> bool:
        return False


def test_startup_timeout_reports_the_log_tail() -> None:
    server = _NeverReady(startup_timeout=0.5)
    try:
        with pytest.raises(ServerStartError, match=r"(?s)not ready after.*hello-from-the-server"):
            server.start()
        assert not server.running and server.pid is None
    finally:
        server.close()
    assert not server.tmpdir.exists()


@pytest.mark.servers
@pytest.mark.parametrize("kind", ["redis", "jaeger"])
def test_port_race_is_retried_with_fresh_ports(kind: str, request: pytest.FixtureRequest) -> None:
    """Another process took a chosen port between free_port() and the server's bind."""
    request.getfixturevalue(f"{kind}_server")  # skip (or fail under CI) like the fixture
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        server: RedisServer | JaegerServer
        if kind == "redis":
            server = RedisServer()
            server.port = taken
        else:
            server = JaegerServer()
            server.otlp_http_port = taken
        try:
            server.start()
            assert server.running
            assert taken not in server.ports
            assert "already in use" in server.log(200).lower()
        finally:
            server.close()


# --------------------------------------------------------------------------- OTLPReceiver


def test_otlp_receiver_decodes_sdk_spans(otlp_receiver: OTLPReceiver) -> None:
    provider = _provider(OTLPSpanExporter(endpoint=otlp_receiver.traces_url), "svc-a")
    try:
        trace_id, parent_id = _emit_parent_child(provider, "recv")
    finally:
        provider.shutdown()

    spans = otlp_receiver.wait_for(2, timeout=10)
    by_name = {s.name: s for s in spans}
    parent, child = by_name["parent"], by_name["child"]
    assert parent.trace_id == child.trace_id == trace_id
    assert len(trace_id) == 32 and len(parent.span_id) == 16
    assert parent.span_id == parent_id and parent.parent_span_id == "" and parent.is_root
    assert child.parent_span_id == parent_id
    assert parent.kind_name == SpanKind.SERVER.name and child.kind_name == SpanKind.CLIENT.name
    assert parent.attributes == {"test.tag": "recv"}
    assert child.attributes == {"db.system": "redis", "n": 3, "ok": True, "xs": [1, 2]}
    assert child.events == [("evt", {"k": "v"})]
    assert (child.status_code, child.status_message) == (StatusCode.ERROR.value, "boom")
    assert child.status_name == "ERROR"
    assert child.service_name == "svc-a" and child.scope_name == "zaqar_otel.tests"
    assert child.scope_version == "1.2.3"
    assert 0 < child.start_ns <= child.end_ns and child.duration_ns >= 0
    assert otlp_receiver.requests_received == 2  # SimpleSpanProcessor: one POST per span


def test_otlp_receiver_gzip_and_clear(otlp_receiver: OTLPReceiver) -> None:
    exporter = OTLPSpanExporter(endpoint=otlp_receiver.traces_url, compression=Compression.Gzip)
    provider = _provider(exporter, "svc-gz")
    try:
        provider.get_tracer("t").start_span("zipped").end()
    finally:
        provider.shutdown()
    [span] = otlp_receiver.wait_for(lambda spans: any(s.name == "zipped" for s in spans))
    assert span.service_name == "svc-gz"
    assert otlp_receiver.requests()[0].headers.get("content-encoding") == "gzip"
    otlp_receiver.clear()
    assert otlp_receiver.spans() == [] and otlp_receiver.requests_received == 0


def _post(url: str, body: bytes, timeout: float = 5.0, **headers: str) -> int:
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", "application/x-protobuf")
    for key, value in headers.items():
        req.add_header(key.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_otlp_receiver_faults(otlp_receiver: OTLPReceiver) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    body = ExportTraceServiceRequest().SerializeToString()
    url = otlp_receiver.traces_url
    otlp_receiver.fail_with(503, count=2)
    assert [_post(url, body) for _ in range(3)] == [503, 503, 200]
    assert _post(url, gzip.compress(b"not protobuf"), Content_Encoding="gzip") == 400
    assert _post(otlp_receiver.endpoint + "/v1/logs", body) == 404
    assert otlp_receiver.requests_received == 5

    otlp_receiver.hang()
    started = time.monotonic()
    with pytest.raises(OSError):  # timeout: no answer while hanging
        _post(url, body, timeout=0.5)
    assert time.monotonic() - started < 5
    otlp_receiver.heal()
    assert _post(url, body) == 200


def test_otlp_receiver_wait_for_timeout_message() -> None:
    with OTLPReceiver() as receiver, pytest.raises(TimeoutError, match="0 span"):
        receiver.wait_for(1, timeout=0.2)


def test_otlp_receiver_thread_safe(otlp_receiver: OTLPReceiver) -> None:
    provider = _provider(OTLPSpanExporter(endpoint=otlp_receiver.traces_url), "svc-threads")
    tracer = provider.get_tracer("t")

    def work(i: int) -> None:
        for j in range(5):
            tracer.start_span(f"s{i}-{j}").end()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    provider.shutdown()
    spans = otlp_receiver.wait_for(20)
    assert len({s.span_id for s in spans}) == 20


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
    provider = _provider(exporter, "svc-http")
    try:
        trace_id, parent_id = _emit_parent_child(provider, "http")
    finally:
        provider.shutdown()
    _check_jaeger_trace(jaeger_server, trace_id, parent_id, "svc-http")


@pytest.mark.servers
def test_jaeger_otlp_grpc(jaeger_server: JaegerServer, grpc_exporter: SpanExporter) -> None:
    provider = _provider(grpc_exporter, "svc-grpc")
    try:
        trace_id, parent_id = _emit_parent_child(provider, "grpc")
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
    with pytest.raises(TimeoutError, match="0 span"):
        jaeger_server.wait_for_trace("0123456789abcdef0123456789abcdef", 1, timeout=0.5)


def test_received_span_kind_numbers() -> None:
    span = ReceivedSpan("a" * 32, "b" * 16, "", "n", 2, 1, 2, {}, 0, "", [], "s", "sc")
    assert span.kind_name == "SERVER" and span.status_name == "UNSET" and span.is_root
