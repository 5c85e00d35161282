"""keystoneauth1 calls inside a profiled request: a CLIENT span each, the callee's headers
naming it (a real keystoneauth1 Session against a local HTTP server)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any, ClassVar

import pytest
from keystoneauth1 import exceptions, session
from opentelemetry.trace import SpanKind, StatusCode
from osprofiler import _utils, profiler
from packaging.version import Version

from tests import tracing
from zaqar_otel.bridge import ids, keystoneauth


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        Recorder.seen.append(dict(self.headers.items()))
        code = 404 if self.path.startswith("/missing") else 200
        body = b'{"ok": true}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(autouse=True)
def bridge() -> Iterator[None]:
    tracing.init_bridge()  # the driver installs the keystoneauth hook
    Recorder.seen.clear()
    yield
    profiler.clean()


def test_a_call_is_a_client_span_and_the_callee_is_told_it_is_the_parent(server):
    p = tracing.start_profiling()
    with profiler.Trace("wsgi", info={"request": {"method": "GET", "path": "/v2/queues"}}):
        response = session.Session().get(f"{server}/v3/auth/tokens?nocatalog=1")
    assert response.status_code == 200
    client, root = tracing.finished()
    assert (client.name, client.kind) == ("GET", SpanKind.CLIENT)
    assert tracing.parent_of(client, [root]) is root
    assert client.attributes["url.full"] == f"{server}/v3/auth/tokens?nocatalog=1"
    assert client.attributes["server.address"] == "127.0.0.1"
    assert client.attributes["http.response.status_code"] == 200
    assert client.attributes["osprofiler.name"] == keystoneauth.ELEMENT
    [headers] = Recorder.seen
    trace_info = _utils.signed_unpack(
        headers["X-Trace-Info"], headers["X-Trace-HMAC"], [tracing.HMAC_KEY]
    )
    assert trace_info["base_id"] == p.get_base_id()
    assert ids.span_id(trace_info["parent_id"]) == client.context.span_id
    _, trace_hex, span_hex, flags = headers["traceparent"].split("-")
    assert flags == "01"
    assert trace_hex == ids.trace_hex(p.get_base_id())
    assert int(span_hex, 16) == client.context.span_id


def test_a_relative_url_gets_its_full_url_at_the_end(server):
    tracing.start_profiling()
    with profiler.Trace("wsgi", info={"request": {"method": "GET", "path": "/"}}):
        session.Session().get("/v3", endpoint_override=server)
    [client] = [s for s in tracing.finished() if s.kind == SpanKind.CLIENT]
    assert client.attributes["url.full"] == f"{server}/v3"
    assert client.attributes["server.port"] == int(server.rsplit(":", 1)[1])


def test_a_failed_call_is_an_error_with_its_status(server):
    tracing.start_profiling()
    with profiler.Trace("wsgi", info={"request": {"method": "GET", "path": "/"}}):
        with pytest.raises(exceptions.NotFound):
            session.Session().get(f"{server}/missing")
    [client] = [s for s in tracing.finished() if s.kind == SpanKind.CLIENT]
    assert client.status.status_code is StatusCode.ERROR
    assert client.attributes["http.response.status_code"] == 404
    assert client.status.description.startswith("NotFound")


def test_outside_a_profiled_request_nothing_is_added(server):
    profiler.clean()
    session.Session().get(f"{server}/v3")
    assert tracing.finished() == []
    [headers] = Recorder.seen
    assert "X-Trace-Info" not in headers and "traceparent" not in headers


def test_steps_aside_when_osprofiler_traces_requests_itself(server, monkeypatch):
    if Version(version("osprofiler")) < Version("4.1"):
        pytest.skip("OSProfiler < 4.1 has no requests tracing ([profiler] trace_requests)")
    from osprofiler import requests as osprofiler_requests
    from requests.adapters import HTTPAdapter

    monkeypatch.setattr(HTTPAdapter, "send", osprofiler_requests.send)
    tracing.start_profiling()
    with profiler.Trace("wsgi", info={"request": {"method": "GET", "path": "/"}}):
        session.Session().get(f"{server}/v3")
    clients = [s for s in tracing.finished() if s.kind == SpanKind.CLIENT]
    assert [s.attributes["osprofiler.name"] for s in clients] == ["http"]  # OSProfiler's own


def test_install_is_idempotent_and_undone():
    original = session.Session.request
    assert keystoneauth.install() and session.Session.request is original
    keystoneauth.uninstall()
    assert not getattr(session.Session.request, "__zaqar_otel__", False)
    assert keystoneauth.install()
    assert getattr(session.Session.request, "__zaqar_otel__", False)
