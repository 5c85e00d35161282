"""Messaging-native traces, end to end: a producer process, a real zaqar-server, an
OpenTelemetry-instrumented webhook subscriber, consumers, all exporting to one Jaeger."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
import redis
import requests

from tests import messaging as m
from tests import zaqar_server as zs
from tests.waiting import wait_until
from tests.zaqar.test_server import Tree, redis_sql_stores, start_server, tags
from zaqar_otel.bridge import ids
from zaqar_otel.demo.process import pick_port

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]
# the fields of a message in Zaqar's v2 API responses (WSGI)
API_FIELDS = {"id", "href", "ttl", "age", "body", "checksum"}


def wait_trace(jaeger: Any, trace_hex: str, wanted: Any, timeout: float = 30) -> Tree:
    """The trace once ``wanted(tree)`` is true (spans arrive in batches from several processes)."""

    def ready() -> Tree | None:
        tree = Tree(jaeger.trace_spans(jaeger.get_trace(trace_hex)))
        return tree if tree.spans and wanted(tree) else None

    return wait_until(ready, f"trace {trace_hex}: {getattr(wanted, '__name__', 'condition')}",
                      timeout)  # fmt: skip


def with_services(jaeger: Any, trace_hex: str) -> list[dict[str, Any]]:
    """The spans of a trace, each with ``_service`` (its process's service name)."""
    answer = jaeger.get_trace(trace_hex) or {}
    spans = []
    for data in answer.get("data") or []:
        for span in data.get("spans") or []:
            span["_service"] = data["processes"][span["processID"]]["serviceName"]
            spans.append(span)
    return spans


def links(span: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (ref["traceID"], ref["spanID"])
        for ref in span.get("references") or []
        if ref["refType"] == "FOLLOWS_FROM"
    }


# -- servers


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('mgmt') / 'zaqar.db'}"
    zs.create_management_tables(url)
    return url


@pytest.fixture(scope="module")
def mail_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mail")


def notifying_stores(redis_url: str, sql_url: str, mail_dir: Path) -> dict[str, dict[str, str]]:
    stores = redis_sql_stores(redis_url, sql_url)
    stores["storage"] = dict(m.NOTIFIER)
    stores["notification"] = {
        "smtp_mode": "third_part",
        "smtp_command": f"{sys.executable} -m tests.apps.sendmail {mail_dir}",
    }
    return stores


@pytest.fixture(scope="module")
def zaqar(jaeger_server, redis_server, sqlite_url, mail_dir) -> Iterator[zs.ZaqarServer]:
    server = start_server(jaeger_server, notifying_stores(redis_server.url, sqlite_url, mail_dir))
    yield server
    server.close()


@pytest.fixture(scope="module")
def subscriber(jaeger_server) -> Iterator[m.Subscriber]:
    process = m.Subscriber(jaeger_server)
    yield process
    process.close()


# -- push: webhooks and mail


def test_webhook_delivery_continues_the_producers_trace(zaqar, subscriber, jaeger_server):
    queue = zs.fresh_queue_name()
    m.create_queue(zaqar.url, queue)
    path_token = f"T0k3n{uuid.uuid4().hex[:16]}"  # secrets in the path, as Slack's webhooks
    hook = subscriber.url(
        f"/hook/{queue}/{path_token}", userinfo="user:pass", query="token=s3cret&v=2"
    )
    sub_id = m.subscribe(zaqar.url, queue, hook)
    produced = m.produce(zaqar.url, jaeger_server, queue, '{"order": 1}')
    trace_hex = produced["trace_id"]

    [delivery] = subscriber.wait_for(lambda d: d["path"] == f"/hook/{queue}/{path_token}")
    sent = {k.lower(): v for k, v in delivery["headers"].items()}
    assert sent["traceparent"].split("-")[1] == trace_hex
    assert not {"x-trace-info", "x-trace-hmac"} & set(sent)
    assert all(zs.HMAC_KEY not in value for value in sent.values())

    def complete(tree: Tree) -> bool:  # producer, Zaqar and subscriber spans
        return len({s["processID"] for s in tree.spans}) >= 3

    wait_trace(jaeger_server, trace_hex, complete)
    spans = with_services(jaeger_server, trace_hex)
    tree = Tree(spans)
    [root] = tree.roots()
    assert (root["_service"], tags(root)["span.kind"]) == ("zaqar-client", "client")
    for span in spans:  # one connected tree under the producer's request
        assert span is root or tree.ancestors(span)[-1] is root, span["operationName"]
    [notify] = tree.named(f"notify {queue}")
    notify_tags = tags(notify)
    assert notify_tags["span.kind"] == "client"
    assert notify_tags["url.full"] == (
        f"http://REDACTED:REDACTED@127.0.0.1:{subscriber.port}/hook/{queue}/REDACTED"
        "?token=REDACTED&v=REDACTED"
    )
    assert notify_tags["http.response.status_code"] == 200
    assert notify_tags["messaging.zaqar.subscription.id"] == sub_id
    assert notify_tags["messaging.destination.name"] == queue
    assert "http.request.resend_count" not in notify_tags
    [received] = [s for s in spans if s["_service"] == "subscriber"]
    assert tags(received)["span.kind"] == "server"
    assert tree.parent(received) is notify
    assert received["spanID"] == delivery["span"]["span_id"]
    [request] = [s for s in spans if s["operationName"] == "POST /v2/queues/{queue_name}/messages"]
    assert request in tree.ancestors(notify)
    [create] = tree.named(f"create {queue}")  # the post records the id of what it created
    assert tags(request)["messaging.message.id"] == tags(create)["messaging.message.id"]
    # the subscriber's own WSGI instrumentation records its query string; Zaqar's spans do not
    ours = str([s for s in spans if s["_service"] != "subscriber"])
    assert "s3cret" not in ours and "user:pass" not in ours and "pass@" not in ours
    assert path_token not in ours


