"""LightSpan behaves as the SDK's span for everything the bridge and the middleware use, and
reaches the provider's processors as the SDK's span would (limits, resource, scope)."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from osprofiler import profiler
from packaging.version import Version

from tests import tracing
from zaqar_otel.bridge import encoder, export
from zaqar_otel.bridge.provider import HintedIdGenerator
from zaqar_otel.bridge.recorder import LightSpan, Recorder, quiet_processor
from zaqar_otel.bridge.spans import SpanBridge

TRACE, SPAN, PARENT = 0x0123456789ABCDEF0123456789ABCDEF, 0x1111, 0x2222
START = 1_700_000_000_000_000_000


def _provider(limits: SpanLimits | None = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    hints = HintedIdGenerator()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "recorder-test"}),
        id_generator=hints,
        span_limits=limits,
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def _pair(limits: SpanLimits | None = None, parent_remote: bool = True) -> tuple[Any, Any, Any]:
    """(SDK span, LightSpan, exporter): the same span started both ways."""
    provider, memory = _provider(limits)
    tracer = provider.get_tracer("zaqar_otel", "9.9")
    parent = SpanContext(TRACE, PARENT, parent_remote, TraceFlags(1))
    attributes = {"osprofiler.name": "x", "count": 1}
    with provider.id_generator.hint(TRACE, SPAN):
        sdk = tracer.start_span(
            "name",
            trace.set_span_in_context(trace.NonRecordingSpan(parent)),
            SpanKind.CLIENT,
            dict(attributes),
            start_time=START,
        )
    recorder = Recorder.for_tracer(tracer)
    assert recorder is not None and recorder.usable()
    light = LightSpan(
        recorder,
        "name",
        SpanContext(TRACE, SPAN, False, TraceFlags(1)),
        parent,
        SpanKind.CLIENT,
        dict(attributes),
        START,
    )
    return sdk, light, memory


def _fields(span: Any) -> dict[str, Any]:
    return {
        "name": span.name,
        "context": span.context,
        "parent": span.parent,
        "kind": span.kind,
        "start": span.start_time,
        "end": span.end_time,
        "attributes": dict(span.attributes),
        "events": [(e.name, e.timestamp, dict(e.attributes)) for e in span.events],
        "links": [(link.context, dict(link.attributes)) for link in span.links],
        "status": (span.status.status_code, span.status.description),
        "resource": span.resource,
        "scope": span.instrumentation_scope,
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
    }


def _same(operations: Any, limits: SpanLimits | None = None) -> tuple[Any, Any]:
    sdk, light, memory = _pair(limits)
    for span in (sdk, light):
        operations(span)
        span.end(end_time=START + 1000)
    finished_sdk, finished_light = memory.get_finished_spans()
    assert finished_light is light
    assert _fields(finished_light) == _fields(finished_sdk)
    # what leaves the process: the same OTLP request from either encoder
    assert encoder.encode_spans([light]) == sdk_encode([finished_sdk]).SerializeToString()
    assert sdk_encode([light]) == sdk_encode([finished_sdk])
    return finished_sdk, finished_light


def test_what_the_middleware_does():
    def middleware(span: Any) -> None:
        assert span.is_recording()
        span.update_name("POST /v2/queues/{queue_name}/messages")
        span.set_attribute("http.route", "/v2/queues/{queue_name}/messages")
        span.set_attribute("messaging.batch.message_ids", ["a", "b"])  # a list: cleaned, tuple
        span.set_attributes({"http.response.status_code": 500, "error.type": "500"})
        span.set_status(Status(StatusCode.ERROR, "500 Internal Server Error"))
        span.add_event("returned", {"n": 1}, timestamp=START + 10)
        span.add_link(SpanContext(0xAB, 0xCD, True, TraceFlags(1)), {"messaging.message.id": "m"})
        assert dict(span.attributes)["http.route"].startswith("/v2")

    _, light = _same(middleware)
    assert light.attributes["messaging.batch.message_ids"] == ("a", "b")


def test_status_rules():
    def statuses(span: Any) -> None:
        span.set_status(Status(StatusCode.UNSET))  # ignored
        span.set_status(StatusCode.ERROR, "first")
        span.set_status(Status(StatusCode.OK))
        span.set_status(StatusCode.ERROR, "after ok: ignored")

    _same(statuses)


def test_record_exception_and_bad_values():
    def operations(span: Any) -> None:
        try:
            raise KeyError("missing")
        except KeyError as error:
            span.record_exception(error, {"extra": True}, timestamp=START + 5, escaped=True)
        span.set_attribute("object", object())  # the SDK's cleaning: str() of it... or None
        span.set_attribute("", "empty key dropped")
        span.add_link(SpanContext(0, 0, False), None)  # invalid: dropped

    _, light = _same(operations)
    assert [e.name for e in light.events] == ["exception"]


def test_limits_drop_the_oldest_as_the_sdk_does():
    limits = SpanLimits(
        max_span_attributes=3,
        max_span_attribute_length=4,
        max_events=1,
        max_links=1,
        max_event_attributes=1,
        max_link_attributes=1,
    )

    def operations(span: Any) -> None:
        span.set_attribute("long", "truncated to four")
        span.set_attributes({"a": 1, "b": 2, "count": 3})
        span.add_event("e1", {"x": 1, "y": 2}, timestamp=START + 1)
        span.add_event("e2", timestamp=START + 2)
        span.add_link(SpanContext(1, 2, False, TraceFlags(1)), {"x": 1, "y": 2})
        span.add_link(SpanContext(3, 4, False, TraceFlags(1)))

    _, light = _same(operations, limits)
    assert light.dropped_attributes and light.dropped_events and light.dropped_links


def test_limits_apply_to_the_bridges_own_attributes_at_the_end():
    limits = SpanLimits(max_span_attributes=1, max_span_attribute_length=2)
    _, light = _same(lambda span: None, limits)
    assert light.attributes == {"count": 1} and light.dropped_attributes == 1


def test_an_ended_span_refuses_changes():
    _sdk, light, memory = _pair()
    light.end()
    light.set_attribute("late", 1)
    light.update_name("late")
    light.set_status(StatusCode.ERROR)
    light.add_event("late")
    light.end()  # a second end: warned, not exported twice
    [finished] = memory.get_finished_spans()
    assert finished.name == "name" and "late" not in finished.attributes
    assert not finished.events and finished.status.status_code is StatusCode.UNSET
    assert not light.is_recording()


class _Stamping(SpanProcessor):
    """A processor that works in on_start (an SDK-style baggage processor, say)."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        span.set_attribute("stamped", True)


