"""zaqar_otel.zaqar.lazy: lazy results of traced calls are consumed inside the call's span.

Through OSProfiler's real ``trace_cls`` (as Zaqar applies it: on an instance), real
Redis and FerretDB clients with their OTel instrumentation, Zaqar's own HookedCursor.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
import redis
from opentelemetry.trace import StatusCode
from osprofiler import profiler
from zaqar.storage.mongodb.utils import HookedCursor

from tests import tracing
from zaqar_otel.zaqar import lazy


class Store:
    """Shaped like Zaqar's storage controllers: generators, cursors, tuples."""

    def __init__(self, client: Any = None, other: Any = None) -> None:
        self.client = client
        self.other = other

    def listing(self, keys: list[str]) -> Iterator[Any]:  # Redis MessageController.list
        found = [self.client.get(key) for key in keys]
        marker = {}

        def messages() -> Iterator[Any]:
            for value in found:
                marker["next"] = value
                yield value

        yield messages()
        yield marker["next"]

    def values(self, keys: list[str]) -> Iterator[Any]:
        for key in keys:
            if self.other is not None:
                self.other.exists(key)
            yield self.client.get(key)

    def claim(self, items: list[int]) -> tuple[str, Any]:  # MongoDB ClaimController.create
        return "claim-id", (item for item in items)

    def hooked(self, items: list[int]) -> HookedCursor:  # MongoDB bulk_get
        return HookedCursor(iter(items), lambda item: {"n": item}, ntotal=len(items))

    def find(self, collection: Any) -> Any:  # a raw pymongo cursor
        return collection.find({}).sort("n")

    def eager(self, value: Any) -> Any:
        return value

    def failing(self) -> Iterator[int]:
        yield 1
        raise ConnectionError("store went away")


class Queues:
    def exists(self, key: str) -> bool:
        return True


def traced(obj: Any, name: str = "store") -> Any:
    return lazy.trace_cls(name)(obj)


@pytest.fixture
def bridge() -> Any:
    driver = tracing.init_bridge(trace_redis=True, trace_mongodb=True)
    yield driver.bridge
    profiler.clean()


def spans() -> dict[str, Any]:
    return {s.name: s for s in tracing.finished()}


def ancestors(span: Any) -> list[str]:
    found, all_spans = [], tracing.finished()
    while (span := tracing.parent_of(span, all_spans)) is not None:
        found.append(span.name)
    return found


@pytest.fixture
def redis_client(redis_server) -> Any:
    client = redis.Redis.from_url(redis_server.url)
    keys = [f"lazy-{uuid.uuid4().hex}" for _ in range(3)]
    for key in keys:
        client.set(key, "v")
    client.keys_for_test = keys
    return client


def test_span_names_are_those_of_osprofilers_trace_cls(bridge):
    stock = profiler.trace_cls("store")(Store())
    ours = traced(Store())
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        stock.eager(1)
        ours.eager(1)
    names = [s.name for s in tracing.finished() if s.name != "wsgi"]
    assert names[0] == names[1] and names[0].endswith("Store.eager")


def test_a_generator_is_consumed_inside_its_span(bridge, redis_client):
    store = traced(Store(redis_client))
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        result = store.values(redis_client.keys_for_test)
        assert "store Store.values" not in spans()  # returned, still open
        assert [v for v in result] == [b"v"] * 3
    gets = [s for s in tracing.finished() if s.name == "GET"]
    assert len(gets) == 3
    values = spans()["store Store.values"]
    for get in gets:
        assert ancestors(get)[0] == "store Store.values"
        assert values.start_time <= get.start_time and get.end_time <= values.end_time
    assert [e.name for e in values.events] == ["returned"]
    assert bridge.open_count() == 0


def test_zaqars_listing_protocol_next_list_next_then_dropped(bridge, redis_client):
    store = traced(Store(redis_client))
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        results = store.listing(redis_client.keys_for_test)
        cursor = next(results)  # the DB work runs here
        assert list(cursor) == [b"v"] * 3
        assert next(results) == b"v"  # the marker
        assert "store Store.listing" not in spans()
        del results, cursor  # the generator is left suspended
        assert "store Store.listing" in spans()
        assert bridge.open_count() == 1
    assert all(
        ancestors(s)[0] == "store Store.listing" for s in tracing.finished() if s.name == "GET"
    )


def test_never_consumed_and_dropped_it_ends_at_its_return(bridge):
    store = traced(Store())
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        store.values([])
        gc.collect()  # CPython drops it at once; other interpreters on collection
        assert spans()["store Store.values"].events == ()
        assert bridge.open_count() == 1


def test_kept_but_never_consumed_it_ends_with_the_request(bridge):
    store = traced(Store())
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        kept = store.values(["k"])
    assert set(spans()) == {"wsgi", "store Store.values"}
    assert bridge.open_count() == 0
    del kept