def test_failing_webhook_attempts_are_resends_with_errors(zaqar, jaeger_server):
    queue = zs.fresh_queue_name()
    m.create_queue(zaqar.url, queue)
    closed = f"http://127.0.0.1:{pick_port()}/nobody"
    policy = {
        "retries_with_no_delay": 2,
        "minimum_delay_retries": 0,
        "minimum_delay": 0,
        "maximum_delay": 10,  # linear backoff: two more attempts, after 0 and 5 s
        "maximum_delay_retries": 0,
    }
    m.subscribe(zaqar.url, queue, closed, {"_retry_policy": policy})
    with zs.profiled() as base:
        m.post(zaqar.url, queue, [{"n": 1}])

    def five_attempts(tree: Tree) -> bool:
        return len(tree.named(f"notify {queue}")) >= 5

    tree = wait_trace(jaeger_server, ids.trace_hex(base), five_attempts, timeout=40)
    attempts = sorted(
        (tags(s).get("http.request.resend_count", 0), tags(s)) for s in tree.named("notify")
    )
    assert [count for count, _ in attempts] == [0, 1, 2, 3, 4]
    for _, attempt in attempts:
        assert attempt["error"] is True
        assert attempt["error.type"] == "ConnectionError"
        assert attempt["url.full"] == closed
        assert "http.response.status_code" not in attempt


def test_mail_notifications_are_spans_without_addresses(zaqar, jaeger_server, mail_dir):
    queue = zs.fresh_queue_name()
    m.create_queue(zaqar.url, queue)
    ok = f"ok-{uuid.uuid4().hex[:6]}"
    # (not ?subject=: Zaqar 23 passes parse_qs's list as the Subject header and fails)
    m.subscribe(zaqar.url, queue, f"mailto:{ok}@example.com?cc=boss@example.net")
    m.subscribe(zaqar.url, queue, "mailto:fail-x@example.org")
    with zs.profiled() as base:
        m.post(zaqar.url, queue, [{"n": 1}, {"n": 2}])

    tree = wait_trace(
        jaeger_server, ids.trace_hex(base), lambda t: len(t.named(f"notify {queue}")) == 2
    )
    assert (mail_dir / f"{ok}@example.com.eml").exists()
    by_url = {tags(s)["url.full"]: tags(s) for s in tree.named("notify")}
    assert set(by_url) == {
        "mailto:REDACTED@example.com?cc=REDACTED",
        "mailto:REDACTED@example.org",
    }
    sent = by_url["mailto:REDACTED@example.com?cc=REDACTED"]
    assert sent["span.kind"] == "client" and sent["url.scheme"] == "mailto"
    assert sent["messaging.batch.message_count"] == 2
    assert "error" not in sent
    refused = by_url["mailto:REDACTED@example.org"]
    assert refused["error"] is True and refused["error.type"] == "ProcessExecutionError"
    trace = jaeger_server.get_trace(ids.trace_hex(base))
    assert m.hits(trace, ok) == [] and m.hits(trace, "fail-x") == []
    assert m.hits(trace, "boss") == []


