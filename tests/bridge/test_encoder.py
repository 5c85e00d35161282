"""The bridge's OTLP encoder writes what the SDK's encoder writes: decoded, field for field."""

from __future__ import annotations

import copy
import math

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
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


class _OtherSpan(ReadableSpan):
    """A ReadableSpan type the encoder does not read field by field (through properties)."""


def test_another_span_type_keeps_its_dropped_counts():
    provider, exporter = _provider(limits=SpanLimits(max_events=1, max_links=1))
    links = [Link(_remote(1, 2)), Link(_remote(3, 4))]
    span = provider.get_tracer("t").start_span("s", links=links)
    span.add_event("kept")
    span.add_event("dropped")
    span.end()
    [finished] = exporter.get_finished_spans()
    other = copy.copy(finished)
    other.__class__ = _OtherSpan
    assert other.dropped_events == 1 and other.dropped_links == 1
    decoded = _decoded(encoder.encode_spans([other]))
    encoded_span = decoded.resource_spans[0].scope_spans[0].spans[0]
    assert (encoded_span.dropped_events_count, encoded_span.dropped_links_count) == (1, 1)
    _same([other])


def test_equal_values_of_different_types_stay_apart():
    provider, exporter = _provider()
    tracer = provider.get_tracer("t")
    for value in (1, True, 1.0, "1", 1, True):  # 1 == True == 1.0: the cache keeps the type
        tracer.start_span("s", attributes={"same.key": value}).end()
    spans = exporter.get_finished_spans()
    values = [
        span.attributes[0].value
        for span in _decoded(encoder.encode_spans(spans)).resource_spans[0].scope_spans[0].spans
    ]
    assert [v.WhichOneof("value") for v in values] == [
        "int_value",
        "bool_value",
        "double_value",
        "string_value",
        "int_value",
        "bool_value",
    ]
    _same(spans)


def test_interleaved_traces_keep_their_own_trace_ids():
    provider, exporter = _provider()
    other, other_exporter = _provider(Resource.create({"service.name": "other"}))
    tracer, other_tracer = provider.get_tracer("t"), other.get_tracer("t")
    roots = [tracer.start_span(f"root-{n}") for n in range(3)]
    for n in range(6):  # children of the three traces, alternating, and another service's
        root = roots[n % 3]
        tracer.start_span(f"child-{n}", set_span_in_context(root)).end()
        other_tracer.start_span(f"other-{n}", set_span_in_context(root)).end()
    for root in roots:
        root.end()
    mixed = [*exporter.get_finished_spans(), *other_exporter.get_finished_spans()]
    mixed.sort(key=lambda span: span.start_time or 0)
    decoded = _decoded(encoder.encode_spans(mixed))
    by_name = {
        span.name: int.from_bytes(span.trace_id, "big")
        for resource in decoded.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    }
    assert by_name == {span.name: span.context.trace_id for span in mixed}
    _same(mixed)


def test_light_spans_and_sdk_spans_in_one_batch():
    """The bridge's LightSpans and an instrumentation's SDK spans share a resource (and
    here a scope): grouped as the SDK's encoder groups them."""
    from zaqar_otel.bridge.recorder import LightTracer

    provider, exporter = _provider()
    tracer = provider.get_tracer("zaqar_otel", "1")
    db_tracer = provider.get_tracer("opentelemetry.instrumentation.redis", "0.1")
    with LightTracer(tracer).start_as_current_span("POST", kind=SpanKind.SERVER) as light:
        db_tracer.start_span("EVALSHA", kind=SpanKind.CLIENT, attributes={"db": "r"}).end()
        tracer.start_span("SDK span, same scope", attributes={"n": 1}).end()
        light.set_attribute("http.response.status_code", 201)
    spans = exporter.get_finished_spans()
    assert sum(type(span).__name__ == "LightSpan" for span in spans) == 1
    _same(spans)