def test_a_traced_call_made_while_consuming_is_a_child(bridge, redis_client):
    store = traced(Store(redis_client, other=traced(Queues(), "queues")))
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        list(store.values(redis_client.keys_for_test))
    exists = [s for s in tracing.finished() if s.name == "queues Queues.exists"]
    assert len(exists) == 3
    assert all(ancestors(s) == ["store Store.values", "wsgi"] for s in exists)


class Pooling:
    """Like Zaqar's pooling controllers: hands up what the pool's controller returned."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def values(self, keys: list[str]) -> Any:
        return self.store.values(keys)


def test_a_result_handed_up_through_two_traced_calls_keeps_both_open(bridge, redis_client):
    pooling = traced(Pooling(traced(Store(redis_client))), "pooling")
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        result = pooling.values(redis_client.keys_for_test)
        assert len(list(result)) == 3
        assert {"pooling Pooling.values", "store Store.values"} <= set(spans())
    gets = [s for s in tracing.finished() if s.name == "GET"]
    assert all(
        ancestors(s) == ["store Store.values", "pooling Pooling.values", "wsgi"] for s in gets
    )
    outer, inner = spans()["pooling Pooling.values"], spans()["store Store.values"]
    assert outer.start_time <= inner.start_time and inner.end_time <= outer.end_time
    assert bridge.open_count() == 0


def test_a_tuple_keeps_its_shape_and_only_its_lazy_part_is_wrapped(bridge):
    store = traced(Store())
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        result = store.claim([1, 2])
        assert type(result) is tuple
        claim_id, messages = result
        assert claim_id == "claim-id"
        assert isinstance(messages, lazy.LazyResult)
        assert list(messages) == [1, 2]
        assert "store Store.claim" in spans()  # exhausted: done


def test_eager_results_and_unprofiled_calls_are_returned_as_they_are(bridge):
    store = traced(Store())
    values: list[Any] = [[1], {"a": 1}, iter([]), None, "text", (1, 2)]
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        assert all(store.eager(v) is v for v in values)
    profiler.clean()
    generator = (n for n in range(2))
    assert store.eager(generator) is generator  # outside a profiled request


def test_zaqars_hooked_cursor_keeps_len_next_and_attributes(bridge):
    store = traced(Store())
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        cursor = store.hooked([1, 2, 3])
        assert len(cursor) == 3 and bool(cursor)
        assert cursor.next() == {"n": 1}  # Zaqar's py2-style next()
        assert next(cursor) == {"n": 2}
        assert cursor.ntotal == 3
        assert list(cursor) == [{"n": 3}]
        assert "store Store.hooked" in spans()


def test_a_generator_wrapper_has_no_len_and_closes(bridge):
    store = traced(Store())
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        result = store.values(["a", "b"])
        with pytest.raises(TypeError):
            len(result)
        assert bool(result)
        assert iter(result) is result
        assert result.gi_frame is not None  # generator attributes pass through
        result.close()
        assert "store Store.values" in spans()
        with pytest.raises(StopIteration):
            next(result)


def test_an_error_while_consuming_marks_the_span(bridge):
    store = traced(Store())
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        result = store.failing()
        assert next(result) == 1
        with pytest.raises(ConnectionError):
            next(result)
    span = spans()["store Store.failing"]
    assert span.status.status_code == StatusCode.ERROR
    assert "store went away" in span.status.description


@pytest.fixture
def collection(ferretdb_server) -> Any:
    client: Any = pymongo.MongoClient(ferretdb_server.url, serverSelectionTimeoutMS=5000)
    coll = client["zaqar_otel_test"][f"lazy{uuid.uuid4().hex}"]
    coll.insert_many([{"n": n} for n in range(5)])
    yield coll
    client.close()


def test_a_pymongo_cursor_keeps_its_methods_and_commands_stay_inside(bridge, collection):
    store = traced(Store())
    tracing.start_profiling()
    with profiler.Trace("wsgi"):
        cursor = store.find(collection)
        assert cursor.limit(3) is cursor  # chained calls return the wrapper
        assert cursor[0]["n"] == 0  # an index runs its own query
        clone = cursor.clone()
        assert isinstance(clone, lazy.LazyResult)
        assert [d["n"] for d in clone] == [0, 1, 2]
        with cursor as same:
            assert same is cursor
            assert [d["n"] for d in cursor[1:3]] == [1, 2]  # a slice: the same cursor
        assert "store Store.find" in spans()  # closed by the with block, clone exhausted
    finds = [s for s in tracing.finished() if s.name == f"find {collection.name}"]
    assert len(finds) == 3
    assert all(ancestors(s)[0] == "store Store.find" for s in finds)
    assert bridge.open_count() == 0


def test_install_gives_zaqars_storage_modules_this_trace_cls():
    import zaqar.storage.mongodb.driver as mongodb_driver
    import zaqar.storage.redis.driver as redis_driver

    lazy.install()
    assert lazy.install() == list(lazy.TRACING_MODULES)  # idempotent, every module
    for module in (redis_driver, mongodb_driver):
        assert module.profiler is lazy.PROFILER
        assert module.profiler.trace_cls is lazy.trace_cls
        assert module.profiler.init is profiler.init  # the rest is OSProfiler's
