"""lookup.jaeger (query client, tree) and lookup.report, against a real Jaeger v2."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from osprofiler import exc

from zaqar_otel.bridge import ids
from zaqar_otel.bridge.provider import HintedIdGenerator
from zaqar_otel.bridge.spans import SpanBridge
from zaqar_otel.demo.process import pick_port
from zaqar_otel.driver import OTelDriver
from zaqar_otel.lookup import jaeger
from zaqar_otel.lookup.jaeger import JaegerQuery, SpanRecord, render_tree, trace_url
from zaqar_otel.lookup.report import osprofiler_report, synthetic_id

# -- exporting a known trace to the real Jaeger, through the real bridge


@dataclass
class Element:
    """One OSProfiler element to send as a start/stop pair."""

    name: str
    service: str
    parent: str | None  # element key, None: the base id
    start_info: dict[str, Any] = field(default_factory=dict)
    stop_info: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


def export_elements(otlp_http: str, base_id: str, tree: dict[str, Element], order: Sequence):
    """Send OSProfiler notifications for ``tree`` through SpanBridge to Jaeger by OTLP.

    ``order`` is a sequence of ("start"|"stop", key): one bridge (one provider,
    one service.name) per service, as separate processes would have.
    """
    bridges: dict[str, tuple[TracerProvider, SpanBridge]] = {}
    for element in tree.values():
        if element.service not in bridges:
            hints = HintedIdGenerator()
            provider = TracerProvider(
                # the bridge's provider: the host in the resource, not on every span
                resource=Resource.create({SERVICE_NAME: element.service, "host.name": "host-1"}),
                id_generator=hints,
            )
            provider.add_span_processor(
                SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp_http}/v1/traces"))
            )
            bridges[element.service] = (provider, SpanBridge(provider.get_tracer("t"), hints))
    for what, key in order:
        element = tree[key]
        parent = tree[element.parent].id if element.parent else base_id
        payload = {
            "name": f"{element.name}-{what}",
            "base_id": base_id,
            "trace_id": element.id,
            "parent_id": parent,
            "info": dict(element.start_info if what == "start" else element.stop_info),
        }
        bridges[element.service][1].handle(payload)
        time.sleep(0.003)  # distinct, ordered start times
    for provider, _ in bridges.values():
        provider.force_flush()
        provider.shutdown()


def client_server_trace(otlp_http: str, tag: str) -> tuple[str, dict[str, Element]]:
    """client PUT -> server PUT /v2/queues/{queue_name} -> (controller in error, db); base id."""
    base_id = str(uuid.uuid4())
    client, api = f"t-client-{tag}", f"t-api-{tag}"
    tree = {
        "client": Element(
            "requests",
            client,
            None,
            {"requests": {"method": "PUT", "hostname": "zaqar", "port": 8888, "path": "/v2/q"}},
            {"requests": {"status_code": 201}},
        ),
        "wsgi": Element(
            "wsgi",
            api,
            "client",
            {
                "request": {
                    "method": "PUT",
                    "path": "/v2/queues/q",
                    "scheme": "http",
                    "route": "/v2/queues/{queue_name}",
                }
            },
            {"response": {"status_code": 201}},
        ),
        "ctl": Element(
            "redis_queue_controller",
            api,
            "wsgi",
            {"function": {"name": "zaqar.storage.redis.queues.QueueController.create"}},
            {"etype": "ValueError", "message": "boom"},
        ),
        "db": Element("db", api, "wsgi", {"db": {"statement": "SELECT 1", "params": {}}}),
    }
    order = [
        ("start", "client"),
        ("start", "wsgi"),
        ("start", "ctl"),
        ("stop", "ctl"),
        ("start", "db"),
        ("stop", "db"),
        ("stop", "wsgi"),
        ("stop", "client"),
    ]
    export_elements(otlp_http, base_id, tree, order)
    return base_id, tree


@pytest.fixture(scope="module")
def known_trace(jaeger_server) -> Iterator[tuple[str, dict[str, Element], list[SpanRecord]]]:
    tag = uuid.uuid4().hex[:8]
    base_id, tree = client_server_trace(jaeger_server.otlp_http_endpoint, tag)
    spans = JaegerQuery(jaeger_server.query_url).wait_for_trace(base_id, 4, timeout=20)
    assert len(spans) == 4
    yield base_id, tree, spans


def span(
    span_id: str,
    parent: str = "",
    start: int = 0,
    duration: int = 1000,
    name: str | None = None,
    error: bool = False,
    **attributes: object,
) -> SpanRecord:
    return SpanRecord(
        trace_id="ab" * 16,
        span_id=span_id,
        parent_id=parent,
        name=name or f"op-{span_id}",
        service="svc",
        kind="internal",
        start_us=1_700_000_000_000_000 + start,
        duration_us=duration,
        error=error,
        attributes=dict(attributes),
        error_message="KeyError: 'x'" if error else "",
    )


# -- unit: tree rendering, urls


def test_render_tree_indents_children_sorted_by_start_with_columns():
    spans = [
        span("0000000000000003", "0000000000000001", start=500, duration=250),
        span("0000000000000001", start=0, duration=2000),
        span("0000000000000002", "0000000000000001", start=100, duration=300, error=True),
        span("0000000000000004", "0000000000000002", start=150, duration=50),
    ]
    lines = render_tree(spans).splitlines()
    assert [line.split()[0:2] for line in lines] == [
        ["op-0000000000000001", "svc"],
        ["├─", "op-0000000000000002"],
        ["│", "└─"],
        ["└─", "op-0000000000000003"],
    ]
    assert "op-0000000000000004" in lines[2]
    assert "2.00 ms" in lines[0] and "+0.00 ms" in lines[0]
    assert "0.30 ms" in lines[1] and "+0.10 ms" in lines[1]
    assert "+0.50 ms" in lines[3]
    assert [jaeger.ERROR_MARK in line for line in lines] == [False, True, False, False]
    assert "KeyError: 'x'" in lines[1]
    # columns line up: the service column starts at the same place on every line
    assert len({line.index(" svc ") for line in lines}) == 1


def test_spans_with_a_missing_parent_or_a_cycle_are_extra_roots_shown_once():
    spans = [
        span("000000000000000a", start=0),
        span("000000000000000b", "00000000000000ff", start=10),  # parent not in the trace
        span("000000000000000c", "000000000000000d", start=20),  # c <-> d: a cycle
        span("000000000000000d", "000000000000000c", start=30),
    ]
    order = jaeger.tree_order(spans)
    assert sorted(s.span_id for _, _, s in order) == sorted(s.span_id for s in spans)
    assert [(depth, s.span_id[-1]) for depth, _, s in order] == [
        (0, "a"),
        (0, "b"),
        (0, "c"),
        (1, "d"),
    ]
    assert len(render_tree(spans).splitlines()) == 4
    assert render_tree([]) == ""


def test_trace_url_takes_either_id_form():
    base = "2794a34f-4eba-41f5-9cae-df85dc466f35"
    expected = "http://jaeger:16686/trace/2794a34f4eba41f59cae" + "df85dc466f35"
    assert trace_url("http://jaeger:16686/", base) == expected
    assert trace_url("http://jaeger:16686", ids.trace_hex(base)) == expected
    with pytest.raises(ValueError, match="not a trace id"):
        trace_url("http://jaeger:16686", "42")


@pytest.mark.parametrize("url", ["jaeger:16686", "http://", "ftp://jaeger", "http://h:port"])
def test_bad_query_urls_are_refused(url):
    with pytest.raises(ValueError, match="not a Jaeger query URL"):
        JaegerQuery(url)


def test_spans_from_v1_reads_parents_services_kinds_and_errors():
    answer = {
        "data": [
            {
                "traceID": "ab" * 16,
                "processes": {
                    "p1": {"serviceName": "api", "tags": [{"key": "host.name", "value": "h1"}]}
                },
                "spans": [
                    {
                        "traceID": "ab" * 16,
                        "spanID": "1" * 16,
                        "operationName": "GET",
                        "references": [
                            {"refType": "FOLLOWS_FROM", "traceID": "ab" * 16, "spanID": "9" * 16},
                            {"refType": "CHILD_OF", "traceID": "ab" * 16, "spanID": "2" * 16},
                        ],
                        "startTime": 10,
                        "duration": 5,
                        "processID": "p1",
                        "tags": [
                            {"key": "span.kind", "value": "server"},
                            {"key": "otel.status_code", "value": "ERROR"},
                        ],
                        "logs": [
                            {
                                "fields": [
                                    {"key": "event", "value": "exception"},
                                    {"key": "exception.type", "value": "IOError"},
                                    {"key": "exception.message", "value": "disk"},
                                ]
                            }
                        ],
                    }
                ],
            }
        ]
    }
    [record] = jaeger.spans_from_v1(answer)
    assert record.parent_id == "2" * 16
    assert (record.service, record.kind, record.host) == ("api", "server", "h1")
    assert record.error and record.error_message == "IOError: disk"
    assert (record.start_us, record.duration_us) == (10, 5)


# -- against the real Jaeger


@pytest.mark.servers
def test_get_trace_by_either_id_form(jaeger_server, known_trace):
    base_id, tree, spans = known_trace
    query = JaegerQuery(jaeger_server.query_url)
    by_hex = query.get_trace(ids.trace_hex(base_id).upper())
    assert {s.span_id for s in by_hex} == {s.span_id for s in spans}
    by_span = {s.span_id: s for s in spans}
    client = by_span[ids.span_hex(tree["client"].id)]
    server = by_span[ids.span_hex(tree["wsgi"].id)]
    ctl = by_span[ids.span_hex(tree["ctl"].id)]
    assert (client.parent_id, client.kind, client.service) == ("", "client", tree["client"].service)
    assert (server.parent_id, server.kind, server.name) == (
        client.span_id,
        "server",
        "PUT /v2/queues/{queue_name}",
    )
    assert server.service == tree["wsgi"].service
    assert ctl.parent_id == server.span_id and ctl.error and "boom" in ctl.error_message
    assert not client.error and not server.error
    assert {s.trace_id for s in spans} == {ids.trace_hex(base_id)}


@pytest.mark.servers
def test_the_tree_of_a_real_trace(known_trace):
    spans = known_trace[2]
    lines = render_tree(spans).splitlines()
    assert lines[0].startswith("PUT ")
    assert lines[1].startswith("└─ PUT /v2/queues/{queue_name}")
    assert lines[2].startswith("   ├─ redis_queue_controller QueueController.create")
    assert lines[3].startswith("   └─ SELECT")
    assert jaeger.ERROR_MARK in lines[2] and "ValueError: boom" in lines[2]
    assert sum(jaeger.ERROR_MARK in line for line in lines) == 1


@pytest.mark.servers
def test_unknown_trace_bad_id_and_wait_timeout(jaeger_server):
    query = JaegerQuery(jaeger_server.query_url)
    unknown = str(uuid.uuid4())
    with pytest.raises(jaeger.TraceNotFound, match=ids.trace_hex(unknown)):
        query.get_trace(unknown)
    with pytest.raises(ValueError, match="not a trace id"):
        query.get_trace("not-an-id")
    started = time.monotonic()
    with pytest.raises(jaeger.TraceNotFound):
        query.wait_for_trace(unknown, timeout=0.6)
    assert 0.5 < time.monotonic() - started < 5
    with pytest.raises(ValueError):
        query.wait_for_trace("xyz", timeout=30)  # at once, not after the timeout


@pytest.mark.servers
def test_wait_for_trace_returns_what_arrived_at_the_deadline(jaeger_server, known_trace):
    base_id, _, _ = known_trace
    spans = JaegerQuery(jaeger_server.query_url).wait_for_trace(base_id, 99, timeout=0.5)
    assert len(spans) == 4


@pytest.mark.servers
def test_unreachable_and_not_jaeger_are_clear_one_line_errors(jaeger_server):
    base = str(uuid.uuid4())
    with pytest.raises(jaeger.JaegerUnreachable, match="cannot reach Jaeger") as refused:
        JaegerQuery(f"http://127.0.0.1:{pick_port()}", timeout=2).get_trace(base)
    # the OTLP port of the same Jaeger: HTTP, but not the query API
    with pytest.raises(jaeger.JaegerError, match="query API") as wrong:
        JaegerQuery(jaeger_server.otlp_http_endpoint).get_trace(base)
    assert not isinstance(wrong.value, jaeger.TraceNotFound)
    for error in (refused.value, wrong.value):
        assert "\n" not in str(error)


@pytest.mark.servers
def test_services_and_find_traces(jaeger_server, known_trace):
    base_id, tree, _ = known_trace
    query = JaegerQuery(jaeger_server.query_url)
    assert {tree["client"].service, tree["wsgi"].service} <= set(query.services())
    found = query.find_traces(tree["wsgi"].service)
    assert ids.trace_hex(base_id) in found


# -- the OSProfiler report


@pytest.mark.servers
def test_osprofiler_report_of_a_real_trace(known_trace):
    base_id, tree, spans = known_trace
    report = osprofiler_report(spans, ids.trace_hex(base_id))
    [root] = report["children"]
    assert root["trace_id"] == tree["client"].id and root["parent_id"] == base_id
    assert root["info"]["name"] == "requests"
    assert root["info"]["service"] == tree["client"].service
    assert root["info"]["project"] == "t"
    assert root["info"]["host"] == "host-1"
    start = root["info"]["meta.raw_payload.requests-start"]
    assert start["info"]["requests"]["hostname"] == "zaqar"
    assert start["base_id"] == base_id and start["name"] == "requests-start"
    [wsgi] = root["children"]
    assert (wsgi["trace_id"], wsgi["parent_id"]) == (tree["wsgi"].id, tree["client"].id)
    request = wsgi["info"]["meta.raw_payload.wsgi-start"]["info"]["request"]
    assert (request["method"], request["path"]) == ("PUT", "/v2/queues/q")  # what --dot reads
    ctl, db = wsgi["children"]
    assert ctl["info"]["name"] == "redis_queue_controller"
    assert ctl["info"]["exception"] == "ValueError"
    assert wsgi["info"]["exception"] == "None"
    function = ctl["info"]["meta.raw_payload.redis_queue_controller-start"]["info"]["function"]
    assert function["name"] == "zaqar.storage.redis.queues.QueueController.create"
    assert db["info"]["name"] == "db"
    assert 0 <= root["info"]["started"] <= wsgi["info"]["started"] <= ctl["info"]["started"]
    assert ctl["info"]["finished"] <= db["info"]["started"] + 1
    assert report["info"]["name"] == "total" and report["info"]["started"] == 0
    assert report["info"]["finished"] >= wsgi["info"]["finished"]
    assert report["stats"]["redis_queue_controller"]["count"] == 1
    assert set(report["stats"]) == {"requests", "wsgi", "redis_queue_controller", "db"}


def test_report_for_spans_not_from_osprofiler_and_an_empty_trace():
    root = span("00000000000000a1", name="GET-thing")
    db = span("00000000000000b2", "00000000000000a1", start=5, **{"db.system": "redis"})
    orphan = span("00000000000000c3", "00000000000000ee", start=9)
    base = ids.uuid_form("ab" * 16)
    report = osprofiler_report([root, db, orphan], base)
    top = report["children"]
    assert [node["info"]["name"] for node in top] == ["GET_thing", "op_00000000000000c3"]
    assert top[0]["trace_id"] == synthetic_id("ab" * 16, "00000000000000a1")
    assert ids.span_hex(top[0]["trace_id"]) == "00000000000000a1"  # the id rule holds
    assert top[0]["parent_id"] == base
    assert top[1]["parent_id"] == synthetic_id("ab" * 16, "00000000000000ee")
    [child] = top[0]["children"]
    assert child["info"]["name"] == "db" and child["parent_id"] == top[0]["trace_id"]
    empty = osprofiler_report([], base)
    assert empty["children"] == [] and empty["stats"] == {}


# -- the driver's get_report / list_traces (read side only: no provider is built)


def reader(connection_string: str) -> OTelDriver:
    driver = OTelDriver.__new__(OTelDriver)  # __init__ builds the export side, not needed here
    driver.connection_str = connection_string
    return driver


@pytest.mark.servers
def test_driver_get_report_and_list_traces(jaeger_server, known_trace, monkeypatch):
    monkeypatch.delenv("ZAQAR_OTEL_JAEGER_QUERY", raising=False)
    base_id, tree, _ = known_trace
    driver = reader(f"otel://collector:4318?query={jaeger_server.query_url}")
    report = driver.get_report(base_id)
    assert report["children"][0]["trace_id"] == tree["client"].id
    assert driver.get_report(str(uuid.uuid4()))["children"] == []
    listed = {t["base_id"]: t for t in driver.list_traces({"base_id", "timestamp"})}
    assert set(listed[base_id]) == {"base_id", "timestamp"}
    # no fields: OSProfiler's default (osprofiler.drivers.base.Driver.list_traces)
    assert {t["base_id"]: t for t in driver.list_traces()} == listed
    everything = {t["base_id"]: t for t in driver.list_traces({"base_id", "trace_id", "error"})}
    assert everything[base_id]["trace_id"] == ids.trace_hex(base_id)
    assert everything[base_id]["error"] is True
    assert listed[base_id]["timestamp"].startswith(time.strftime("%Y-", time.gmtime()))
    errors = {t["base_id"] for t in driver.list_error_traces()}
    assert base_id in errors  # the controller span is in error
    monkeypatch.setenv("ZAQAR_OTEL_JAEGER_QUERY", jaeger_server.query_url)
    assert reader("otel://").get_report(base_id)["children"]


def test_driver_read_side_errors_are_command_errors(monkeypatch):
    monkeypatch.delenv("ZAQAR_OTEL_JAEGER_QUERY", raising=False)
    with pytest.raises(exc.CommandError, match=r"\?query=http://JAEGER:16686"):
        reader("otel://").get_report(str(uuid.uuid4()))
    with pytest.raises(exc.CommandError, match="cannot reach Jaeger"):
        reader(f"otel://?query=http://127.0.0.1:{pick_port()}").get_report(str(uuid.uuid4()))
    with pytest.raises(exc.CommandError, match="cannot reach Jaeger"):
        reader(f"otel://?query=http://127.0.0.1:{pick_port()}").list_traces()
    with pytest.raises(exc.CommandError, match="not a trace id"):
        reader(f"otel://?query=http://127.0.0.1:{pick_port()}").get_report("nope")


def test_the_connection_string_names_the_query_api():
    from zaqar_otel.bridge import export

    parsed = export.parse_connection_string("otel://collector:4318?query=http://jaeger:16686/")
    assert (parsed.url, parsed.query) == ("http://collector:4318", "http://jaeger:16686")
    assert export.parse_connection_string("otel://?query=https://j:443").query == "https://j:443"
    assert export.parse_connection_string("otel://").query is None
    with pytest.raises(ValueError, match=r"\?query= needs an http\(s\)://HOST:PORT URL"):
        export.parse_connection_string("otel://?query=jaeger:16686")
