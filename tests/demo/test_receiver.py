"""The in-process OTLP receiver (zaqar_otel.demo.receiver), with the tests' fault switches
(tests/receiver.py), and its relay into another receiver (the demo's way into Jaeger)."""

from __future__ import annotations

import gzip
import threading
import time
import urllib.error
import urllib.request

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.receiver import ControlledReceiver
from tests.tracing import emit_parent_child, exporting_provider
from zaqar_otel.demo.receiver import ReceivedSpan, RelayReceiver


def test_otlp_receiver_decodes_sdk_spans(otlp_receiver: ControlledReceiver) -> None:
    provider = exporting_provider(OTLPSpanExporter(endpoint=otlp_receiver.traces_url), "svc-a")
    try:
        trace_id, parent_id = emit_parent_child(provider, "recv")
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


def test_otlp_receiver_gzip_and_clear(otlp_receiver: ControlledReceiver) -> None:
    exporter = OTLPSpanExporter(endpoint=otlp_receiver.traces_url, compression=Compression.Gzip)
    provider = exporting_provider(exporter, "svc-gz")
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


def test_otlp_receiver_faults(otlp_receiver: ControlledReceiver) -> None:
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
    with ControlledReceiver() as receiver, pytest.raises(TimeoutError, match="0 span"):
        receiver.wait_for(1, timeout=0.2)


def test_otlp_receiver_thread_safe(otlp_receiver: ControlledReceiver) -> None:
    provider = exporting_provider(
        OTLPSpanExporter(endpoint=otlp_receiver.traces_url), "svc-threads"
    )
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


def test_received_span_kind_numbers() -> None:
    span = ReceivedSpan("a" * 32, "b" * 16, "", "n", 2, 1, 2, {}, 0, "", [], "s", "sc")
    assert span.kind_name == "SERVER" and span.status_name == "UNSET" and span.is_root


def test_relay_sends_what_came_before_and_what_comes_after(
    otlp_receiver: ControlledReceiver,
) -> None:
    with RelayReceiver() as relay:
        before = exporting_provider(OTLPSpanExporter(endpoint=relay.traces_url), "svc-relay")
        before.get_tracer("t").start_span("before").end()
        assert otlp_receiver.spans() == []
        assert relay.relay_to(otlp_receiver.traces_url) == 1  # one request kept, accepted
        before.get_tracer("t").start_span("after").end()
        before.shutdown()
        spans = otlp_receiver.wait_for(2)
    assert [s.name for s in spans] == ["before", "after"]
    assert [s.name for s in relay.spans()] == ["before", "after"]
