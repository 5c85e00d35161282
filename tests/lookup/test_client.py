"""Client-side profiling: the wrapper in-process, then real zaqar-otel calls to Zaqar + Jaeger."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from osprofiler import _utils, notifier, profiler

from tests import tracing
from tests import zaqar_server as zs
from tests.lookup.test_jaeger import Element, export_elements
from zaqar_otel.bridge import ids
from zaqar_otel.bridge.provider import use_or_build
from zaqar_otel.bridge.spans import SpanBridge
from zaqar_otel.demo.process import pick_port
from zaqar_otel.lookup import client
from zaqar_otel.lookup.jaeger import JaegerQuery

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KEY = "client-test-key"


# -- the wrapper around zaqarclient's HTTP client, in this process


class FakeResponse:
    def __init__(self, status_code: int, reason: str = "") -> None:
        self.status_code = status_code
        self.reason = reason


class Recorder:
    """Stands for zaqarclient's ``Client.request``: records headers, answers ``status``."""

    def __init__(self, status: int = 201, error: Exception | None = None) -> None:
        self.status = status
        self.error = error
        self.calls: list[dict[str, Any]] = []

    def __call__(self, owner: Any, *args: Any, **kwargs: Any) -> FakeResponse:
        self.calls.append({"args": args, **kwargs})
        if self.error is not None:
            raise self.error
        return FakeResponse(self.status, "Not Found" if self.status == 404 else "")


@pytest.fixture
def bridge() -> Iterator[None]:
    """OSProfiler notifications -> spans of the in-memory test provider, for this test."""
    provider = tracing.global_provider()
    _, hints, _ = use_or_build("test", lambda: None)
    previous = notifier.get()
    notifier.set(SpanBridge(provider.get_tracer("test-client"), hints).handle)
    tracing.EXPORTER.clear()
    try:
        yield
    finally:
        notifier.set(previous)
        profiler.clean()
        client._local.call = None


def test_request_info_keeps_the_query_and_defaults_the_port():
    info = client._request_info(
        "GET", "https://zaqar/v2/queues/q/messages?echo=true", {"params": {"limit": 2}}
    )
    assert info == {
        "method": "GET",
        "scheme": "https",
        "hostname": "zaqar",
        "port": 443,
        "path": "/v2/queues/q/messages",
        "query": "echo=true&limit=2",
    }


def test_each_request_is_a_client_span_the_headers_name(bridge):
    recorder = Recorder(201)
    request = client._traced(recorder)
    active = profiler.init(KEY)
    base = active.get_base_id()
    call = client.ProfiledCall(base)
    client._local.call = call
    response = request(
        None,
        "PUT",
        url="http://127.0.0.1:8888/v2/queues/q1",
        params={"a": "1"},
        headers={"Client-ID": "c", "X-Trace-Info": "stale"},
    )
    assert response.status_code == 201
    [span] = tracing.by_trace(tracing.finished(), ids.trace_hex(base))
    assert span.kind is SpanKind.CLIENT and span.name == "PUT"
    assert span.parent is None  # the client's request is the root of the trace
    assert span.attributes["url.full"] == "http://127.0.0.1:8888/v2/queues/q1?a=1"
    assert span.attributes["http.response.status_code"] == 201
    assert span.attributes["osprofiler.name"] == "requests"
    element = span.attributes["osprofiler.id"]
    assert format(span.context.span_id, "016x") == ids.span_hex(element)
    assert call.client_spans == [ids.span_hex(element)]
    # the headers sent: signed X-Trace-Info naming this request's element as parent
    [sent] = recorder.calls
    headers = sent["headers"]
    assert headers["Client-ID"] == "c"
    info = _utils.signed_unpack(headers["X-Trace-Info"], headers["X-Trace-HMAC"], [KEY])
    assert info["base_id"] == base and info["parent_id"] == element
    # and a W3C traceparent of the same span
    assert headers["traceparent"] == f"00-{ids.trace_hex(base)}-{ids.span_hex(element)}-01"


