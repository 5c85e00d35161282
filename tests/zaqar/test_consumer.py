"""The creation context's stored form, the create spans of a post, and what a receive records.

In-process, no servers: the end-to-end behaviour is in tests/zaqar/test_messaging.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags

from tests import tracing
from zaqar_otel.bridge import options
from zaqar_otel.bridge.gate import PROFILED
from zaqar_otel.zaqar import consumer, producer


@pytest.fixture(autouse=True)
def spans() -> Iterator[None]:
    tracing.global_provider()
    options.activate(tracing.make_conf())
    tracing.EXPORTER.clear()
    yield
    options.activate(None)


@pytest.fixture
def profiled() -> Iterator[trace.Span]:
    span = trace.get_tracer("test").start_span("request")
    token = context_api.attach(
        context_api.set_value(PROFILED, True, trace.set_span_in_context(span))
    )
    yield span
    context_api.detach(token)
    span.end()


def test_pack_unpack_round_trip_and_garbage():
    context = SpanContext(0xABC, 0xDEF, False, TraceFlags(TraceFlags.SAMPLED))
    raw = producer.pack(context)
    assert raw is not None and len(raw) == producer.CONTEXT_BYTES
    back = producer.unpack(raw)
    assert back is not None and (back.trace_id, back.span_id) == (0xABC, 0xDEF)
    assert back.is_remote and back.trace_flags.sampled
    assert producer.pack(SpanContext(1, 2, False, TraceFlags(0))) is None  # not sampled
    for junk in (None, "x" * 24, b"short", b"\0" * 24, 24):
        assert producer.unpack(junk) is None


def test_a_profiled_post_has_one_producer_span_per_message(profiled):
    stored: list[Any] = []

    @producer.traced_post
    def post(self: object, queue: str, messages: list[Any], client_uuid: str) -> list[str]:
        batch = producer.pending()
        assert batch is not None
        for index in range(len(messages)):
            stored.append(batch.context_for(f"m{index}"))
            assert batch.context_for(f"m{index}") == stored[-1]  # one span per id
        return [f"m{i}" for i in range(len(messages))]

    assert post(None, "orders", [{}, {}], "c") == ["m0", "m1"]
    assert producer.pending() is None
    creates = [s for s in tracing.finished() if s.name == "create orders"]
    assert len(creates) == 2
    creates.sort(key=lambda s: s.attributes["messaging.message.id"])
    for span, raw in zip(creates, stored, strict=True):
        assert span.kind == SpanKind.PRODUCER
        assert span.parent is not None
        assert span.parent.span_id == profiled.get_span_context().span_id
        assert producer.pack(span.context) == raw
        assert span.attributes["messaging.operation.type"] == "create"
        assert span.attributes["messaging.destination.name"] == "orders"


def test_a_failed_post_ends_its_spans_in_error(profiled):
    @producer.traced_post
    def post(self: object, queue: str, messages: list[Any], client_uuid: str) -> list[str]:
        batch = producer.pending()
        assert batch is not None
        batch.context_for("m0")
        raise ConnectionError("store down")

    with pytest.raises(ConnectionError):
        post(None, "orders", [{}], "c")
    [span] = [s for s in tracing.finished() if s.name == "create orders"]
    assert span.status.status_code == StatusCode.ERROR


def test_no_pending_batch_outside_profiled_posts_or_with_link_messages_off(profiled):
    @producer.traced_post
    def post(self: object, queue: str, messages: list[Any], client_uuid: str) -> bool:
        return producer.pending() is not None

    assert post(None, "q", [{}], "c") is True
    options.activate(tracing.make_conf(link_messages=False))
    assert post(None, "q", [{}], "c") is False
    options.activate(tracing.make_conf())
    token = context_api.attach(context_api.set_value(PROFILED, False))
    try:
        assert post(None, "q", [{}], "c") is False
    finally:
        context_api.detach(token)


def test_ids_and_ages_of_responses():
    assert consumer.posted_ids({"resources": ["/v2/queues/q/messages/a", "/v2/x/b/"]}) == [
        "a",
        "b",
    ]
    assert consumer.posted_ids({"message_ids": ["a", "b"]}) == ["a", "b"]
    assert consumer.posted_ids([1, 2]) == []
    listed = {"messages": [{"id": "a", "age": 3, "body": {}}, {"id": "b", "age": True}, {"x": 1}]}
    assert consumer.messages_in(listed) == [("a", 3), ("b", None)]
    assert consumer.messages_in({"id": "a", "age": 1, "body": "x"}) == [("a", 1)]
    assert consumer.messages_in({"messages": {"id": "a", "age": 2}}) == [("a", 2)]  # websocket
    stats = {"messages": {"claimed": 0, "free": 1, "total": 1}}
    assert consumer.messages_in(stats) == []


def test_received_messages_are_recorded_and_linked_to_their_producers(profiled):
    producer_span = SpanContext(0x1234, 0x5678, False, TraceFlags(TraceFlags.SAMPLED))
    raw = producer.pack(producer_span)
    assert raw is not None
    consumer.start_receiving()
    sink = consumer.receiving_sink()
    assert sink is not None
    sink["a"] = raw
    contexts = consumer.stop_receiving()
    assert consumer.receiving_sink() is None
    links = consumer.record_received(profiled, [("a", 7), ("b", 9)], contexts)
    assert links == 1
    profiled.end()
    [request] = [s for s in tracing.finished() if s.name == "request"]
    assert request.attributes["messaging.zaqar.batch.message_ids"] == ("a", "b")
    assert request.attributes["messaging.zaqar.batch.message_ages"] == (7, 9)
    [link] = request.links
    assert (link.context.trace_id, link.context.span_id) == (0x1234, 0x5678)
    assert dict(link.attributes or {}) == {
        "messaging.message.id": "a",
        "messaging.zaqar.message.age": 7,
    }


def test_one_received_message_is_a_message_id_and_an_age(profiled):
    assert consumer.record_received(profiled, [("a", 0)], {}) == 0
    consumer.record_posted(profiled, ["x", "y"])
    profiled.end()
    [request] = [s for s in tracing.finished() if s.name == "request"]
    assert request.attributes["messaging.message.id"] == "a"
    assert request.attributes["messaging.zaqar.message.age"] == 0
    assert request.attributes["messaging.zaqar.batch.message_ids"] == ("x", "y")


def test_the_sink_is_only_open_in_profiled_receives():
    consumer.start_receiving()
    try:
        assert consumer.receiving_sink() is None  # not in a profiled request
    finally:
        consumer.stop_receiving()
