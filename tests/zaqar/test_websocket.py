"""Zaqar's websocket transport, which OSProfiler never traced: same per-request traces."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import websocket  # websocket-client
from osprofiler import web

from tests import zaqar_server as zs
from tests.waiting import assert_absent_after_control
from tests.zaqar.test_server import CLIENT_ID, Tree, redis_sql_stores, tags, trace_of

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]


def _signed_headers(key: str) -> tuple[dict[str, str], str]:
    with zs.profiled(key) as base_id:
        headers = web.get_trace_id_headers()
    # OSProfiler < 4.4 gives X-Trace-Info as bytes; a websocket message is JSON text
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in headers.items()}, base_id


@pytest.fixture(scope="module")
def ws_zaqar(jaeger_server, redis_server, tmp_path_factory):
    sql = f"sqlite:///{tmp_path_factory.mktemp('ws') / 'zaqar.db'}"
    zs.create_management_tables(sql)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger_server.otlp_http_endpoint}
    server = zs.ZaqarServer(
        redis_sql_stores(redis_server.url, sql), zs.PROFILER_ON, env, transport="websocket"
    ).start()
    yield server
    server.close()


def _send(conn: Any, action: str, body: dict[str, Any], extra: dict[str, str]) -> dict[str, Any]:
    headers = {"Client-ID": CLIENT_ID, "X-Project-ID": "ws-project", **extra}
    conn.send(json.dumps({"action": action, "headers": headers, "body": body}))
    reply: dict[str, Any] = json.loads(conn.recv())
    return reply


def test_signed_websocket_requests_are_traced(ws_zaqar, jaeger_server):
    conn = websocket.create_connection(f"ws://127.0.0.1:{ws_zaqar.port}", timeout=10)
    queue = zs.fresh_queue_name()
    marker = f"MARK{uuid.uuid4().hex}"
    try:
        bases = {}
        message = {"body": {"text": marker}, "ttl": 300}
        for action, body in (
            ("queue_create", {"queue_name": queue}),
            ("message_post", {"queue_name": queue, "messages": [message] * 2}),
            ("message_list", {"queue_name": queue, "echo": True}),
        ):
            headers, bases[action] = _signed_headers(zs.HMAC_KEY)
            reply = _send(conn, action, body, headers)
            assert reply["headers"]["status"] in (200, 201, 204), reply
        # unsigned and wrongly signed: served, not traced
        unsigned = _send(conn, "message_list", {"queue_name": queue}, {})
        assert unsigned["headers"]["status"] == 200
        wrong, wrong_base = _signed_headers("not-the-key")
        assert _send(conn, "message_list", {"queue_name": queue}, wrong)["headers"]["status"] == 200
        signed, control = _signed_headers(zs.HMAC_KEY)  # traced, after the wrong one
        assert (
            _send(conn, "message_list", {"queue_name": queue}, signed)["headers"]["status"] == 200
        )
    finally:
        conn.close()

    post = trace_of(jaeger_server, bases["message_post"], 3)
    [root] = post.roots()
    assert root["operationName"] == "websocket message_post"
    root_tags = tags(root)
    assert root_tags["span.kind"] == "server"
    assert root_tags["messaging.destination.name"] == queue
    assert root_tags["messaging.batch.message_count"] == 2
    assert root_tags["zaqar.project_id"] == "ws-project"
    assert root_tags["zaqar.response.status"] == 201
    [controller] = post.named("MessageController.post")
    assert post.parent(controller) is root
    assert post.db("redis")
    created = trace_of(jaeger_server, bases["queue_create"], 2)
    assert created.roots()[0]["operationName"] == "websocket queue_create"
    listed: Tree = trace_of(jaeger_server, bases["message_list"], 2)
    [list_root] = listed.roots()
    assert list_root["operationName"] == "websocket message_list"
    # the ids, ages and producer links of the messages listed, as over HTTP
    posted_ids = json.loads(root_tags["messaging.zaqar.batch.message_ids"])
    assert sorted(json.loads(tags(list_root)["messaging.zaqar.batch.message_ids"])) == sorted(
        posted_ids
    )
    creates = {(s["traceID"], s["spanID"]) for s in post.named(f"create {queue}")}
    assert len(creates) == 2
    links = {(r["traceID"], r["spanID"]) for r in list_root["references"]}
    assert links == creates
    assert_absent_after_control(jaeger_server, control, [wrong_base])
    for tree in (post, created, listed):  # no body, no error, over websocket too
        assert marker not in json.dumps(tree.spans)
        assert not [s for s in tree.spans if tags(s).get("error") is True]