def test_error_status_and_exceptions_mark_the_client_span(bridge):
    active = profiler.init(KEY)
    base = active.get_base_id()
    client._traced(Recorder(404))(None, "GET", "http://127.0.0.1:1/v2/queues/nope")
    with pytest.raises(ConnectionError):
        client._traced(Recorder(error=ConnectionError("refused")))(
            None, "DELETE", "http://127.0.0.1:1/v2/queues/q"
        )
    spans = {s.name: s for s in tracing.by_trace(tracing.finished(), ids.trace_hex(base))}
    assert spans["GET"].status.status_code is StatusCode.ERROR
    assert spans["GET"].attributes["http.response.status_code"] == 404
    assert spans["DELETE"].status.status_code is StatusCode.ERROR
    assert "ConnectionError" in spans["DELETE"].status.description
    assert profiler.get().get_id() == base  # every element was stopped


def test_without_profiling_the_request_is_untouched(bridge):
    profiler.clean()
    recorder = Recorder(200)
    client._traced(recorder)(None, "GET", url="http://127.0.0.1:1/v2", headers={"A": "b"})
    assert recorder.calls[0]["headers"] == {"A": "b"}
    assert tracing.finished() == []


def test_profile_needs_a_key():
    with pytest.raises(ValueError, match="HMAC key"), client.profile(""):
        pass


# -- check_server against the real Jaeger (traces made through the real bridge)


def _client_trace(jaeger_server, requests: int, answered: int) -> client.ProfiledCall:
    """A trace with ``requests`` client spans, ``answered`` of them with a server span below."""
    base = str(uuid.uuid4())
    tree: dict[str, Element] = {}
    order = []
    for index in range(requests):
        tree[f"c{index}"] = Element("requests", "t-client", None, {"requests": {"method": "GET"}})
        order.append(("start", f"c{index}"))
        if index < answered:
            tree[f"s{index}"] = Element(
                "wsgi", "t-api", f"c{index}", {"request": {"method": "GET"}}
            )
            order += [("start", f"s{index}"), ("stop", f"s{index}")]
        order.append(("stop", f"c{index}"))
    export_elements(jaeger_server.otlp_http_endpoint, base, tree, order)
    call = client.ProfiledCall(base)
    call.client_spans.extend(ids.span_hex(tree[f"c{i}"].id) for i in range(requests))
    return call


@pytest.mark.servers
def test_check_server_says_whether_the_server_traced(jaeger_server):
    query = JaegerQuery(jaeger_server.query_url)
    traced = _client_trace(jaeger_server, 2, 2).check_server(query, timeout=10)
    assert (traced.traced, traced.requests, traced.traced_requests) == (True, 2, 2)
    assert traced.server_spans == 2 and "traced this call" in traced.message

    silent = _client_trace(jaeger_server, 1, 0).check_server(query, timeout=1)
    assert silent.traced is False and silent.traced_requests == 0
    assert "did not trace" in silent.message and "hmac_keys" in silent.message

    partial = _client_trace(jaeger_server, 2, 1).check_server(query, timeout=1)
    assert partial.traced is False and "1 of 2 requests" in partial.message

    nothing = client.ProfiledCall(str(uuid.uuid4()), ["00000000000000aa"])
    missing = nothing.check_server(query, timeout=0.5)
    assert missing.traced is None and "nothing of this trace reached Jaeger" in missing.message
    assert client.ProfiledCall(str(uuid.uuid4())).check_server(query).traced is None


# -- zaqar-otel call: a real client process, a real Zaqar, a real Jaeger


@pytest.fixture(scope="module")
def zaqar(jaeger_server, redis_server, tmp_path_factory) -> Iterator[zs.ZaqarServer]:
    from tests.zaqar.test_server import redis_sql_stores, start_server

    url = f"sqlite:///{tmp_path_factory.mktemp('client') / 'zaqar.db'}"
    zs.create_management_tables(url)
    server = start_server(jaeger_server, redis_sql_stores(redis_server.url, url))
    yield server
    server.close()