class _Quiet(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        """Nothing to do."""

    def _on_ending(self, span: Any) -> None:
        return None


def test_which_processors_are_quiet():
    memory = InMemorySpanExporter()
    assert quiet_processor(SimpleSpanProcessor(memory))
    batch = BatchSpanProcessor(memory)
    counting = export.CountingBatchSpanProcessor(memory)
    try:
        assert quiet_processor(batch) and quiet_processor(counting)
    finally:
        batch.shutdown()
        counting.shutdown()
    assert quiet_processor(_Quiet())
    assert not quiet_processor(_Stamping())


def _bridged(provider: TracerProvider) -> SpanBridge:
    hints = provider.id_generator
    assert isinstance(hints, HintedIdGenerator)
    return SpanBridge(provider.get_tracer("zaqar_otel"), hints)


def _one_request(bridge: SpanBridge) -> Any:
    from osprofiler import notifier

    notifier.set(bridge.handle)
    tracing.start_profiling()
    with profiler.Trace("wsgi", info={"request": {"method": "GET", "path": "/v2/queues"}}):
        with profiler.Trace("api"):
            current = trace.get_current_span()
    profiler.clean()
    return current


def test_a_processor_working_in_on_start_gets_sdk_spans(monkeypatch):
    provider, memory = _provider()
    bridge = _bridged(provider)
    assert isinstance(_one_request(bridge), LightSpan)
    provider.add_span_processor(_Stamping())  # added later: the next spans are SDK spans
    current = _one_request(bridge)
    assert not isinstance(current, LightSpan) and current.get_span_context().is_valid
    spans = memory.get_finished_spans()
    assert [s.attributes.get("stamped") for s in spans] == [None, None, True, True]
    # same ids, nesting and attributes either way
    light_api, light_wsgi, sdk_api, sdk_wsgi = spans
    for api, wsgi in ((light_api, light_wsgi), (sdk_api, sdk_wsgi)):
        assert api.parent.span_id == wsgi.context.span_id and wsgi.parent is None
        assert api.context.trace_id == wsgi.context.trace_id
        assert wsgi.kind is SpanKind.SERVER and wsgi.name == "GET"

    def described(span: Any) -> dict[str, Any]:
        return {
            k: v
            for k, v in span.attributes.items()
            if not k.startswith("osprofiler.") and k != "stamped"
        }

    assert described(sdk_wsgi) == described(light_wsgi)


def test_a_processor_added_later_gets_the_light_spans_too():
    provider, memory = _provider()
    bridge = _bridged(provider)
    later = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(later))
    _one_request(bridge)
    assert len(later.get_finished_spans()) == len(memory.get_finished_spans()) == 2


def test_the_providers_resource_scope_and_limits():
    provider, memory = _provider(SpanLimits(max_span_attribute_length=3))
    _one_request(_bridged(provider))
    for span in memory.get_finished_spans():
        assert span.resource is provider.resource
        assert span.instrumentation_scope.name == "zaqar_otel"
        assert all(len(v) <= 3 for v in span.attributes.values() if isinstance(v, str))


