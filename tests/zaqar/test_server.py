"""A real zaqar-server, python-zaqarclient as the caller, Jaeger's query API as the oracle."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests import zaqar_server as zs
from tests.waiting import assert_absent_after_control, wait_until
from zaqar_otel.bridge import ids

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]
CLIENT_ID = "3381af92-2b9e-11e3-b191-71861300734c"


# -- reading Jaeger's answer


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span.get("tags", [])}


class Tree:
    def __init__(self, spans: list[dict[str, Any]]) -> None:
        self.spans = spans
        self.by_id = {s["spanID"]: s for s in spans}

    def parent(self, span: dict[str, Any]) -> dict[str, Any] | None:
        refs = [r for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
        return self.by_id.get(refs[0]["spanID"]) if refs else None

    def roots(self) -> list[dict[str, Any]]:
        """Spans without a parent (a span link is a FOLLOWS_FROM reference, not a parent)."""
        return [
            s
            for s in self.spans
            if not any(r["refType"] == "CHILD_OF" for r in s.get("references") or [])
        ]

    def named(self, fragment: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if fragment in s["operationName"]]

    def db(self, system: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if tags(s).get("db.system.name") == system]

    def ancestors(self, span: dict[str, Any]) -> list[dict[str, Any]]:
        chain = []
        while (span := self.parent(span)) is not None:
            chain.append(span)
        return chain


def trace_of(jaeger: Any, base_id: str, min_spans: int = 2) -> Tree:
    """The trace once it is whole: ``min_spans`` spans or more, and its root. The root (the
    request span) ends last, so every span under it was exported before it."""

    def whole() -> Tree | None:
        tree = Tree(jaeger.trace_spans(jaeger.get_trace(ids.trace_hex(base_id))))
        return tree if len(tree.spans) >= min_spans and tree.roots() else None

    return wait_until(whole, f"trace {base_id}: a root and {min_spans}+ spans")


def assert_one_connected_tree(tree: Tree) -> dict[str, Any]:
    [root] = tree.roots()
    for span in tree.spans:
        if span is not root:
            assert tree.ancestors(span)[-1] is root, span["operationName"]
    return root


# -- servers


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('mgmt') / 'zaqar.db'}"
    zs.create_management_tables(url)
    return url


redis_sql_stores = zs.redis_sql_stores


def start_server(
    jaeger: Any, stores: dict[str, Any], launcher: str = "zaqar-otel-server", **profiler_opts: str
) -> zs.ZaqarServer:
    opts = dict(zs.PROFILER_ON)
    opts.update(profiler_opts)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    return zs.ZaqarServer(stores, opts, env, launcher).start()


@pytest.fixture(scope="module")
def redis_sqlite_zaqar(jaeger_server, redis_server, sqlite_url) -> Iterator[zs.ZaqarServer]:
    server = start_server(jaeger_server, redis_sql_stores(redis_server.url, sqlite_url))
    yield server
    server.close()


def workload(url: str) -> dict[str, str]:
    """create queue, post 3, list, claim 2, delete: one profiled trace per call."""
    cli = zs.client(url)
    name = zs.fresh_queue_name()
    bases: dict[str, str] = {}
    with zs.profiled() as bases["create"]:
        queue = cli.queue(name, force_create=True)
    with zs.profiled() as bases["post"]:
        queue.post([{"body": {"n": i}, "ttl": 300} for i in range(3)])
    with zs.profiled() as bases["list"]:
        listed = list(queue.messages(echo=True))
    assert len(listed) == 3
    with zs.profiled() as bases["claim"]:
        claimed = list(queue.claim(ttl=60, grace=60, limit=2))
    assert len(claimed) == 2
    with zs.profiled() as bases["delete"]:
        claimed[0].delete()
    bases["queue"] = name
    return bases


def workload_on(jaeger: Any, stores: dict[str, Any], **profiler_opts: str) -> dict[str, str]:
    """Start a server with these flags, run the workload once, stop it (flushing)."""
    server = start_server(jaeger, stores, **profiler_opts)
    try:
        return workload(server.url)
    finally:
        server.close()


def test_post_is_one_trace_with_route_messaging_and_db_children(redis_sqlite_zaqar, jaeger_server):
    bases = workload(redis_sqlite_zaqar.url)
    tree = trace_of(jaeger_server, bases["post"], 4)
    root = assert_one_connected_tree(tree)
    assert root["operationName"] == "POST /v2/queues/{queue_name}/messages"
    root_tags = tags(root)
    assert root_tags["span.kind"] == "server"
    assert root_tags["http.route"] == "/v2/queues/{queue_name}/messages"
    assert root_tags["http.request.method"] == "POST"
    assert root_tags["http.response.status_code"] == 201
    assert root_tags["messaging.system"] == "zaqar"
    assert root_tags["messaging.destination.name"] == bases["queue"]
    assert root_tags["messaging.operation.name"] == "post"
    assert root_tags["messaging.batch.message_count"] == 3
    assert root["traceID"] == ids.trace_hex(bases["post"])
    [post] = tree.named("MessageController.post")
    assert tree.parent(post) is root
    redis_spans = tree.db("redis")
    assert redis_spans, [s["operationName"] for s in tree.spans]
    for span in redis_spans:
        assert "controller" in tree.parent(span)["operationName"]
    assert any(tree.parent(s) is post for s in redis_spans)


def test_every_operation_of_the_workload_is_traced(redis_sqlite_zaqar, jaeger_server):
    bases = workload(redis_sqlite_zaqar.url)
    expected = {
        "create": ("PUT /v2/queues/{queue_name}", 201),
        "list": ("GET /v2/queues/{queue_name}/messages", 200),
        "claim": ("POST /v2/queues/{queue_name}/claims", 201),
        "delete": ("DELETE /v2/queues/{queue_name}/messages/{message_id}", 204),
    }
    for op, (name, status) in expected.items():
        tree = trace_of(jaeger_server, bases[op], 2)
        root = assert_one_connected_tree(tree)
        assert root["operationName"] == name
        assert tags(root)["http.response.status_code"] == status
        assert tags(root)["messaging.destination.name"] == bases["queue"]
    create = trace_of(jaeger_server, bases["create"], 3)
    sql = tree_sql = create.db("sqlite")
    assert tree_sql, [s["operationName"] for s in create.spans]
    for span in sql:
        assert (
            "controller" in create.parent(span)["operationName"]
            or "driver" in create.parent(span)["operationName"]
        )
    claim = trace_of(jaeger_server, bases["claim"], 3)
    assert tags(claim.roots()[0])["messaging.batch.message_count"] == 2


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Trace-Info": "bm90LWpzb24=", "X-Trace-HMAC": "00"},
        {"X-Trace-Info": "%%%not-base64%%%", "X-Trace-HMAC": "abc"},
    ],
)
def test_unsigned_or_badly_signed_requests_are_served_and_not_traced(
    redis_sqlite_zaqar, jaeger_server, headers
):
    name = zs.fresh_queue_name()
    response = requests.put(
        f"{redis_sqlite_zaqar.url}/v2/queues/{name}",
        headers={
            "Client-ID": CLIENT_ID,
            "X-Project-ID": "p",
            **headers,
        },
        timeout=10,
    )
    assert response.status_code == 201


def test_each_signed_request_is_its_own_trace_and_leaves_no_profiler_behind(
    redis_sqlite_zaqar, jaeger_server
):
    """Zaqar 20 and 21's own WSGI middleware never cleaned the thread's profiler: the next
    request in that thread, signed or not, landed in the first request's trace."""
    cli = zs.client(redis_sqlite_zaqar.url)
    first_queue, unsigned_queue, control_queue = (zs.fresh_queue_name() for _ in range(3))
    with zs.profiled() as first:
        cli.queue(first_queue, force_create=True)
    before = trace_of(jaeger_server, first, 2)
    response = requests.put(
        f"{redis_sqlite_zaqar.url}/v2/queues/{unsigned_queue}",
        headers={"Client-ID": CLIENT_ID, "X-Project-ID": "e2e-project"},
        timeout=10,
    )
    assert response.status_code == 201
    with zs.profiled() as control:
        cli.queue(control_queue, force_create=True)
    control_tree = trace_of(jaeger_server, control, 2)  # exported after the unsigned request
    control_root = assert_one_connected_tree(control_tree)
    assert tags(control_root)["messaging.destination.name"] == control_queue
    after = Tree(jaeger_server.trace_spans(jaeger_server.get_trace(ids.trace_hex(first))) or [])
    assert sorted(s["spanID"] for s in after.spans) == sorted(s["spanID"] for s in before.spans)
    assert tags(assert_one_connected_tree(after))["messaging.destination.name"] == first_queue


