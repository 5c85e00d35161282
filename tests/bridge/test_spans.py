"""The bridge through OSProfiler's real API, into an in-memory exporter."""

import contextlib
import threading
import uuid

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from osprofiler import profiler

from tests import tracing
from zaqar_otel.bridge import gate, ids


def setup_function():
    tracing.init_bridge()


def teardown_function():
    profiler.clean()


def test_one_span_per_start_stop_pair_with_osprofiler_ids():
    p = tracing.start_profiling()
    with profiler.Trace("wsgi", info={"request": {"method": "GET", "path": "/v2/queues"}}):
        with profiler.Trace("rpc"):
            pass
    spans = tracing.finished()
    assert [s.name for s in spans] == ["rpc", "GET"]
    rpc, wsgi = spans
    assert format(wsgi.context.trace_id, "032x") == ids.trace_hex(p.get_base_id())
    assert wsgi.parent is None
    assert wsgi.kind == SpanKind.SERVER
    assert rpc.parent.span_id == wsgi.context.span_id
    assert wsgi.context.span_id == ids.span_id(wsgi.attributes["osprofiler.id"])


def test_names_ending_in_start_letters_are_not_mangled():
    tracing.start_profiling()
    with profiler.Trace("rest"), profiler.Trace("tasks"):
        pass
    assert sorted(s.name for s in tracing.finished()) == ["rest", "tasks"]


def test_remote_parent_from_x_trace_info_links_by_derived_id():
    base, client_element = str(uuid.uuid4()), str(uuid.uuid4())
    profiler.clean()
    profiler.init(tracing.HMAC_KEY, base_id=base, parent_id=client_element)
    with profiler.Trace("wsgi"):
        pass
    [span] = tracing.finished()
    assert span.parent.span_id == ids.span_id(client_element)
    assert span.parent.is_remote
    assert span.context.trace_id == ids.trace_id(base)


def test_open_span_is_the_current_otel_span_and_marks_the_context():
    tracing.start_profiling()
    seen = {}
    with profiler.Trace("wsgi"):
        current = trace.get_current_span()
        seen["span_id"] = current.get_span_context().span_id
        seen["profiled"] = gate.in_profiled_request()
        child = trace.get_tracer("t").start_span("plain-otel-child")
        child.end()
    assert not gate.in_profiled_request()
    spans = {s.name: s for s in tracing.finished()}
    assert seen["span_id"] == spans["wsgi"].context.span_id
    assert seen["profiled"]
    assert spans["plain-otel-child"].parent.span_id == spans["wsgi"].context.span_id
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_error_at_stop_sets_status_and_exception_event():
    tracing.start_profiling()

    @profiler.trace("api")
    def fails():
        raise KeyError("missing")

    with contextlib.suppress(KeyError):
        fails()
    [span] = tracing.finished()
    assert span.status.status_code == StatusCode.ERROR
    [event] = span.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "KeyError"


def test_trace_decorator_info_reuse_does_not_leak_between_calls():
    tracing.init_bridge(trace_message_content=True)  # arguments are content
    tracing.start_profiling()

    @profiler.trace("api", hide_args=False)
    def f(x):
        return x

    f("first")
    f("second")
    args = [s.attributes["osprofiler.function.args"] for s in tracing.finished()]
    assert args == ["('first',)", "('second',)"]


def _worker(results, index, barrier):
    p = tracing.start_profiling()
    barrier.wait()
    try:
        with profiler.Trace("wsgi", info={"request": {"method": "POST", "path": f"/t/{index}"}}):
            for j in range(5):
                with profiler.Trace(f"step{j}"), profiler.Trace("inner"):
                    pass
        results[index] = p.get_base_id()
    finally:
        profiler.clean()