def test_untraced_post_notifies_without_spans_or_trace_headers(zaqar, subscriber, jaeger_server):
    queue = zs.fresh_queue_name()
    m.create_queue(zaqar.url, queue)
    m.subscribe(zaqar.url, queue, subscriber.url(f"/plain/{queue}"))
    m.post(zaqar.url, queue, [{"n": 1}])
    [delivery] = subscriber.wait_for(lambda d: d["path"] == f"/plain/{queue}")
    sent = {k.lower() for k in delivery["headers"]}
    assert not {"traceparent", "x-trace-info", "x-trace-hmac"} & sent


# -- pull: creation context stored with the message, links from claims and gets


def redis_fields(redis_url: str, message_id: str) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        fields: dict[bytes, bytes] = client.hgetall(message_id)
        return fields
    finally:
        client.close()


class Store:
    """A message store for a Zaqar server, and a way to read a message's stored fields."""

    def __init__(self, kind: str, stores: dict[str, Any], launcher: str, url: str) -> None:
        self.kind, self.stores, self.launcher, self.url = kind, stores, launcher, url
        self.database = stores.get("drivers:message_store:mongodb", {}).get("database", "")

    def fields(self, message_id: str) -> dict[str, Any]:
        """The message as stored: Redis hash fields, or the MongoDB document (str keys)."""
        if self.kind == "redis":
            return {k.decode(): v for k, v in redis_fields(self.url, message_id).items()}
        from bson import ObjectId

        client: pymongo.MongoClient[Any] = pymongo.MongoClient(self.url)
        try:
            for name in client.list_database_names():
                if name.startswith(f"{self.database}_messages"):
                    found = client[name].messages.find_one({"_id": ObjectId(message_id)})
                    if found is not None:
                        return dict(found)
            return {}
        finally:
            client.close()


@pytest.fixture(params=["redis", "ferretdb"])
def store(request, redis_server, sqlite_url) -> Store:
    if request.param == "redis":
        stores = redis_sql_stores(redis_server.url, sqlite_url)
        return Store("redis", stores, "zaqar-otel-server", redis_server.url)
    ferretdb = request.getfixturevalue("ferretdb_server")
    uri = f"{ferretdb.url}?serverSelectionTimeoutMS=5000"
    database = f"zaqar_links_{uuid.uuid4().hex[:8]}"
    stores = {
        "drivers": {"message_store": "mongodb", "management_store": "mongodb"},
        "drivers:message_store:mongodb": {"uri": uri, "database": database, "partitions": "2"},
        "drivers:management_store:mongodb": {"uri": uri, "database": f"{database}_mgmt"},
    }
    return Store("mongodb", stores, "ferretdb", ferretdb.url)


def signed_headers() -> dict[str, str]:
    from osprofiler import web

    return {**m.headers(), **web.get_trace_id_headers()}


def stored_context(store: Store, message_id: str) -> tuple[str, str] | None:
    """(trace id, span id) in hex stored with the message, or None."""
    raw = store.fields(message_id).get("otel")
    if raw is None:
        return None
    raw = bytes(raw)
    assert len(raw) == 24
    return raw[:16].hex(), raw[16:].hex()


def post_traced_and_not(url: str, queue: str) -> tuple[dict[str, str], dict[str, str]]:
    """One profiled post of one message (a), one of two (b1, b2), one unprofiled (c):
    ({name: message id}, {message id: base id of its post})."""
    m.create_queue(url, queue)
    with zs.profiled() as one:
        [a] = m.post(url, queue, [{"n": 1}])
    with zs.profiled() as batch:
        b1, b2 = m.post(url, queue, [{"n": 2}, {"n": 3}])
    [c] = m.post(url, queue, [{"n": 4}])  # not profiled
    return {"a": a, "b1": b1, "b2": b2, "c": c}, {a: one, b1: batch, b2: batch}


def assert_stored_creation_contexts(
    store: Store, jaeger: Any, queue: str, msg: dict[str, str], bases: dict[str, str]
) -> dict[str, tuple[str, str]]:
    """The context of profiled posts only is stored, and it is each message's create span."""
    produced = {}
    for mid, base in bases.items():
        found = stored_context(store, mid)
        assert found is not None and found[0] == ids.trace_hex(base)
        produced[mid] = found
        tree = wait_trace(
            jaeger,
            ids.trace_hex(base),
            lambda t, mid=mid: any(tags(s).get("messaging.message.id") == mid for s in t.spans),
        )
        [create] = [
            s for s in tree.named(f"create {queue}") if tags(s)["messaging.message.id"] == mid
        ]
        assert create["spanID"] == found[1]
        assert tags(create)["span.kind"] == "producer"
        assert tags(create)["messaging.operation.type"] == "create"
    assert stored_context(store, msg["c"]) is None  # nothing extra when not profiled
    assert set(store.fields(msg["c"])) == set(store.fields(msg["a"])) - {"otel"}
    return produced