def test_wrong_hmac_key_is_served_and_exports_nothing(redis_sqlite_zaqar, jaeger_server):
    cli = zs.client(redis_sqlite_zaqar.url)
    with zs.profiled("not-the-server-key") as base:
        cli.queue(zs.fresh_queue_name(), force_create=True)
    with zs.profiled() as control:
        cli.queue(zs.fresh_queue_name(), force_create=True)
    assert_absent_after_control(jaeger_server, control, [base])


def test_extra_json_keys_in_trace_info_are_not_traced(redis_sqlite_zaqar, jaeger_server):
    from osprofiler import _utils

    base = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"
    data, hmac = _utils.signed_pack({"base_id": base, "parent_id": base, "extra": 1}, zs.HMAC_KEY)
    response = requests.put(
        f"{redis_sqlite_zaqar.url}/v2/queues/{zs.fresh_queue_name()}",
        headers={
            "Client-ID": CLIENT_ID,
            "X-Project-ID": "p",
            "X-Trace-Info": data.decode(),
            "X-Trace-HMAC": hmac,
        },
        timeout=10,
    )
    assert response.status_code == 201
    with zs.profiled() as control:
        zs.client(redis_sqlite_zaqar.url).queue(zs.fresh_queue_name(), force_create=True)
    assert_absent_after_control(jaeger_server, control, [base])


