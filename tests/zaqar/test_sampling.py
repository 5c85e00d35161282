"""Tracing real traffic on a real zaqar-server: unsigned requests sampled at a ratio, the rate
limit under 16 threads, a trusted W3C traceparent continuing a real OTel client's trace, the
same header ignored when not trusted, fuzzed traceparent/tracestate, run-time reloads, and
OTEL_TRACES_SAMPLER. Jaeger's query API is the oracle; every server gets its own service name,
so that counting its traces counts nothing else; the server's own counters
(``zaqar_otel.status()``, on SIGUSR1) say how many traces to wait for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket  # websocket-client
from hypothesis import HealthCheck, given, settings
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from osprofiler import profiler, web

from tests import messaging as m
from tests import zaqar_server as zs
from tests.waiting import wait_until
from tests.zaqar import w3c
from tests.zaqar.test_server import CLIENT_ID, redis_sql_stores
from zaqar_otel.bridge import ids
from zaqar_otel.lookup import cli
from zaqar_otel.lookup.jaeger import JaegerQuery, SpanRecord

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]
HEADERS = {"Client-ID": CLIENT_ID, "X-Project-ID": "sampling"}
LIST_ROUTE = "GET /v2/queues/{queue_name}/messages"
ORIGIN = "zaqar_otel.trace.origin"
KEYSTONE = "keystone-public"  # Keystone's service name (tests.keystone_server)


class Traced:
    """A zaqar-server with its own service name, and its traces in Jaeger."""

    def __init__(
        self,
        jaeger: Any,
        stores: dict[str, Any],
        launcher: str,
        env: dict[str, str],
        transport: str = "wsgi",
        **profiler_opts: str,
    ) -> None:
        self.service = f"zaqar-sampling-{uuid.uuid4().hex[:10]}"
        opts = {**zs.PROFILER_ON, **profiler_opts}
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": self.service,
            **env,
        }
        self.server = zs.ZaqarServer(stores, opts, env, launcher, transport=transport).start()
        self.url = self.server.url
        self.query = JaegerQuery(jaeger.query_url)

    def traces(self) -> dict[str, list[SpanRecord]]:
        return self.query.find_traces(self.service, limit=100_000, lookback_s=3600)

    def started(self) -> int:
        """Traces the server started for unsigned requests (its counters)."""
        status = self.server.status()
        return int(status.get("started_sampled", 0)) + int(status.get("started_traceparent", 0))

    def wait_for_traces(self, count: int, timeout: float = 60) -> dict[str, list[SpanRecord]]:
        """Until Jaeger holds ``count`` request spans of this server (each one started trace;
        two requests may share a trace id); its traces."""

        def enough() -> tuple[dict[str, list[SpanRecord]]] | None:
            found = self.traces()  # in a tuple: no trace at all is an answer when count is 0
            return (found,) if self.requests_in(found) >= count else None

        return wait_until(enough, f"{count} requests of {self.service} in Jaeger", timeout)[0]

    def requests_in(self, traces: dict[str, list[SpanRecord]]) -> int:
        return sum(
            s.service == self.service and s.kind == "server" for t in traces.values() for s in t
        )

    def control(self) -> str:
        """A signed request; waits until its request span is in Jaeger (it ends last: the
        whole trace, and all before it, are exported)."""
        with zs.profiled() as base:
            zs.client(self.url).queue(zs.fresh_queue_name(), force_create=True)
        hex_id = ids.trace_hex(base)

        def request_span() -> bool:
            return any(s.kind == "server" for s in self.query_trace(hex_id))

        wait_until(request_span, f"control trace {base} with its request span")
        return hex_id

    def query_trace(self, hex_id: str) -> list[SpanRecord]:
        return self.traces().get(hex_id, [])

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def stores(redis_server, tmp_path_factory) -> dict[str, Any]:
    sql = f"sqlite:///{tmp_path_factory.mktemp('sampling') / 'zaqar.db'}"
    zs.create_management_tables(sql)
    return redis_sql_stores(redis_server.url, sql)


@pytest.fixture
def start(jaeger_server, stores) -> Iterator[Any]:
    running: list[Traced] = []

    def starter(
        launcher: str = "status",
        env: dict[str, str] | None = None,
        transport: str = "wsgi",
        sections: dict[str, dict[str, str]] | None = None,
        **opts: str,
    ) -> Traced:
        chosen = {**stores, **(sections or {})}
        traced = Traced(jaeger_server, chosen, launcher, env or {}, transport, **opts)
        running.append(traced)
        return traced

    yield starter
    for traced in running:
        traced.stop()


def small_queue(url: str, session: requests.Session) -> str:
    """A fresh queue with two messages (unsigned calls)."""
    name = zs.fresh_queue_name()
    assert session.put(f"{url}/v2/queues/{name}", headers=HEADERS, timeout=10).status_code == 201
    body = {"messages": [{"ttl": 300, "body": {"n": n}} for n in range(2)]}
    posted = session.post(
        f"{url}/v2/queues/{name}/messages", json=body, headers=HEADERS, timeout=10
    )
    assert posted.status_code == 201
    return name


def list_url(url: str, queue: str) -> str:
    return f"{url}/v2/queues/{queue}/messages?echo=true"


def root_of(spans: list[SpanRecord], service: str) -> SpanRecord:
    [root] = [s for s in spans if s.service == service and s.kind == "server"]
    return root


def is_complete_list(spans: list[SpanRecord], service: str) -> bool:
    """The request span, the storage controller's span under it, DB spans under that."""
    mine = [s for s in spans if s.service == service]
    by_id = {s.span_id: s for s in mine}
    [root] = [s for s in mine if s.kind == "server"] or [None]
    if root is None or root.name != LIST_ROUTE:
        return False
    controllers = [s for s in mine if "MessageController.list" in s.name]
    db = [
        s
        for s in mine
        if s.attributes.get("db.system") == "redis" or s.attributes.get("db.system.name") == "redis"
    ]
    return any(by_id.get(c.parent_id) is root for c in controllers) and any(
        by_id.get(d.parent_id) in controllers for d in db
    )