def test_concurrent_threads_each_get_their_own_exact_tree():
    threads, results = 12, {}
    barrier = threading.Barrier(threads)
    workers = [threading.Thread(target=_worker, args=(results, i, barrier)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    spans = tracing.finished()
    assert len(results) == threads
    assert len(spans) == threads * 11
    for index, base in results.items():
        mine = tracing.by_trace(spans, ids.trace_hex(base))
        assert len(mine) == 11
        [root] = [s for s in mine if s.parent is None]
        assert root.attributes["url.path"] == f"/t/{index}"
        steps = [s for s in mine if s.name.startswith("step")]
        assert sorted(s.name for s in steps) == [f"step{j}" for j in range(5)]
        for step in steps:
            assert tracing.parent_of(step, mine) is root
            assert step.end_time <= root.end_time
        inners = [s for s in mine if s.name == "inner"]
        assert {tracing.parent_of(s, mine).name for s in inners} == {f"step{j}" for j in range(5)}
        assert len({tracing.parent_of(s, mine).context.span_id for s in inners}) == 5


def test_malformed_notifications_are_dropped_without_raising(caplog):
    driver = tracing.init_bridge()
    for bad in (
        {},
        {"name": "x-start"},
        {"name": "x-start", "trace_id": "a", "base_id": "b", "info": "not a dict"},
        {"name": 3},
        {"name": "weird", "trace_id": "a", "base_id": "b"},
        None,
    ):
        driver.notify(bad)
    assert driver.bridge.malformed == 6
    assert len([r for r in caplog.records if "malformed" in r.getMessage()]) <= 1


def test_the_malformed_log_line_shows_the_shape_not_the_values():
    from zaqar_otel.bridge.spans import _preview

    payload = {"name": "x-start", "info": {"function": {"kwargs": "secret-body"}, "host": "h"}}
    assert _preview(payload) == "{'name': 'x-start', 'info': ['function', 'host']}"
    assert _preview(None) == "NoneType"


def test_stop_without_start_is_ignored():
    driver = tracing.init_bridge()
    driver.notify({"name": "x-stop", "trace_id": str(uuid.uuid4()), "base_id": str(uuid.uuid4())})
    assert tracing.finished() == []
    assert driver.bridge.malformed == 0


def test_unmatched_starts_are_bounded():
    driver = tracing.init_bridge()
    driver.bridge.max_open = 10
    base = str(uuid.uuid4())

    def leak():  # in its own thread: the contexts it leaves attached die with it
        for _ in range(25):
            driver.notify(
                {
                    "name": "leak-start",
                    "trace_id": str(uuid.uuid4()),
                    "base_id": base,
                    "parent_id": base,
                }
            )

    thread = threading.Thread(target=leak)
    thread.start()
    thread.join()
    assert driver.bridge.open_count() == 10
    assert driver.bridge.evicted == 15
    assert all(s.attributes["osprofiler.unfinished"] for s in tracing.finished())


def _pooling_request():
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        with profiler.Trace("pooling_message_controller"):
            with profiler.Trace("redis_message_controller"):
                pass
    return {s.name: s for s in tracing.finished()}


def test_trace_pooling_false_drops_pooling_spans_and_reparents_their_children():
    tracing.init_bridge(trace_pooling=False)
    spans = _pooling_request()
    assert set(spans) == {"wsgi", "redis_message_controller"}
    assert spans["redis_message_controller"].parent.span_id == spans["wsgi"].context.span_id


def test_trace_pooling_true_keeps_the_chain():
    tracing.init_bridge(trace_pooling=True)
    spans = _pooling_request()
    assert spans["pooling_message_controller"].parent.span_id == spans["wsgi"].context.span_id
    redis_parent = spans["redis_message_controller"].parent.span_id
    assert redis_parent == spans["pooling_message_controller"].context.span_id


def test_enabled_false_exports_nothing():
    tracing.init_bridge(enabled=False)
    _pooling_request()
    assert tracing.finished() == []


def test_ids_that_are_not_strings_still_give_one_connected_trace():
    # a signed X-Trace-Info may carry any JSON: OSProfiler passes it through
    profiler.clean()
    profiler.init(tracing.HMAC_KEY, base_id=[0], parent_id={"a": 1})
    with profiler.Trace("wsgi"), profiler.Trace("inner"):
        pass
    spans = {s.name: s for s in tracing.finished()}
    assert set(spans) == {"wsgi", "inner"}
    assert spans["inner"].parent.span_id == spans["wsgi"].context.span_id


def test_trace_message_content_is_read_once_per_request_and_applies_to_all_its_spans():
    driver = tracing.init_bridge(trace_message_content=True)

    @profiler.trace("api", hide_args=False)
    def call(x):
        return x

    tracing.start_profiling()
    with profiler.Trace(
        "wsgi", info={"request": {"method": "GET", "path": "/v2/queues/q/claims/c1"}}
    ):
        call("first")
        driver.conf.set_override("trace_message_content", False, "profiler")
        call("second")  # same request: same policy
    tracing.start_profiling()
    with profiler.Trace(
        "wsgi", info={"request": {"method": "GET", "path": "/v2/queues/q/claims/c2"}}
    ):
        call("third")  # the next request reads the flag again
    profiler.clean()
    spans = tracing.finished()
    args = [s.attributes.get("osprofiler.function.args") for s in spans if s.name.startswith("api")]
    assert args == ["('first',)", "('second',)", None]
    paths = [s.attributes["url.path"] for s in spans if s.name == "GET"]
    assert paths == ["/v2/queues/q/claims/c1", "/v2/queues/q/claims/REDACTED"]
