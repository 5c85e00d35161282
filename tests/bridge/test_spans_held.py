"""Held spans (``SpanBridge.hold``): a span kept open after its -stop for deferred work."""

import threading
import uuid

from opentelemetry import trace
from opentelemetry.trace import StatusCode
from osprofiler import profiler

from tests import tracing
from zaqar_otel.bridge import gate
from zaqar_otel.bridge.spans import current_bridge


def setup_function():
    tracing.init_bridge()


def teardown_function():
    profiler.clean()


def _bridge():
    from zaqar_otel import driver

    assert driver._current is not None and driver._current.bridge is not None
    return driver._current.bridge


def _spans():
    return {s.name: s for s in tracing.finished()}


def test_a_held_span_ends_after_its_deferred_work_which_it_parents():
    bridge = _bridge()
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        with profiler.Trace("controller"):
            assert current_bridge() is bridge
            held = bridge.hold(profiler.get().get_id())
        assert "controller" not in _spans()  # returned, still open
        assert bridge.open_count() == 2
        with held.resumed():
            assert gate.in_profiled_request()
            trace.get_tracer("t").start_span("db").end()
        assert trace.get_current_span().is_recording()  # wsgi's context is back
        held.release()
    spans = _spans()
    controller, db, wsgi = spans["controller"], spans["db"], spans["wsgi"]
    assert db.parent.span_id == controller.context.span_id
    assert db.end_time <= controller.end_time <= wsgi.end_time
    [returned] = controller.events
    assert returned.name == "returned" and returned.timestamp < db.start_time
    assert bridge.open_count() == 0


def test_without_deferred_work_it_ends_when_its_call_returned():
    bridge = _bridge()
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        with profiler.Trace("controller"):
            held = bridge.hold(profiler.get().get_id())
        trace.get_tracer("t").start_span("later").end()
        held.release()
    spans = _spans()
    assert spans["controller"].end_time <= spans["later"].start_time
    assert spans["controller"].events == ()


def test_released_before_its_stop_it_ends_at_the_stop():
    bridge = _bridge()
    tracing.start_profiling()
    with profiler.Trace("wsgi"), profiler.Trace("controller"):
        bridge.hold(profiler.get().get_id()).release()
        assert "controller" not in _spans()
    assert set(_spans()) == {"wsgi", "controller"}
    assert bridge.open_count() == 0


def test_every_user_must_release():
    bridge = _bridge()
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        with profiler.Trace("controller"):
            held = bridge.hold(profiler.get().get_id())
            held.retain()
            held.release()  # the caller's own reference
        held.retain()
        held.release()
        assert "controller" not in _spans()
        held.release()  # the last one
        assert "controller" in _spans()
        held.release()  # once more: nothing
    assert bridge.open_count() == 0


def test_a_held_span_never_outlives_its_parent():
    bridge = _bridge()
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        with profiler.Trace("pooling"):
            with profiler.Trace("controller"):
                held = bridge.hold(profiler.get().get_id())
    spans = _spans()  # never released: ended with wsgi (through pooling)
    assert spans["controller"].end_time <= spans["pooling"].end_time <= spans["wsgi"].end_time
    assert bridge.open_count() == 0
    with held.resumed():  # ended: nothing is attached any more
        assert trace.get_current_span() is trace.INVALID_SPAN
    held.release()
    assert len(tracing.finished()) == 3


def test_a_held_parent_ends_its_held_children_when_released():
    bridge = _bridge()
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        with profiler.Trace("pooling"):
            outer = bridge.hold(profiler.get().get_id())
            with profiler.Trace("controller"):
                bridge.hold(profiler.get().get_id())
        outer.release()
        assert {"pooling", "controller"} <= set(_spans())
    assert bridge.open_count() == 0


def test_released_from_another_thread():
    bridge = _bridge()
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        with profiler.Trace("controller"):
            held = bridge.hold(profiler.get().get_id())
        thread = threading.Thread(target=held.release)
        thread.start()
        thread.join()
        assert "controller" in _spans()


def test_failed_deferred_work_marks_the_span():
    bridge = _bridge()
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        with profiler.Trace("controller"):
            held = bridge.hold(profiler.get().get_id())
        held.failed(ConnectionError("redis went away"))
        held.release()
    controller = _spans()["controller"]
    assert controller.status.status_code == StatusCode.ERROR
    assert controller.events[-1].attributes["exception.type"] == "ConnectionError"


def test_nothing_to_hold():
    bridge = _bridge()
    assert bridge.hold(str(uuid.uuid4())) is None
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        with profiler.Trace("controller"):
            element = profiler.get().get_id()
        assert bridge.hold(element) is None  # stopped already
    assert current_bridge() is None


def test_a_skipped_span_is_not_held():
    bridge = tracing.init_bridge(trace_pooling=False).bridge
    tracing.start_profiling()
    with profiler.Trace("wsgi"), profiler.Trace("pooling_message_controller"):
        assert bridge.hold(profiler.get().get_id()) is None


def test_held_spans_count_against_the_open_bound():
    bridge = _bridge()
    bridge.max_open = 3
    helds = []

    def request():  # in its own thread: an evicted span's context dies with it
        tracing.start_profiling()
        with profiler.Trace("wsgi"):
            for _ in range(4):
                with profiler.Trace("controller"):
                    helds.append(bridge.hold(profiler.get().get_id()))

    thread = threading.Thread(target=request)
    thread.start()
    thread.join()
    assert bridge.evicted == 2  # the oldest: wsgi, then the first controller
    assert bridge.open_count() == 3  # three held controllers
    for held in helds:
        held.release()
    assert bridge.open_count() == 0
    assert len(tracing.finished()) == 5