def zaqar_otel(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # no OTel settings, no OpenStack cloud (OS_*: Keystone) from the environment
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OS_"))}
    clean.pop("ZAQAR_OTEL_JAEGER_QUERY", None)
    clean.pop("ZAQAR_OTEL_JAEGER_UI", None)
    clean.update(env or {})
    return subprocess.run(
        [str(BIN / "zaqar-otel"), *args], capture_output=True, text=True, env=clean, timeout=120
    )


def call_args(zaqar: zs.ZaqarServer, jaeger_server, key: str = zs.HMAC_KEY) -> list[str]:
    otlp = jaeger_server.otlp_http_endpoint.removeprefix("http://")
    return ["call", "--url", zaqar.url, "--hmac-key", key, "--connection-string", f"otel://{otlp}"]


@pytest.mark.servers
@pytest.mark.zaqar
def test_a_profiled_call_is_one_trace_client_span_root_server_tree_below(zaqar, jaeger_server):
    queue = zs.fresh_queue_name()
    env = {"ZAQAR_OTEL_JAEGER_QUERY": jaeger_server.query_url, "ZAQAR_OTEL_JAEGER_UI": "http://ui"}
    created = zaqar_otel(*call_args(zaqar, jaeger_server), "queue-create", queue, env=env)
    assert created.returncode == 0, created.stderr
    posted = zaqar_otel(
        *call_args(zaqar, jaeger_server), "post", queue, '{"n": 1}', "text", env=env
    )
    assert posted.returncode == 0, posted.stderr
    lines = posted.stdout.splitlines()
    assert lines[0] == f"posted 2 message(s) to {queue}"
    base = lines[1].split(":", 1)[1].strip()
    trace_hex = lines[2].split(":", 1)[1].strip()
    assert str(uuid.UUID(base)) == base and trace_hex == ids.trace_hex(base)
    assert lines[3] == f"trace url:             http://ui/trace/{trace_hex}"
    assert lines[4].startswith("server:") and "the server traced this call" in lines[4]
    assert posted.stderr == ""

    spans = JaegerQuery(jaeger_server.query_url).wait_for_trace(base, 4, timeout=20)
    by_id = {s.span_id: s for s in spans}
    [root] = [s for s in spans if not s.parent_id]
    assert (root.kind, root.name, root.service) == ("client", "POST", "zaqar-client")
    assert root.attributes["http.response.status_code"] == 201
    [server] = [s for s in spans if s.kind == "server"]
    assert server.parent_id == root.span_id
    assert server.name == "POST /v2/queues/{queue_name}/messages"
    assert server.service != "zaqar-client"
    assert {s.trace_id for s in spans} == {trace_hex}
    for span in spans:  # one connected tree under the client span
        seen = span
        while seen.parent_id:
            seen = by_id[seen.parent_id]
        assert seen is root
    assert any(s.attributes.get("db.system.name") == "redis" for s in spans)

    shown = zaqar_otel("trace", "show", base, "--wait", "10", env=env)
    assert shown.returncode == 0, shown.stderr
    assert_the_docs_example_starts_as(shown.stdout)

    listed = zaqar_otel(*call_args(zaqar, jaeger_server), "--json", "list", queue, env=env)
    document = json.loads(listed.stdout)
    assert document["server_traced"] is True and document["trace_id"] == ids.trace_hex(
        document["base_id"]
    )
    assert document["result"].splitlines()[1:] == ['{"n": 1}', '"text"']


def assert_the_docs_example_starts_as(output: str) -> None:
    """docs/client-and-cli.md shows the first rows of ``zaqar-otel trace show`` for a post:
    the same spans, services and kinds as this real one (timings and ids aside)."""
    from tests.test_docs import load

    gen = load("generate_demo_trees")
    doc = (ROOT / "docs" / "client-and-cli.md").read_text()
    example = doc.split("<!-- BEGIN cli-tree", 1)[1].split("<!-- END cli-tree -->", 1)[0]
    shown = gen.shape(output)
    documented = gen.shape(example)
    assert documented and shown[: len(documented)] == documented, output
    [services] = re.findall(r"spans, services: (.+)", example)
    assert f"spans, services: {services}" in output, output


@pytest.mark.servers
@pytest.mark.zaqar
def test_a_wrong_key_is_a_clear_message_and_exit_1(zaqar, jaeger_server):
    env = {"ZAQAR_OTEL_JAEGER_QUERY": jaeger_server.query_url}
    args = call_args(zaqar, jaeger_server, key="not-the-server-key")
    result = zaqar_otel(*args, "--wait", "2", "queue-create", zs.fresh_queue_name(), env=env)
    assert result.returncode == 1
    [message] = result.stderr.splitlines()
    assert message.startswith("zaqar-otel: the server did not trace this call")
    assert "[profiler] hmac_keys" in message
    base = result.stdout.splitlines()[1].split(":", 1)[1].strip()
    # the client's own span is in Jaeger, alone
    [alone] = JaegerQuery(jaeger_server.query_url).get_trace(base)
    assert alone.kind == "client"


@pytest.mark.servers
@pytest.mark.zaqar
def test_without_a_jaeger_url_the_call_says_what_was_not_checked(zaqar, jaeger_server):
    result = zaqar_otel(*call_args(zaqar, jaeger_server), "queue-create", zs.fresh_queue_name())
    assert result.returncode == 0, result.stderr
    assert "not checked (set ZAQAR_OTEL_JAEGER_QUERY or --jaeger" in result.stdout
    assert "trace url" not in result.stdout


@pytest.mark.servers
@pytest.mark.zaqar
def test_jaeger_down_after_a_good_call_is_exit_3(zaqar, jaeger_server):
    down = f"http://127.0.0.1:{pick_port()}"
    args = [*call_args(zaqar, jaeger_server), "--jaeger", down]
    result = zaqar_otel(*args, "queue-create", zs.fresh_queue_name())
    assert result.returncode == 3
    [message] = result.stderr.splitlines()
    assert message.startswith("zaqar-otel: cannot check whether the server traced this call")
    assert "cannot reach Jaeger's query API" in message
    assert "trace id (Jaeger)" in result.stdout


def test_call_errors_bad_usage_and_zaqar_down():
    down = f"http://127.0.0.1:{pick_port()}"
    base = ["call", "--url", down, "--connection-string", "otel://127.0.0.1:1", "--no-check"]
    no_key = zaqar_otel(*base, "list", "q")
    assert no_key.returncode == 2
    assert no_key.stderr.splitlines() == [
        "zaqar-otel: error: no HMAC key: pass --hmac-key KEY or set OS_PROFILE"
    ]
    bad = zaqar_otel(
        "call", "--url", down, "--hmac-key", "k", "--connection-string", "otel://h:x", "list", "q"
    )
    assert bad.returncode == 2 and "bad --connection-string" in bad.stderr
    failed = zaqar_otel(*base, "--hmac-key", "k", "queue-create", "q")
    assert failed.returncode == 4
    assert failed.stderr.splitlines()[-1].startswith("zaqar-otel: the Zaqar call failed:")
    assert "Traceback" not in failed.stderr
    assert "trace id (OSProfiler)" in failed.stdout  # its client span says what failed


@pytest.mark.servers
@pytest.mark.zaqar
def test_the_python_api_in_process_enable_profile_check_disable(zaqar, jaeger_server):
    from zaqarclient.common import http

    tracing.global_provider()  # the process's SDK provider: enable() records into it
    original = http.Client.request
    previous = notifier.get()
    setup = client.enable("otel://", service="api-test")
    try:
        assert client.enable() is setup and not setup.built_provider
        assert http.Client.request is not original
        queue = zs.client(zaqar.url).queue(zs.fresh_queue_name(), force_create=False)
        tracing.EXPORTER.clear()
        with client.profile(zs.HMAC_KEY) as call:
            queue.post([{"body": {"n": 1}, "ttl": 300}])
        [span] = tracing.by_trace(tracing.finished(), call.trace_hex)
        assert span.kind is SpanKind.CLIENT and span.parent is None
        assert call.client_spans == [format(span.context.span_id, "016x")]
        check = call.check_server(JaegerQuery(jaeger_server.query_url), timeout=20)
        assert check.traced is True and check.traced_requests == 1 and check.server_spans >= 2
        assert profiler.get() is None  # the block cleaned up after itself
    finally:
        client.disable()
    assert http.Client.request is original
    assert client.tracing() is None
    assert notifier.get() is notifier._noop_notifier  # OSProfiler's default again
    notifier.set(previous)