def test_backend_flags_off_remove_exactly_their_spans(jaeger_server, redis_server, sqlite_url):
    bases = workload_on(
        jaeger_server,
        redis_sql_stores(redis_server.url, sqlite_url),
        trace_redis="false",
        trace_sqlalchemy="false",
    )
    tree = trace_of(jaeger_server, bases["create"], 2)
    assert tree.db("redis") == [] and tree.db("sqlite") == []
    assert tree.named("QueueController.create") or tree.named("Queue.create")
    post = trace_of(jaeger_server, bases["post"], 2)
    assert post.db("redis") == []
    assert post.named("MessageController.post")


def test_store_flags_false_does_not_crash_zaqar(jaeger_server, redis_server, sqlite_url):
    bases = workload_on(
        jaeger_server,
        redis_sql_stores(redis_server.url, sqlite_url),
        trace_message_store="false",
        trace_management_store="false",
    )
    tree = trace_of(jaeger_server, bases["post"], 2)
    root = assert_one_connected_tree(tree)
    assert root["operationName"] == "POST /v2/queues/{queue_name}/messages"
    assert not tree.named("controller")
    assert tree.db("redis")  # trace_redis is still on


def test_enabled_false_exports_nothing(jaeger_server, redis_server, sqlite_url):
    server = start_server(
        jaeger_server, redis_sql_stores(redis_server.url, sqlite_url), enabled="false"
    )
    try:
        bases = workload(server.url)
        with zs.profiled() as base:
            zs.client(server.url).queue(zs.fresh_queue_name(), force_create=True)
    finally:
        server.close()  # it would have flushed its spans by now
    control = jaeger_server.send_control_span()  # the same way in, after them
    traces = [*[v for k, v in bases.items() if k != "queue"], base]
    assert_absent_after_control(jaeger_server, control, traces)


def test_trace_wsgi_transport_false_traces_no_request(jaeger_server, redis_server, sqlite_url):
    """As the option's help says, on every release (Zaqar 22 and 23 traced anyway)."""
    server = start_server(
        jaeger_server,
        redis_sql_stores(redis_server.url, sqlite_url),
        trace_wsgi_transport="false",
    )
    try:
        bases = workload(server.url)
    finally:
        server.close()  # SIGTERM flushes what the server had to export
    control = jaeger_server.send_control_span()  # the same way in, after them
    traced = [v for k, v in bases.items() if k != "queue"]
    assert_absent_after_control(jaeger_server, control, traced)


def test_postgresql_management_store(jaeger_server, redis_server, postgres_server):
    url = postgres_server.create_database("zaqar_e2e")
    zs.create_management_tables(url)
    bases = workload_on(jaeger_server, redis_sql_stores(redis_server.url, url))
    tree = trace_of(jaeger_server, bases["create"], 3)
    assert_one_connected_tree(tree)
    assert tree.db("postgresql"), [s["operationName"] for s in tree.spans]


def mongodb_stores(mongo_url: str) -> dict[str, dict[str, str]]:
    """Both stores on MongoDB (FerretDB: start with ``launcher="ferretdb"``)."""
    uri = f"{mongo_url}?serverSelectionTimeoutMS=5000"
    return {
        "drivers": {"message_store": "mongodb", "management_store": "mongodb"},
        "drivers:message_store:mongodb": {"uri": uri, "database": "zaqar_e2e", "partitions": "2"},
        "drivers:management_store:mongodb": {"uri": uri, "database": "zaqar_e2e_mgmt"},
    }