# -- sampling


def test_a_tenth_of_1000_unsigned_requests_become_complete_traces(start, capsys):
    traced = start(trace_sample_ratio="0.1", trace_rate_limit="10000")
    session = requests.Session()
    queue = small_queue(traced.url, session)
    began = time.perf_counter()
    for _ in range(1000):
        assert (
            session.get(list_url(traced.url, queue), headers=HEADERS, timeout=10).status_code == 200
        )
    seconds = time.perf_counter() - began
    found = traced.wait_for_traces(traced.started())
    lists = {
        h: spans for h, spans in found.items() if root_of(spans, traced.service).name == LIST_ROUTE
    }
    complete = [h for h, spans in lists.items() if is_complete_list(spans, traced.service)]
    with capsys.disabled():
        print(
            f"\n1000 unsigned GETs in {seconds:.2f} s; "
            f"{len(lists)} traced, {len(complete)} complete, "
            f"{sum(map(len, lists.values())) / max(len(lists), 1):.1f} spans per trace"
        )
    assert 70 <= len(lists) <= 130
    assert sorted(complete) == sorted(lists)
    for hex_id, spans in lists.items():
        root = root_of(spans, traced.service)
        assert root.parent_id == "" and root.attributes[ORIGIN] == "sampled"
        assert ids.trace_hex(str(root.attributes["osprofiler.base_id"])) == hex_id  # a new base id
        assert root.attributes["messaging.destination.name"] == queue


def test_the_rate_limit_holds_under_16_threads(start):
    limit = 5
    traced = start("threaded", trace_sample_ratio="1.0", trace_rate_limit=str(limit))
    queue = small_queue(traced.url, requests.Session())
    before = traced.server.status()
    served: list[int] = []
    stop = threading.Event()
    barrier = threading.Barrier(16)

    def hammer() -> None:
        session = requests.Session()
        barrier.wait()
        while not stop.is_set():
            served.append(
                session.get(list_url(traced.url, queue), headers=HEADERS, timeout=30).status_code
            )

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    stop.wait(4.0)  # the load lasts 4 s (load, not waiting for a result)
    stop.set()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - began
    after = traced.server.status()
    started = after.get("started_sampled", 0) - before.get("started_sampled", 0)
    refused = after.get("rate_limited", 0) - before.get("rate_limited", 0)
    assert set(served) == {200} and started + refused == len(served)
    found = traced.wait_for_traces(traced.started())
    starts = sorted(
        root_of(spans, traced.service).start_us / 1e6
        for spans in found.values()
        if root_of(spans, traced.service).name == LIST_ROUTE
    )
    assert len(starts) == started
    busiest = max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)
    print(f"{len(served)} requests in {seconds:.1f} s, {started} traced, busiest second {busiest}")
    assert refused > 0
    assert started <= limit * (seconds + 1) + 1  # the rate, plus one second's burst
    assert started >= limit * (seconds - 1)  # and the limit does not starve
    assert busiest <= 2 * limit  # any one second: a full bucket plus a second's refill


