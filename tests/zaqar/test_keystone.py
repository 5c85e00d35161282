"""Zaqar behind a real Keystone (``auth_strategy = keystone``, keystonemiddleware): the request
span covers authentication, token validation is a CLIENT span, refused requests are traced."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from osprofiler import web

from tests import zaqar_server as zs
from tests.keystone_server import KeystoneServer
from tests.zaqar.test_server import redis_sql_stores, start_server
from zaqar_otel.lookup.jaeger import JaegerQuery, SpanRecord

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]
CLIENT_ID = "3381af92-2b9e-11e3-b191-71861300734c"
ZAQAR = "zaqar-server"


# -- reading Jaeger's answer


class Trace:
    def __init__(self, spans: list[SpanRecord]) -> None:
        self.spans = spans
        self.by_id = {span.span_id: span for span in spans}

    def parent(self, span: SpanRecord) -> SpanRecord | None:
        return self.by_id.get(span.parent_id)

    def roots(self) -> list[SpanRecord]:
        return [span for span in self.spans if span.parent_id not in self.by_id]

    def children(self, span: SpanRecord) -> list[SpanRecord]:
        return [s for s in self.spans if s.parent_id == span.span_id]

    def of(self, service: str, kind: str | None = None) -> list[SpanRecord]:
        return [s for s in self.spans if s.service == service and kind in (None, s.kind)]

    def services(self) -> set[str]:
        return {span.service for span in self.spans}


def trace_of(jaeger: Any, base_id: str, settle: float = 0.5, min_spans: int = 2) -> Trace:
    query = JaegerQuery(jaeger.query_url)
    query.wait_for_trace(base_id, min_spans, timeout=30)
    time.sleep(settle)  # let stragglers of the same trace land
    return Trace(query.get_trace(base_id))


def validation_calls(trace: Trace) -> list[SpanRecord]:
    """keystonemiddleware's token validations: Zaqar's CLIENT spans GET .../v3/auth/tokens."""
    return [
        span
        for span in trace.of(ZAQAR, "client")
        if span.name == "GET" and str(span.attributes.get("url.full", "")).endswith("/auth/tokens")
    ]


# -- servers


@pytest.fixture(scope="module")
def keystone_zaqar(
    jaeger_server, keystone_server: KeystoneServer, redis_server, tmp_path_factory
) -> Iterator[zs.ZaqarServer]:
    """zaqar-otel-server with ``auth_strategy = keystone``, registered in Keystone's catalog.

    One unsigned request first: keystonemiddleware's version discovery and its service
    token are done before the tests (the tests see only token validations).
    """
    sql_url = f"sqlite:///{tmp_path_factory.mktemp('keystone-mgmt') / 'zaqar.db'}"
    zs.create_sql_tables(sql_url)
    stores = redis_sql_stores(redis_server.url, sql_url)
    stores["DEFAULT"] = {"auth_strategy": "keystone"}
    stores["keystone_authtoken"] = keystone_server.authtoken_conf()
    server = start_server(jaeger_server, stores)
    keystone_server.set_endpoint("messaging", server.url)
    warm = put_queue(server.url, keystone_server.token(), zs.fresh_queue_name(), signed=False)
    assert warm.status_code == 201, warm.text
    yield server
    server.stop()


def put_queue(url: str, token: str, name: str, signed: bool = True) -> requests.Response:
    """PUT /v2/queues/NAME with a token; signed with the profiler active in this thread."""
    headers = {"Client-ID": CLIENT_ID, "X-Auth-Token": token}
    if signed:
        headers.update(web.get_trace_id_headers())
    return requests.put(f"{url}/v2/queues/{name}", headers=headers, timeout=30)


def test_token_validation_is_a_client_span_inside_the_request_span(
    keystone_zaqar, keystone_server, jaeger_server
):
    token = keystone_server.token()  # new: not in keystonemiddleware's cache
    with zs.profiled() as base:
        response = put_queue(keystone_zaqar.url, token, zs.fresh_queue_name())
    assert response.status_code == 201, response.text
    trace = trace_of(jaeger_server, base)
    [root] = trace.of(ZAQAR, "server")
    assert root.name == "PUT /v2/queues/{queue_name}"
    assert root.attributes["http.response.status_code"] == 201
    assert root in trace.roots()
    [validation] = validation_calls(trace)
    assert trace.parent(validation) is root
    assert validation.attributes["http.response.status_code"] == 200
    assert validation.attributes["server.address"] == "127.0.0.1"
    assert validation.attributes["server.port"] == keystone_server.port
    assert not validation.error
    # the request span covers the validation: it starts before and ends after it
    assert root.start_us <= validation.start_us
    assert validation.start_us + validation.duration_us <= root.start_us + root.duration_us
    # the storage work of the request is in the same trace, under the same root
    assert any(s.name.startswith("sqlalchemy_queue_controller") for s in trace.children(root))


def test_a_cached_token_is_not_validated_again(keystone_zaqar, keystone_server, jaeger_server):
    token = keystone_server.token()
    first = put_queue(keystone_zaqar.url, token, zs.fresh_queue_name(), signed=False)
    assert first.status_code == 201
    with zs.profiled() as base:
        response = put_queue(keystone_zaqar.url, token, zs.fresh_queue_name())
    assert response.status_code == 201
    trace = trace_of(jaeger_server, base)
    assert validation_calls(trace) == []
    assert [s.name for s in trace.of(ZAQAR, "server")] == ["PUT /v2/queues/{queue_name}"]


def test_a_bad_token_is_a_traced_401_with_its_failed_validation(
    keystone_zaqar, keystone_server, jaeger_server
):
    bogus = "gAAAAA" + uuid.uuid4().hex  # not a token Keystone issued
    with zs.profiled() as base:
        response = put_queue(keystone_zaqar.url, bogus, zs.fresh_queue_name())
    assert response.status_code == 401, response.text
    trace = trace_of(jaeger_server, base)
    [root] = trace.of(ZAQAR, "server")
    # refused before Falcon routed it: named by the route Falcon would have taken
    assert root.name == "PUT /v2/queues/{queue_name}"
    assert root.attributes["http.route"] == "/v2/queues/{queue_name}"
    assert root.attributes["http.response.status_code"] == 401
    assert not root.error  # a 4xx is the client's error, not the server's
    [validation] = validation_calls(trace)
    assert trace.parent(validation) is root
    assert validation.attributes["http.response.status_code"] == 404
    assert validation.error
    assert not trace.of(ZAQAR, "internal")  # no storage work for a refused request
    assert "Traceback" not in keystone_zaqar.log()


def test_unsigned_requests_are_traced_by_nobody(keystone_zaqar, keystone_server, jaeger_server):
    query = JaegerQuery(jaeger_server.query_url)
    started = time.time()
    names = [zs.fresh_queue_name() for _ in range(2)]
    # a new token (Keystone is called to validate it) and a bad one (a 401)
    fresh = put_queue(keystone_zaqar.url, keystone_server.token(), names[0], signed=False)
    refused = put_queue(keystone_zaqar.url, "gAAAAAbad", names[1], signed=False)
    assert (fresh.status_code, refused.status_code) == (201, 401)
    unsigned_done = time.time()
    with zs.profiled() as control:  # a signed request after them: its spans came after theirs
        signed = put_queue(keystone_zaqar.url, keystone_server.token(), zs.fresh_queue_name())
    assert signed.status_code == 201
    assert ZAQAR in trace_of(jaeger_server, control).services()
    for name in names:
        found = query.find_traces(ZAQAR, lookback_s=120, tags={"url.path": f"/v2/queues/{name}"})
        assert found == {}
    window = (int(started * 1e6), int(unsigned_done * 1e6))
    for service in query.services():
        for spans in query.find_traces(service, lookback_s=120).values():
            started_then = [s for s in spans if window[0] <= s.start_us <= window[1]]
            assert not started_then, [(s.service, s.name) for s in started_then]