def traced_request_root(jaeger: Any, method: str, url: str, **kwargs: Any) -> tuple[Any, Any]:
    """(the response, the root span of its trace once it has arrived)."""
    with zs.profiled() as base:
        answer = requests.request(method, url, headers=signed_headers(), timeout=10, **kwargs)
    tree = wait_trace(jaeger, ids.trace_hex(base), lambda t: bool(t.roots()))
    [root] = tree.roots()
    return answer, root


def test_claims_and_gets_link_to_each_producing_trace_also_after_a_restart(store, jaeger_server):
    queue = zs.fresh_queue_name()
    server = start_server(jaeger_server, store.stores, launcher=store.launcher)
    try:
        msg, bases = post_traced_and_not(server.url, queue)
        produced = assert_stored_creation_contexts(store, jaeger_server, queue, msg, bases)
        claims = f"{server.url}/v2/queues/{queue}/claims?limit=10"
        answer, root = traced_request_root(jaeger_server, "POST", claims, json={"ttl": 60})
    finally:
        server.close()
    assert answer.status_code == 201, answer.text
    claimed = answer.json()["messages"]
    assert sorted(m["id"] for m in claimed) == sorted(msg.values())
    assert all(set(m) <= API_FIELDS for m in claimed), claimed  # no extra field out
    assert links(root) == set(produced.values())  # one link per profiled post's message
    assert tags(root)["messaging.operation.type"] == "receive"
    assert tags(root)["messaging.batch.message_count"] == 4

    # a new Zaqar process: the links come from the store, not from memory
    server = start_server(jaeger_server, store.stores, launcher=store.launcher)
    try:
        messages = f"{server.url}/v2/queues/{queue}/messages"
        one, root = traced_request_root(jaeger_server, "GET", f"{messages}/{msg['a']}")
        many, many_root = traced_request_root(
            jaeger_server, "GET", f"{messages}?ids={msg['b2']},{msg['c']}"
        )
    finally:
        server.close()
    assert one.status_code == 200 and set(one.json()) <= API_FIELDS
    assert links(root) == {produced[msg["a"]]}
    assert tags(root)["messaging.message.id"] == msg["a"]
    assert isinstance(tags(root)["messaging.zaqar.message.age"], int)
    assert many.status_code == 200
    assert all(set(m) <= API_FIELDS for m in many.json()["messages"])
    assert links(many_root) == {produced[msg["b2"]]}


def api_get_signed(url: str, path: str) -> requests.Response:
    return requests.get(f"{url}{path}", headers=signed_headers(), timeout=10)


def test_no_message_body_in_any_exported_span(zaqar, subscriber, jaeger_server):
    """Post, webhook, claim, list and gets of a message with a unique marker in its body:
    the marker is in no span of any of those traces (names, attributes, events, links)."""
    marker = f"secret-body-{uuid.uuid4().hex}"
    queue = zs.fresh_queue_name()
    m.create_queue(zaqar.url, queue)
    m.subscribe(zaqar.url, queue, subscriber.url(f"/body/{queue}"))
    produced = m.produce(zaqar.url, jaeger_server, queue, f'{{"text": "{marker}"}}')
    [delivery] = subscriber.wait_for(lambda d: d["path"] == f"/body/{queue}")
    assert marker in delivery["body"]  # the subscriber got the body; no span did
    messages = f"{zaqar.url}/v2/queues/{queue}/messages"
    bases = []
    with zs.profiled() as base:
        assert api_get_signed(zaqar.url, f"/v2/queues/{queue}/messages?echo=true").ok
    bases.append(base)
    with zs.profiled() as base:
        answer = requests.post(
            f"{zaqar.url}/v2/queues/{queue}/claims", json={}, headers=signed_headers(), timeout=10
        )
    assert marker in answer.text
    bases.append(base)
    message_id = answer.json()["messages"][0]["id"]
    with zs.profiled() as base:
        assert marker in requests.get(f"{messages}/{message_id}", headers=signed_headers()).text
    bases.append(base)
    traces = [produced["trace_id"], *(ids.trace_hex(b) for b in bases)]
    wait_trace(jaeger_server, traces[0], lambda t: len({s["processID"] for s in t.spans}) >= 3)
    for trace_hex in traces:
        wait_trace(jaeger_server, trace_hex, lambda t: bool(t.roots()))
    found = {t: m.hits(jaeger_server.get_trace(t), marker) for t in traces}
    assert found == {t: [] for t in traces}
