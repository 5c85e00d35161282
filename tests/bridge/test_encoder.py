"""The bridge's OTLP encoder writes what the SDK's encoder writes: decoded, field for field."""

from __future__ import annotations

import math

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from zaqar_otel.bridge import encoder

EVERY_TYPE = {
    "str": "text",
    "empty": "",
    "unicode": "été ✓ 🚀",
    "bool_true": True,
    "bool_false": False,
    "int": 42,
    "zero": 0,
    "negative": -7,
    "int64_max": (1 << 63) - 1,
    "int64_min": -(1 << 63),
    "float": 3.25,
    "float_zero": 0.0,
    "inf": math.inf,
    "bytes": b"\x00\xffraw",
    "strings": ["a", "b"],
    "ints": (1, 2, 3),
    "bools": [True, False],
    "floats": [0.5, -1.5],
    "empty_list": [],
    "mixed": ["a", 1, True, 2.0],
    "nested": {"k": "v", "n": 1, "inner": {"x": [1, 2]}},
    "none": None,
    "long": "x" * 300,
}


def _decoded(data: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(data)


def _same(spans) -> None:
    ours = encoder.encode_spans(spans)
    theirs = sdk_encode(spans).SerializeToString()
    assert _decoded(ours) == _decoded(theirs)
    assert ours == theirs  # the very same bytes, too (same field order)


def _provider(resource=None, limits=None):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=resource or Resource.create({"service.name": "enc"}), span_limits=limits
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _remote(trace_id=0xABC, span_id=0xDEF, state=None):
    return SpanContext(trace_id, span_id, True, TraceFlags(1), state or TraceState())


def test_every_field_of_a_span():
    provider, exporter = _provider()
    tracer = provider.get_tracer(
        "scope", "1.2", schema_url="https://schema/1", attributes={"scope.attr": "s"}
    )
    parent = set_span_in_context(NonRecordingSpan(_remote(state=TraceState([("k", "v")]))))
    links = [
        Link(_remote(0x1, 0x2), {"link.attr": 1}),
        Link(SpanContext(0x3, 0x4, False, TraceFlags(1)), None),
    ]
    span = tracer.start_span("every field", parent, SpanKind.SERVER, EVERY_TYPE, links)
    span.add_event("first", {"e": "v", "n": 2}, timestamp=123)
    span.add_event("second")
    span.add_link(_remote(0x5, 0x6), {"late": True})
    span.set_status(Status(StatusCode.ERROR, "went wrong"))
    span.end()
    _same(exporter.get_finished_spans())


@pytest.mark.parametrize("kind", list(SpanKind))
def test_each_kind_and_a_root_span(kind):
    provider, exporter = _provider()
    provider.get_tracer("t").start_span(f"root {kind.name}", kind=kind).end()
    _same(exporter.get_finished_spans())


@pytest.mark.parametrize(
    "status", [Status(StatusCode.OK), Status(StatusCode.ERROR), Status(StatusCode.UNSET)]
)
def test_each_status(status):
    provider, exporter = _provider()
    span = provider.get_tracer("t").start_span("s")
    span.set_status(status)
    span.end()
    _same(exporter.get_finished_spans())


def test_local_parent_and_dropped_counts():
    limits = SpanLimits(
        max_span_attributes=2,
        max_events=1,
        max_links=1,
        max_event_attributes=1,
        max_link_attributes=1,
    )
    provider, exporter = _provider(limits=limits)
    tracer = provider.get_tracer("t")
    parent = tracer.start_span("parent")
    context = set_span_in_context(parent)
    links = [Link(_remote(1, 2), {"a": 1, "b": 2}), Link(_remote(3, 4))]
    child = tracer.start_span("child", context, attributes={"a": 1, "b": 2, "c": 3}, links=links)
    child.add_event("e1", {"a": 1, "b": 2})
    child.add_event("e2")
    child.end()
    parent.end()
    spans = exporter.get_finished_spans()
    assert spans[0].dropped_attributes and spans[0].dropped_events and spans[0].dropped_links
    _same(spans)


def test_all_events_and_links_dropped():
    provider, exporter = _provider(limits=SpanLimits(max_events=0, max_links=0))
    span = provider.get_tracer("t").start_span("s", links=[Link(_remote(1, 2))])
    span.add_event("gone")
    span.end()
    [finished] = exporter.get_finished_spans()
    assert finished.dropped_events == 1 and finished.dropped_links == 1
    _same([finished])


def test_many_spans_grouped_by_resource_and_scope_in_order():
    a, a_spans = _provider(Resource.create({"service.name": "a"}))
    b, b_spans = _provider(Resource.create({"service.name": "b"}, schema_url="https://s"))
    twin, twin_spans = _provider(Resource.create({"service.name": "a"}))  # equal to a's
    for provider in (a, b, twin):
        for scope in ("one", "two"):
            tracer = provider.get_tracer(scope)
            for n in range(3):
                tracer.start_span(f"{scope}-{n}", attributes={"n": n, "trace": "same"}).end()
    mixed = []
    for group in zip(
        a_spans.get_finished_spans(),
        b_spans.get_finished_spans(),
        twin_spans.get_finished_spans(),
        strict=True,
    ):
        mixed.extend(group)
    _same(mixed)


def test_a_batch_larger_than_the_attribute_cache_and_long_lengths():
    provider, exporter = _provider()
    tracer = provider.get_tracer("t")
    for n in range(encoder._CACHE_MAX + 50):
        tracer.start_span("s", attributes={"unique": f"value-{n}", "same": "x"}).end()
    tracer.start_span("big", attributes={"big": "y" * 70_000}).end()
    _same(exporter.get_finished_spans())


def test_values_the_sdk_cannot_encode_are_left_out_as_there():
    provider, exporter = _provider()
    span = provider.get_tracer("t").start_span("s", attributes={"ok": 1})
    # past the SDK's attribute cleaning (which would refuse them), as a buggy processor might
    span._attributes._dict["too_big"] = 1 << 70
    span._attributes._dict["object"] = object()
    span._attributes._dict["surrogate"] = "\udc80"
    span._attributes._dict["\udc81"] = "surrogate key"
    span.end()
    [finished] = exporter.get_finished_spans()
    ours = _decoded(encoder.encode_spans([finished]))
    assert [kv.key for kv in ours.resource_spans[0].scope_spans[0].spans[0].attributes] == ["ok"]
    assert ours == _decoded(sdk_encode([finished]).SerializeToString())


def test_varint():
    for value in (0, 1, 127, 128, 300, 16_383, 16_384, 1 << 35, (1 << 64) - 1):
        encoded = encoder.varint(value)
        decoded = sum((byte & 0x7F) << (7 * i) for i, byte in enumerate(encoded))
        assert decoded == value
        assert all(byte & 0x80 for byte in encoded[:-1]) and not encoded[-1] & 0x80