def test_a_disabled_tracer_records_nothing():
    provider, memory = _provider()
    tracer = provider.get_tracer("zaqar_otel")
    config = getattr(tracer, "_tracer_config", None)
    if config is None:  # the oldest compat row's SDK (1.35); 1.45 has it: never hidden there
        assert Version(version("opentelemetry-sdk")) < Version("1.45"), "no _tracer_config"
        pytest.skip("this SDK has no tracer configurator")
    hints = provider.id_generator
    bridge = SpanBridge(tracer, hints)  # type: ignore[arg-type]
    config.is_enabled = False
    _one_request(bridge)
    assert memory.get_finished_spans() == ()


def test_scalars_fast_then_the_count_limit_as_the_sdk():
    def operations(span: Any) -> None:
        for n in range(5):
            span.set_attribute(f"k{n}", n)
        span.set_attribute("count", 9)  # re-set: moves to the newest
        span.set_attributes({"k1": "again", "t": (1, 2)})

    _, light = _same(operations, SpanLimits(max_span_attributes=4))
    assert light.dropped_attributes


def test_the_bridges_attributes_after_a_sequence_as_the_sdk():
    """set_clean (a ``-stop``'s attributes) once a sequence made the attributes bounded:
    the websocket span's status after its message ids (lost on SDK 1.35 before)."""

    def operations(span: Any) -> None:
        span.set_attribute("ids", ("a", "b"))  # not a scalar: BoundedAttributes from here
        if isinstance(span, LightSpan):
            span.set_clean({"zaqar.response.status": 201, "count": 2})
        else:
            span.set_attributes({"zaqar.response.status": 201, "count": 2})

    _, light = _same(operations)
    assert light.attributes["zaqar.response.status"] == 201


def test_a_child_span_of_an_instrumentation_is_the_sdks_span():
    """What the DB gate starts (Recorder.start_child) against the SDK's tracer.start_span."""
    provider, memory = _provider()
    tracer = provider.get_tracer("opentelemetry.instrumentation.redis", "0.1")
    recorder = Recorder.for_tracer(tracer)
    assert recorder is not None
    parent = SpanContext(TRACE, PARENT, False, TraceFlags(1), trace.TraceState([("k", "v")]))
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    attributes = {"db.system.name": "redis", "list": ["a", "b"], "none": None, "": "dropped"}
    links = [trace.Link(SpanContext(0xAB, 0xCD, True, TraceFlags(1)), {"a": 1})]
    sdk = tracer.start_span("GET", context, SpanKind.CLIENT, attributes, links, START)
    light = recorder.start_child("GET", context, SpanKind.CLIENT, attributes, links, START)
    for span in (sdk, light):
        span.set_attribute("db.response.status_code", "OK")
        span.end(end_time=START + 10)
    finished_sdk, finished_light = memory.get_finished_spans()
    assert finished_light is light
    ours, theirs = _fields(finished_light), _fields(finished_sdk)
    assert ours.pop("context").span_id != theirs.pop("context").span_id  # fresh ids, each
    assert ours == theirs
    assert light.context.trace_id == TRACE and light.context.trace_state == parent.trace_state
    assert light.parent == parent


def test_the_light_tracer_as_the_sdk_tracer():
    """The bridge's own spans (provider.tracer(): messages, outgoing calls) with the SDK's
    semantics: current while open, an exception recorded with its status."""
    from zaqar_otel.bridge.recorder import LightTracer

    provider, memory = _provider()
    tracer = provider.get_tracer("zaqar_otel.outgoing")
    light = LightTracer(tracer)
    for each in (tracer, light):
        with pytest.raises(KeyError):
            with each.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes={"a": 1}):
                assert trace.get_current_span().name == "POST"
                raise KeyError("gone")
        with each.start_span("manual", start_time=START) as span:
            span.set_attribute("b", 2)
    sdk_post, sdk_manual, light_post, light_manual = memory.get_finished_spans()
    assert isinstance(light_post, LightSpan) and isinstance(light_manual, LightSpan)
    for ours, theirs in ((light_post, sdk_post), (light_manual, sdk_manual)):
        mine, other = _fields(ours), _fields(theirs)
        for key in ("context", "start", "end"):
            mine.pop(key), other.pop(key)
        for fields in (mine, other):  # the stack trace differs by its line numbers
            fields["events"] = [(name, sorted(attrs)) for name, _, attrs in fields["events"]]
        assert mine == other
    assert light_post.status.status_code is StatusCode.ERROR


def test_a_local_parent_as_the_sdk():
    """A parent span of this process (not remote): the span's flags say so in OTLP too."""
    sdk, light, memory = _pair(parent_remote=False)
    for span in (sdk, light):
        span.end(end_time=START + 1000)
    finished_sdk, finished_light = memory.get_finished_spans()
    assert _fields(finished_light) == _fields(finished_sdk)
    assert not finished_light.parent.is_remote
    assert encoder.encode_spans([light]) == sdk_encode([finished_sdk]).SerializeToString()