def test_mongodb_wire_protocol_for_both_stores(jaeger_server, ferretdb_server):
    stores = mongodb_stores(ferretdb_server.url)
    server = start_server(jaeger_server, stores, launcher="ferretdb")
    try:
        cli = zs.client(server.url)
        name = zs.fresh_queue_name()
        with zs.profiled() as create:
            queue = cli.queue(name, force_create=True)
        with zs.profiled() as post:
            queue.post([{"body": {"n": i}, "ttl": 300} for i in range(2)])
        with zs.profiled() as listed:
            assert len(list(queue.messages(echo=True))) == 2
    finally:
        server.close()
    for base in (create, post, listed):
        tree = trace_of(jaeger_server, base, 3)
        root = assert_one_connected_tree(tree)
        mongo = tree.db("mongodb")
        assert mongo, [s["operationName"] for s in tree.spans]
        # every command under a storage span, those of Zaqar's lazy cursors too
        # (they run while the WSGI layer consumes what the controller returned)
        for span in mongo:
            assert tree.parent(span) is not root, span["operationName"]
            assert any("controller" in a["operationName"] for a in tree.ancestors(span))


def test_opentelemetry_instrument_launcher(jaeger_server, redis_server, sqlite_url):
    opts = dict(zs.PROFILER_ON)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger_server.otlp_http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "zaqar-instrumented",
    }
    server = zs.ZaqarServer(
        redis_sql_stores(redis_server.url, sqlite_url),
        opts,
        env,
        launcher="opentelemetry-instrument",
    ).start()
    try:
        bases = workload(server.url)
    finally:
        server.close()
    answer = jaeger_server.wait_for_trace(ids.trace_hex(bases["post"]), 3, timeout=30)
    tree = Tree(jaeger_server.trace_spans(answer))
    root = assert_one_connected_tree(tree)
    assert root["operationName"] == "POST /v2/queues/{queue_name}/messages"
    assert tree.db("redis")
    [process] = {p["serviceName"] for t in answer["data"] for p in t["processes"].values()}
    assert process == "zaqar-instrumented"


def _pooled_server(jaeger: Any, redis_url: str, sql_url: str, **opts: str) -> zs.ZaqarServer:
    stores = redis_sql_stores(redis_url, sql_url)
    stores["DEFAULT"] = {"pooling": "true", "admin_mode": "true"}
    server = start_server(jaeger, stores, **opts)
    admin = {"Client-ID": CLIENT_ID, "X-Project-ID": "admin", "X-Roles": "admin"}
    for index in (1, 2):
        response = requests.put(
            f"{server.url}/v2/pools/pool{index}",
            json={
                "uri": f"{redis_url}?dbid={index}&socket_timeout=5",
                "weight": 100,
                "options": {},
            },
            headers=admin,
            timeout=10,
        )
        assert response.status_code == 201, response.text
    return server


@pytest.mark.parametrize("trace_pooling", ["true", "false"])
def test_pooling_with_two_pools(jaeger_server, redis_server, tmp_path, trace_pooling):
    sql_url = f"sqlite:///{tmp_path / 'pooled.db'}"
    zs.create_management_tables(sql_url)
    server = _pooled_server(jaeger_server, redis_server.url, sql_url, trace_pooling=trace_pooling)
    try:
        posts = []
        for _ in range(4):
            queue = zs.client(server.url).queue(zs.fresh_queue_name(), force_create=True)
            with zs.profiled() as base:
                queue.post([{"body": {"n": 1}, "ttl": 300}])
            posts.append(base)
    finally:
        server.close()
    for base in posts:
        tree = trace_of(jaeger_server, base, 3)
        root = assert_one_connected_tree(tree)
        assert root["operationName"] == "POST /v2/queues/{queue_name}/messages"
        assert tree.db("redis")
        pooling = [s for s in tree.spans if s["operationName"].startswith("pooling_")]
        if trace_pooling == "true":
            assert tree.named("pooling_message_controller")
            assert tree.named("pooling_catalogue_controller")
        else:
            assert pooling == []


def test_wsgi_application_under_forking_gunicorn_workers(jaeger_server, redis_server, sqlite_url):
    server = start_server(
        jaeger_server, redis_sql_stores(redis_server.url, sqlite_url), launcher="gunicorn"
    )
    try:
        bases = [workload(server.url) for _ in range(3)]  # spread over both workers
    finally:
        server.close()  # SIGTERM: workers exit gracefully and flush
    for base in bases:
        tree = trace_of(jaeger_server, base["post"], 3)
        root = assert_one_connected_tree(tree)
        assert root["operationName"] == "POST /v2/queues/{queue_name}/messages"
        assert tree.db("redis")