# -- trusted W3C parents


@pytest.fixture
def caller(jaeger_server) -> Iterator[tuple[Any, str]]:
    """A real OTel client exporting its own spans to Jaeger."""
    service = f"e2e-caller-{uuid.uuid4().hex[:8]}"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(
        SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=f"{jaeger_server.otlp_http_endpoint}/v1/traces")
        )
    )
    yield provider.get_tracer("e2e-caller"), service
    provider.shutdown()


def call_with_parent(tracer: Any, url: str, tracestate: str) -> tuple[str, str, int]:
    """A CLIENT span around a GET that carries its traceparent: (trace id, span id, status)."""
    with tracer.start_as_current_span("GET zaqar messages", kind=SpanKind.CLIENT) as span:
        headers = dict(HEADERS)
        TraceContextTextMapPropagator().inject(headers)
        headers["tracestate"] = tracestate
        status = requests.get(url, headers=headers, timeout=10).status_code
        context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x"), status


def test_a_trusted_traceparent_continues_the_callers_trace(start, caller, jaeger_server, capsys):
    tracer, caller_service = caller
    traced = start(trust_traceparent="true")
    queue = small_queue(traced.url, requests.Session())
    trace_hex, span_hex, status = call_with_parent(
        tracer, list_url(traced.url, queue), "caller=t61rcWkgMzE,vendor=x"
    )
    assert status == 200
    traced.wait_for_traces(traced.started())
    spans = traced.query_trace(trace_hex)
    assert {s.service for s in spans} == {caller_service, traced.service}  # one trace, both
    [caller_span] = [s for s in spans if s.service == caller_service]
    root = root_of(spans, traced.service)
    assert caller_span.span_id == span_hex and caller_span.parent_id == ""
    assert root.parent_id == span_hex  # the SERVER span's parent is the caller's span
    assert root.attributes[ORIGIN] == "traceparent"
    assert is_complete_list(spans, traced.service)
    base_id = str(root.attributes["osprofiler.base_id"])
    assert base_id == str(uuid.UUID(hex=trace_hex))  # OSProfiler's id is the trace id
    # tracestate: on every Zaqar span (Jaeger's OTLP answer keeps it)
    otlp = jaeger_server.get_trace_v3(trace_hex)
    states = {
        span.get("traceState", "")
        for resource in otlp["result"]["resourceSpans"]
        if {"key": "service.name", "value": {"stringValue": traced.service}}
        in resource["resource"]["attributes"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    }
    assert states == {"caller=t61rcWkgMzE,vendor=x"}
    # osprofiler trace show (OSProfiler's CLI through otel://) finds it by either id
    connection = f"otel://?query={jaeger_server.query_url}"
    for either in (base_id, trace_hex):
        shown = subprocess.run(
            [str(zs.BIN / "zaqar-otel"), "osprofiler", "trace", "show", either,
             "--connection-string", connection, "--json"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        [caller_element] = json.loads(shown.stdout)["children"]  # the caller's span, then Zaqar's
        assert caller_element["info"]["name"] == "GET zaqar messages"
        assert [c["info"]["name"] for c in caller_element["children"]] == ["wsgi"]
    # zaqar-otel trace show finds it by either id
    for either in (base_id, trace_hex):
        assert (
            cli.main(["trace", "show", either, "--jaeger", jaeger_server.query_url, "--json"])
            == cli.OK
        )
        shown = capsys.readouterr().out
        assert f'"trace_id": "{trace_hex}"' in shown and caller_service in shown


def test_the_same_traceparent_starts_nothing_when_not_trusted(start, caller):
    tracer, caller_service = caller
    traced = start(trust_traceparent="false")
    queue = small_queue(traced.url, requests.Session())
    trace_hex, _, status = call_with_parent(tracer, list_url(traced.url, queue), "caller=1")
    assert status == 200
    control = traced.control()  # exported after the request: Zaqar's spans would be in
    assert set(traced.traces()) == {control}
    assert traced.started() == 0
    assert {s.service for s in traced.query_trace(trace_hex)} <= {caller_service}


def test_a_signed_request_wins_over_a_trusted_parent(start):
    traced = start(trust_traceparent="true", trace_sample_ratio="1.0")
    profiler.clean()
    base = profiler.init(zs.HMAC_KEY).get_base_id()
    signed = web.get_trace_id_headers()
    profiler.clean()
    trace_hex = uuid.uuid4().hex
    headers = {**HEADERS, **signed, "traceparent": f"00-{trace_hex}-00f067aa0ba902b7-01"}
    url = f"{traced.url}/v2/queues/{zs.fresh_queue_name()}"
    assert requests.put(url, headers=headers, timeout=10).status_code == 201
    traced.control()
    spans = traced.query_trace(ids.trace_hex(base))
    assert ORIGIN not in root_of(spans, traced.service).attributes
    assert root_of(spans, traced.service).parent_id == ""  # not under the traceparent's span
    assert traced.query_trace(trace_hex) == [] and traced.started() == 0


# -- fuzzed headers against the real server


FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


@pytest.mark.parametrize("trusted", [True, False])
def test_fuzzed_w3c_headers_never_a_5xx_and_a_trace_only_when_trusted(start, trusted):
    traced = start(trust_traceparent=str(trusted).lower(), trace_rate_limit="100000")
    session = requests.Session()
    queue = small_queue(traced.url, session)
    expected: dict[str, int] = {}

    @FUZZ
    @given(w3c.traceparents(), w3c.tracestates)
    def request(traceparent: str, tracestate: str | None) -> None:
        headers = {**HEADERS, "traceparent": traceparent.strip(" \t")}
        if tracestate is not None:
            headers["tracestate"] = tracestate.strip(" \t")
        response = session.get(list_url(traced.url, queue), headers=headers, timeout=10)
        assert response.status_code == 200
        parent = w3c.sampled_parent(headers["traceparent"])
        if trusted and parent is not None:
            expected[parent[0]] = expected.get(parent[0], 0) + 1

    request()
    control = traced.control()
    found = traced.wait_for_traces(traced.started() + 1)
    assert set(found) - {control} == set(expected)
    for hex_id, count in expected.items():
        servers = [s for s in found[hex_id] if s.kind == "server"]
        assert len(servers) == count
    if trusted:
        assert sum(expected.values()) >= 10  # the fuzzing did reach the valid cases


# -- run time changes, bad values, OTEL_TRACES_SAMPLER


def reload(traced: Traced, **changes: str) -> None:
    """Change ``[profiler]`` options in the server's zaqar.conf, then SIGHUP."""
    text = traced.server.conf_path.read_text()
    lines = [line for line in text.splitlines() if line.split(" = ")[0] not in changes]
    at = lines.index("[profiler]") + 1
    lines[at:at] = [f"{name} = {value}" for name, value in changes.items()]
    traced.server.conf_path.write_text("\n".join(lines) + "\n")
    traced.server.send_signal(signal.SIGHUP)


def test_sampling_follows_sighup(start):
    traced = start()
    session = requests.Session()
    queue = small_queue(traced.url, session)
    assert session.get(list_url(traced.url, queue), headers=HEADERS, timeout=10).ok
    reload(traced, trace_sample_ratio="1.0")
    traced.server.wait_for_log("zaqar-otel: unsigned requests: 1 sampled")
    assert session.get(list_url(traced.url, queue), headers=HEADERS, timeout=10).ok
    assert traced.started() == 1
    reload(traced, trace_sample_ratio="0.0")
    traced.server.wait_for_log("zaqar-otel: unsigned requests: none traced any more")
    assert session.get(list_url(traced.url, queue), headers=HEADERS, timeout=10).ok
    control = traced.control()
    found = traced.traces()
    assert len(set(found) - {control}) == 1 and traced.started() == 1


def test_bad_values_are_logged_and_sample_nothing(start):
    traced = start(
        env={"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "lots"},
        trust_traceparent="true",
    )
    traced.server.wait_for_log("OTEL_TRACES_SAMPLER_ARG='lots' is not a ratio from 0 to 1")
    session = requests.Session()
    queue = small_queue(traced.url, session)
    for _ in range(20):
        assert session.get(list_url(traced.url, queue), headers=HEADERS, timeout=10).ok
    bad = start(trace_sample_ratio="5")
    bad.server.wait_for_log("[profiler] trace_sample_ratio")
    for _ in range(20):
        assert session.get(
            list_url(bad.url, small_queue(bad.url, session)), headers=HEADERS, timeout=10
        ).ok
    for server in (traced, bad):
        control = server.control()
        assert set(server.traces()) == {control}


def test_otel_traces_sampler_decides_when_the_ratio_is_unset(start):
    traced = start(env={"OTEL_TRACES_SAMPLER": "always_on"})
    session = requests.Session()
    queue = small_queue(traced.url, session)
    for _ in range(5):
        assert session.get(list_url(traced.url, queue), headers=HEADERS, timeout=10).ok
    found = traced.wait_for_traces(traced.started())
    assert sum(root_of(s, traced.service).name == LIST_ROUTE for s in found.values()) == 5


def test_signed_requests_are_complete_even_under_always_off(start):
    traced = start(env={"OTEL_TRACES_SAMPLER": "always_off"})
    control = traced.control()
    assert len(traced.query_trace(control)) >= 2  # the request span and what it called


# -- websocket: the same decision


def test_websocket_requests_get_the_same_decision(start):
    traced = start(
        transport="websocket",
        trust_traceparent="true",
        trace_sample_ratio="1.0",
        trace_rate_limit="1000",
    )
    conn = websocket.create_connection(f"ws://127.0.0.1:{traced.server.port}", timeout=10)
    queue = zs.fresh_queue_name()
    trace_hex, span_hex = uuid.uuid4().hex, "00f067aa0ba902b7"
    try:
        for action, body, extra in (
            ("queue_create", {"queue_name": queue}, {}),
            ("message_post", {"queue_name": queue, "messages": [{"body": 1, "ttl": 300}]}, {}),
            (
                "message_list",
                {"queue_name": queue, "echo": True},
                {"traceparent": f"00-{trace_hex}-{span_hex}-01", "tracestate": "ws=1"},
            ),
        ):
            headers = {**HEADERS, **extra}
            conn.send(json.dumps({"action": action, "headers": headers, "body": body}))
            assert json.loads(conn.recv())["headers"]["status"] in (200, 201, 204)
    finally:
        conn.close()
    found = traced.wait_for_traces(traced.started())
    assert len(found) == 3
    continued = root_of(found[trace_hex], traced.service)
    assert continued.name == "websocket message_list" and continued.parent_id == span_hex
    assert continued.attributes[ORIGIN] == "traceparent"
    sampled = [root_of(spans, traced.service) for h, spans in found.items() if h != trace_hex]
    assert sorted(r.name for r in sampled) == ["websocket message_post", "websocket queue_create"]
    assert all(r.attributes[ORIGIN] == "sampled" and r.parent_id == "" for r in sampled)
    post = next(
        spans
        for spans in found.values()
        if root_of(spans, traced.service) in sampled
        and root_of(spans, traced.service).name.endswith("post")
    )
    assert any("MessageController.post" in s.name for s in post)


# -- what Zaqar calls while serving a sampled request: never signed for the caller


def test_a_sampled_requests_call_to_keystone_is_not_signed(start, keystone_server):
    """keystonemiddleware validates the token of a sampled request: a CLIENT span in the
    sampled trace, but Keystone (traced by OSProfiler for signed requests only) gets no
    signed headers from Zaqar, so it adds nothing; a signed request's validation does."""
    sections = {
        "DEFAULT": {"auth_strategy": "keystone"},
        "keystone_authtoken": keystone_server.authtoken_conf(),
    }
    traced = start(sections=sections, trace_sample_ratio="1.0", trace_rate_limit="1000")
    headers = {"Client-ID": CLIENT_ID, "X-Auth-Token": keystone_server.token()}
    url = f"{traced.url}/v2/queues/{zs.fresh_queue_name()}"
    assert requests.put(url, headers=headers, timeout=30).status_code == 201
    refused = {**headers, "X-Auth-Token": "gAAAAAbad"}  # refused by keystonemiddleware
    assert requests.put(url, headers=refused, timeout=30).status_code == 401
    with zs.profiled() as control:  # signed, a new token: Keystone joins this one
        signed = {**headers, "X-Auth-Token": keystone_server.token()}
        signed.update(web.get_trace_id_headers())
        url = f"{traced.url}/v2/queues/{zs.fresh_queue_name()}"
        assert requests.put(url, headers=signed, timeout=30).status_code == 201
    wait_until(
        lambda: KEYSTONE in {s.service for s in traced.query_trace(ids.trace_hex(control))},
        "Keystone's spans of the signed request",
    )
    sampled = [
        spans
        for hex_id, spans in traced.wait_for_traces(traced.started() + 1).items()
        if hex_id != ids.trace_hex(control)
    ]
    validations = [
        s
        for spans in sampled
        for s in spans
        if s.kind == "client" and str(s.attributes.get("url.full", "")).endswith("/auth/tokens")
    ]
    assert validations  # the sampled requests did call Keystone, inside their traces
    assert {s.service for spans in sampled for s in spans} == {traced.service}
    statuses = sorted(
        s.attributes.get("http.response.status_code")
        for spans in sampled
        for s in spans
        if s.kind == "server"
    )
    assert statuses == [201, 401]  # the refused one too: sampled before authentication


def test_webhooks_of_sampled_and_continued_requests_carry_traceparent_never_the_key(
    start, caller, jaeger_server
):
    """A message posted by a continued or a sampled request is pushed to an OTel-instrumented
    subscriber with the W3C traceparent of that trace, never OSProfiler's signed headers."""
    tracer, caller_service = caller
    traced = start(
        sections={"storage": dict(m.NOTIFIER)},
        trust_traceparent="true",
        trace_sample_ratio="1.0",
        trace_rate_limit="1000",
    )
    subscriber = m.Subscriber(jaeger_server)
    try:
        queue = zs.fresh_queue_name()
        m.create_queue(traced.url, queue)
        m.subscribe(traced.url, queue, subscriber.url(f"/hook/{queue}"))
        url = f"{traced.url}/v2/queues/{queue}/messages"
        with tracer.start_as_current_span("post", kind=SpanKind.CLIENT) as span:
            headers = {**m.headers(), "tracestate": "caller=1"}
            TraceContextTextMapPropagator().inject(headers)
            body = {"messages": [{"ttl": 300, "body": "continued"}]}
            assert requests.post(url, json=body, headers=headers, timeout=10).status_code == 201
            continued = format(span.get_span_context().trace_id, "032x")
        body = {"messages": [{"ttl": 300, "body": "sampled"}]}
        assert requests.post(url, json=body, headers=m.headers(), timeout=10).status_code == 201
        deliveries = subscriber.wait_for(lambda d: d["path"] == f"/hook/{queue}", count=2)
    finally:
        subscriber.stop()
    sent = {
        json.loads(d["body"])["body"]: {k.lower(): v for k, v in d["headers"].items()}
        for d in deliveries
    }
    for headers in sent.values():
        assert not {"x-trace-info", "x-trace-hmac"} & set(headers)
        assert all(zs.HMAC_KEY not in value for value in headers.values())
    assert sent["continued"]["traceparent"].split("-")[1] == continued
    assert sent["continued"]["tracestate"] == "caller=1"
    sampled = sent["sampled"]["traceparent"].split("-")[1]
    for trace_hex, origin, services in (
        (continued, "traceparent", {caller_service, traced.service, "subscriber"}),
        (sampled, "sampled", {traced.service, "subscriber"}),
    ):

        def whole(trace_hex: str = trace_hex, services: set[str] = services) -> list[SpanRecord]:
            """Every service's spans, Zaqar's request span among them; else empty."""
            spans = traced.query_trace(trace_hex)
            mine = [s for s in spans if s.service == traced.service and s.kind == "server"]
            return mine if {s.service for s in spans} == services and mine else []

        [request] = wait_until(whole, f"{origin} trace {trace_hex} with {sorted(services)}")
        assert request.attributes[ORIGIN] == origin
        assert request.name == "POST /v2/queues/{queue_name}/messages"
