"""Zaqar behind a real Keystone (``auth_strategy = keystone``, keystonemiddleware), Keystone
traced too, both into Jaeger: the request span covers authentication, token validation is a
CLIENT span with Keystone's request (and its SQL) under it, refused requests are traced, and
the operator's tools (``openstack --os-profile``, ``osprofiler trace show``, ``zaqar-otel
call --os-cloud``) find one trace across both services."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from osprofiler import web

from tests import zaqar_server as zs
from tests.keystone_server import KeystoneServer
from tests.waiting import wait_until
from tests.zaqar.test_server import redis_sql_stores, start_server
from zaqar_otel.lookup.jaeger import JaegerQuery, SpanRecord, TraceNotFound

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]
CLIENT_ID = "3381af92-2b9e-11e3-b191-71861300734c"
ZAQAR = "zaqar-server"
KEYSTONE = "keystone-public"  # the otel:// driver's default: project-service of Keystone's init
BIN = Path(sys.executable).parent


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


def trace_of(
    jaeger: Any, base_id: str, min_spans: int = 2, services: set[str] | None = None
) -> Trace:
    """The trace once it is whole (:func:`whole`) with a part from Zaqar and each of
    ``services``: a request span without its caller's part may be a root or a callee whose
    caller has not arrived yet, so the parts of a trace of several roots (the CLI's login and
    its call) must be named."""
    query = JaegerQuery(jaeger.query_url)
    wanted = {ZAQAR, *(services or ())}

    def read() -> Trace | None:
        try:
            trace = Trace(query.get_trace(base_id))
        except TraceNotFound:
            return None
        enough = len(trace.spans) >= min_spans and trace.services() >= wanted
        # Zaqar's part is whole once its request span is there (it ends last): its call to
        # Keystone, ended earlier, may arrive in an earlier batch and look like a root
        zaqar_done = bool(trace.of(ZAQAR, "server"))
        return trace if enough and zaqar_done and whole(trace) else None

    return wait_until(read, f"trace {base_id} whole, {min_spans}+ spans from {wanted}")


def whole(trace: Trace) -> bool:
    """Every process's part of the trace has arrived. A request span (SERVER) ends after
    everything its process did for the request, so once it is there, so is the rest of that
    process's part: a span without its parent in the trace may only be a request span or a
    client's HTTP call (the trace's roots), and every HTTP call has the callee's request
    span under it (Keystone and Zaqar trace every signed request)."""
    for span in trace.spans:
        http_call = span.kind == "client" and "url.full" in span.attributes
        if trace.parent(span) is None and not (span.kind == "server" or http_call):
            return False
        if http_call and not [c for c in trace.children(span) if c.kind == "server"]:
            return False
    return True


def descendants(trace: Trace, span: SpanRecord) -> list[SpanRecord]:
    found, todo = [], [span]
    while todo:
        children = trace.children(todo.pop())
        found += children
        todo += children
    return found


def sql_spans(spans: list[SpanRecord]) -> list[SpanRecord]:
    return [
        s
        for s in spans
        if "sqlite" in (s.attributes.get("db.system"), s.attributes.get("db.system.name"))
    ]


def keystone_validation(trace: Trace, call: SpanRecord) -> SpanRecord:
    """Keystone's request span under Zaqar's validation call, with its SQL under it."""
    [served] = trace.children(call)
    assert (served.service, served.kind) == (KEYSTONE, "server")
    assert served.name == "GET /v3/auth/tokens"
    assert served.attributes["http.route"] == "/v3/auth/tokens"
    assert (
        served.attributes["http.response.status_code"]
        == call.attributes["http.response.status_code"]
    )
    assert sql_spans(descendants(trace, served)), [s.name for s in descendants(trace, served)]
    return served


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
    zs.create_management_tables(sql_url)
    stores = redis_sql_stores(redis_server.url, sql_url)
    stores["DEFAULT"] = {"auth_strategy": "keystone"}
    stores["keystone_authtoken"] = keystone_server.authtoken_conf()
    server = start_server(jaeger_server, stores)
    keystone_server.set_endpoint("messaging", server.url)
    warm = put_queue(server.url, keystone_server.token(), zs.fresh_queue_name(), signed=False)
    assert warm.status_code == 201, warm.text
    yield server
    server.close()


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
    keystone_validation(trace, validation)
    assert trace.services() == {ZAQAR, KEYSTONE}
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
    keystone_validation(trace, validation)  # Keystone's 404, in the same trace
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
    both = trace_of(jaeger_server, control, services={ZAQAR, KEYSTONE})  # both exported
    assert both.services() == {ZAQAR, KEYSTONE}
    for name in names:
        found = query.find_traces(ZAQAR, lookback_s=120, tags={"url.path": f"/v2/queues/{name}"})
        assert found == {}
    window = (int(started * 1e6), int(unsigned_done * 1e6))
    for service in query.services():
        for spans in query.find_traces(service, lookback_s=120).values():
            started_then = [s for s in spans if window[0] <= s.start_us <= window[1]]
            assert not started_then, [(s.service, s.name) for s in started_then]


# -- the operator's tools


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A console script of this environment; no OTel or OpenStack settings but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OS_"))}
    clean.pop("ZAQAR_OTEL_JAEGER_QUERY", None)
    clean.update(env)
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=clean, timeout=180
    )


def summary(trace: Trace) -> str:
    """Span count per service and the time authentication took (for the test log)."""
    counts = {service: len(trace.of(service)) for service in sorted(trace.services())}
    calls = validation_calls(trace)
    auth_ms = sum(s.duration_us for s in calls) / 1000
    [root] = trace.of(ZAQAR, "server")
    return (
        f"spans per service {counts}; Zaqar request {root.duration_us / 1000:.1f} ms, "
        f"token validation {auth_ms:.1f} ms in {len(calls)} call(s)"
    )


def test_openstack_cli_os_profile_is_one_trace_of_zaqar_and_keystone(
    keystone_zaqar, keystone_server, jaeger_server
):
    name = zs.fresh_queue_name()
    cli = run("openstack", "--os-profile", zs.HMAC_KEY, "messaging", "queue", "create", name,
              env=keystone_server.os_env())  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert name in cli.stdout
    [base] = re.findall(r"Trace ID: ([0-9a-f-]{36})", cli.stderr)
    trace = trace_of(jaeger_server, base, min_spans=6, services={ZAQAR, KEYSTONE})
    print(f"openstack --os-profile trace {base}: {summary(trace)}")
    assert trace.services() == {ZAQAR, KEYSTONE}
    [request] = trace.of(ZAQAR, "server")
    assert request.name == "PUT /v2/queues/{queue_name}"
    assert request.attributes["url.path"] == f"/v2/queues/{name}"
    [validation] = validation_calls(trace)  # the CLI's token is new to Zaqar
    assert trace.parent(validation) is request
    keystone_validation(trace, validation)
    # the CLI itself sends no spans: each of its requests is a root of the trace
    roots = {(s.service, s.name) for s in trace.roots()}
    assert (ZAQAR, "PUT /v2/queues/{queue_name}") in roots
    assert (KEYSTONE, "POST /v3/auth/tokens") in roots  # the CLI authenticating


def test_osprofiler_trace_show_finds_the_cli_trace_without_a_wrapper(
    keystone_zaqar, keystone_server, jaeger_server
):
    cli = run("openstack", "--os-profile", zs.HMAC_KEY, "messaging", "queue", "create",
              zs.fresh_queue_name(), env=keystone_server.os_env())  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    [base] = re.findall(r"Trace ID: ([0-9a-f-]{36})", cli.stderr)
    trace = trace_of(jaeger_server, base, min_spans=6, services={ZAQAR, KEYSTONE})
    shown = run("osprofiler", "trace", "show", "--connection-string",
                f"otel://?query={jaeger_server.query_url}", "--json", base, env={})  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    report = json.loads(shown.stdout)

    def elements(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *[e for child in node.get("children", []) for e in elements(child)]]

    from zaqar_otel.lookup.report import element_id

    found = elements(report)[1:]  # below OSProfiler's "total"
    assert sorted(e["trace_id"] for e in found) == sorted(element_id(s) for s in trace.spans)
    assert {e["info"]["service"] for e in found} == {ZAQAR, KEYSTONE}


def clouds_yaml(tmp_path: Path, keystone_server: KeystoneServer) -> dict[str, str]:
    path = tmp_path / "clouds.yaml"
    path.write_text(keystone_server.clouds_yaml("e2e"))
    return {"OS_CLIENT_CONFIG_FILE": str(path)}


def test_zaqar_otel_call_with_os_cloud(keystone_zaqar, keystone_server, jaeger_server, tmp_path):
    name = zs.fresh_queue_name()
    env = {
        **clouds_yaml(tmp_path, keystone_server),
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger_server.otlp_http_endpoint,
        "ZAQAR_OTEL_JAEGER_QUERY": jaeger_server.query_url,
    }
    called = run("zaqar-otel", "call", "--os-cloud", "e2e", "--hmac-key", zs.HMAC_KEY, "--json",
                 "queue-create", name, env=env)  # fmt: skip
    assert called.returncode == 0, called.stderr
    result = json.loads(called.stdout)
    assert result["result"] == f"created queue {name}" and result["server_traced"] is True
    trace = trace_of(
        jaeger_server, result["base_id"], min_spans=5, services={"zaqar-client", ZAQAR, KEYSTONE}
    )
    assert trace.services() == {"zaqar-client", ZAQAR, KEYSTONE}
    # the client authenticating (the catalog gave Zaqar's URL): a CLIENT span, Keystone under it
    [login] = [s for s in trace.of("zaqar-client") if s.name == "POST"]
    assert login.attributes["url.full"] == f"{keystone_server.auth_url}/auth/tokens"
    [issued] = trace.children(login)
    assert (issued.service, issued.name) == (KEYSTONE, "POST /v3/auth/tokens")
    # the Zaqar call: the client's PUT, Zaqar's request under it, the validation under that
    [put] = [s for s in trace.of("zaqar-client") if s.name == "PUT"]
    assert put.attributes["url.full"] == f"{keystone_zaqar.url}/v2/queues/{name}"
    [request] = trace.children(put)
    assert request.name == "PUT /v2/queues/{queue_name}"
    [validation] = validation_calls(trace)
    assert trace.parent(validation) is request


def test_zaqar_otel_call_with_openrc_variables_and_noauth_still_works(
    keystone_zaqar, keystone_server, jaeger_server
):
    openrc = run("zaqar-otel", "call", "--hmac-key", zs.HMAC_KEY, "--no-check", "queue-create",
                 zs.fresh_queue_name(), env=keystone_server.os_env())  # fmt: skip
    assert openrc.returncode == 0, openrc.stderr
    assert openrc.stdout.startswith("created queue")
    # without a cloud: noauth, as before; this Zaqar wants a token and says so
    refused = run("zaqar-otel", "call", "--url", keystone_zaqar.url, "--hmac-key", zs.HMAC_KEY,
                  "--no-check", "queue-create", zs.fresh_queue_name(), env={})  # fmt: skip
    assert refused.returncode == 4 and "401" in refused.stderr
    unknown = run("zaqar-otel", "call", "--os-cloud", "nowhere", "--hmac-key", "k",
                  "queue-create", "q", env={"OS_CLIENT_CONFIG_FILE": "/nonexistent"})  # fmt: skip
    assert unknown.returncode == 2
    assert unknown.stderr.splitlines() == [
        "zaqar-otel: error: Keystone: Cloud nowhere was not found."
    ]
