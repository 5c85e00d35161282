"""otel:// end to end: a separate process exports over OTLP to a real receiver."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.subproc import run_profiled
from zaqar_otel.bridge import ids

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.servers


def test_bare_otel_uses_otel_env_and_flushes_at_exit(otlp_receiver):
    result = run_profiled(
        "--requests",
        "3",
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint},
    )
    spans = otlp_receiver.wait_for(6)
    assert len(spans) == 6
    for base in result["base_ids"]:
        mine = [s for s in spans if s.trace_id == ids.trace_hex(base)]
        assert sorted(s.name for s in mine) == ["POST", "redis_message_controller"]
        root = next(s for s in mine if s.name == "POST")
        child = next(s for s in mine if s.name != "POST")
        assert root.parent_span_id == ""
        assert child.parent_span_id == root.span_id
        assert root.kind_name == "SERVER"
    assert {s.service_name for s in spans} == {"zaqar-api"}
    assert {s.scope_name for s in spans} == {"zaqar_otel"}


def test_otel_service_name_overrides_the_default(otlp_receiver):
    run_profiled(
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
            "OTEL_SERVICE_NAME": "my-zaqar",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        },
    )
    spans = otlp_receiver.wait_for(2)
    assert {s.service_name for s in spans} == {"my-zaqar"}
    assert spans[0].resource_attributes["deployment.environment"] == "test"


def test_host_and_process_are_in_the_resource_and_on_no_span(otlp_receiver):
    run_profiled(env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint})
    spans = otlp_receiver.wait_for(2)
    for span in spans:
        assert span.resource_attributes["host.name"] == "localhost"  # OSProfiler's host
        assert isinstance(span.resource_attributes["process.pid"], int)
        assert "host.name" not in span.attributes


def test_host_name_goes_on_spans_only_when_a_foreign_resource_lacks_it():
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from zaqar_otel.driver import host_attributes

    with_host = TracerProvider(resource=Resource.create({"host.name": "h"}))
    assert host_attributes(with_host, "node-1") == {}
    without = TracerProvider(resource=Resource.create({}))
    assert host_attributes(without, "node-1") == {"host.name": "node-1"}


def test_otel_exporter_otlp_headers_are_sent(otlp_receiver):
    run_profiled(
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=ops",
        },
    )
    otlp_receiver.wait_for(2)
    assert otlp_receiver.requests()[0].headers.get("x-tenant") == "ops"


def test_explicit_host_port_in_the_connection_string(otlp_receiver):
    host_port = otlp_receiver.endpoint.removeprefix("http://")
    run_profiled("--connection-string", f"otel://{host_port}")
    assert len(otlp_receiver.wait_for(2)) == 2


def test_force_flush_through_the_global_provider(otlp_receiver):
    run_profiled(
        "--force-flush",
        "--hold",
        "0",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "60000",
        },
    )
    assert len(otlp_receiver.wait_for(2, timeout=5)) == 2


def test_collector_down_does_not_break_the_traced_code():
    from zaqar_otel.demo.process import pick_port

    result = run_profiled(
        "--requests",
        "20",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{pick_port()}",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
        },
    )
    assert len(result["base_ids"]) == 20
    assert "Traceback" not in result["stderr"]
    assert result["stderr"].count("cannot export spans") <= 1


def test_bad_connection_string_disables_profiling_with_a_clear_error():
    result = run_profiled("--connection-string", "otel://host:1?protocol=pigeon")
    assert "unknown OTLP protocol 'pigeon'" in result["stderr"]
    assert len(result["base_ids"]) == 1


def test_jaeger_over_http_with_redis_children(jaeger_server, redis_server):
    result = run_profiled(
        "--requests",
        "2",
        "--redis",
        redis_server.url,
        "--flag",
        "trace_redis",
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger_server.otlp_http_endpoint},
    )
    for base in result["base_ids"]:
        trace = jaeger_server.wait_for_trace(ids.trace_hex(base), 4)
        spans = jaeger_server.trace_spans(trace)
        by_id = {s["spanID"]: s for s in spans}
        names = sorted(s["operationName"] for s in spans)
        assert names == ["GET", "POST", "SET", "redis_message_controller"]
        controller = next(s for s in spans if s["operationName"] == "redis_message_controller")
        for span in spans:
            if span["operationName"] in ("GET", "SET"):
                [ref] = span["references"]
                assert ref["refType"] == "CHILD_OF"
                assert by_id[ref["spanID"]] is controller


def test_jaeger_over_grpc(jaeger_server):
    result = run_profiled(
        "--connection-string",
        f"otel://{jaeger_server.otlp_grpc_endpoint}?protocol=grpc",
    )
    [base] = result["base_ids"]
    trace = jaeger_server.wait_for_trace(ids.trace_hex(base), 2)
    assert len(jaeger_server.trace_spans(trace)) == 2


def test_threads_in_one_process_each_get_their_own_trace(otlp_receiver):
    result = run_profiled(
        "--requests",
        "40",
        "--threads",
        "8",
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint},
    )
    spans = otlp_receiver.wait_for(80)
    assert len({s.trace_id for s in spans}) == 40
    for base in result["base_ids"]:
        mine = [s for s in spans if s.trace_id == ids.trace_hex(base)]
        root = next(s for s in mine if s.parent_span_id == "")
        [child] = [s for s in mine if s is not root]
        assert child.parent_span_id == root.span_id
