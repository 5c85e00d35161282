"""What an operator sees is right, safe and clear: a real zaqar-server, every exported span.

The workload (create, post with a unique body marker, list, get, claim, get claim,
update claim, delete with the claim id, release, get of a deleted message = 404) runs
against Redis + SQLite and against FerretDB (MongoDB wire protocol). Each server
exports under its own service name, so "every span" is every span Jaeger holds for
it: names, attributes, events and the resource (Jaeger's process).
"""

from __future__ import annotations

import ast
import itertools
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client
import requests

from tests import zaqar_server as zs
from tests.servers import RedisServer
from tests.waiting import wait_until
from tests.zaqar.test_server import redis_sql_stores, tags
from zaqar_otel.bridge import ids

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]

STORES = ["redis-sqlite", "ferretdb"]


def deprecated_attribute_keys() -> frozenset[str]:
    """Every attribute key the installed semantic conventions mark ``Deprecated:``."""
    from opentelemetry.semconv._incubating import attributes

    keys = set()
    for path in Path(attributes.__path__[0]).glob("*_attributes.py"):
        body = ast.parse(path.read_text()).body
        for node, doc in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.value, ast.Constant)
                and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant)
                and str(doc.value.value).strip().startswith("Deprecated:")
            ):
                keys.add(node.value.value)
    return frozenset(keys)


DEPRECATED = deprecated_attribute_keys()


# -- the workload and what Jaeger holds of it


@dataclass
class Run:
    service: str
    marker: str
    bases: dict[str, str] = field(default_factory=dict)
    claim_id: str = ""
    message_ids: list[str] = field(default_factory=list)
    queue: str = ""
    traces: list[dict[str, Any]] = field(default_factory=list)  # Jaeger v1 trace objects

    def spans(self) -> list[dict[str, Any]]:
        return [span for trace in self.traces for span in trace["spans"]]

    def trace(self, operation: str) -> dict[str, Any]:
        trace_hex = ids.trace_hex(self.bases[operation])
        [found] = [t for t in self.traces if t["traceID"].rjust(32, "0") == trace_hex]
        return found

    def text(self) -> str:
        """Everything exported: span names, tags, events (logs), processes (resource)."""
        return json.dumps(self.traces)


def workload(url: str, run: Run) -> None:
    cli = zs.client(url)
    run.queue = zs.fresh_queue_name()
    with zs.profiled() as run.bases["create"]:
        queue = cli.queue(run.queue, force_create=True)
    with zs.profiled() as run.bases["post"]:
        queue.post([{"body": {"text": f"{run.marker} {i}"}, "ttl": 300} for i in range(3)])
    with zs.profiled() as run.bases["list"]:
        listed = list(queue.messages(echo=True))
    assert sorted(m.body["text"] for m in listed) == [f"{run.marker} {i}" for i in range(3)]
    with zs.profiled() as run.bases["get"]:
        assert queue.message(listed[0].id).body["text"].startswith(run.marker)
    with zs.profiled() as run.bases["claim"]:
        claim = queue.claim(ttl=60, grace=60, limit=2)
        claimed = list(claim)
    assert len(claimed) == 2 and claim.id
    run.claim_id = claim.id
    run.message_ids = [m.id for m in listed]
    with zs.profiled() as run.bases["get_claim"]:
        queue.claim(id=claim.id)._get()
    with zs.profiled() as run.bases["update_claim"]:
        claim.update(ttl=120)
    with zs.profiled() as run.bases["delete"]:
        claimed[0].delete()  # DELETE .../messages/{id}?claim_id=...
    with zs.profiled() as run.bases["release"]:
        claim.delete()
    with zs.profiled() as run.bases["get_deleted"]:
        with pytest.raises(Exception, match=r"does not exist|not found|404"):
            queue.message(claimed[0].id)


def ferretdb_stores(url: str, name: str) -> dict[str, dict[str, str]]:
    uri = f"{url}?serverSelectionTimeoutMS=5000"
    return {
        "drivers": {"message_store": "mongodb", "management_store": "mongodb"},
        "drivers:message_store:mongodb": {"uri": uri, "database": name, "partitions": "2"},
        "drivers:management_store:mongodb": {"uri": uri, "database": f"{name}_mgmt"},
    }


def stores_for(store: str, request: pytest.FixtureRequest, tmp: Path) -> tuple[dict, str]:
    if store == "ferretdb":
        ferretdb = request.getfixturevalue("ferretdb_server")
        return ferretdb_stores(ferretdb.url, f"clean_{uuid.uuid4().hex[:8]}"), "ferretdb"
    redis = request.getfixturevalue("redis_server")
    # a fresh script cache: Zaqar's first EVALSHA answers NOSCRIPT (the session's
    # Redis may have the scripts from earlier tests)
    redis_client.Redis.from_url(redis.url).script_flush()
    sql_url = f"sqlite:///{tmp / 'zaqar.db'}"
    zs.create_management_tables(sql_url)
    return redis_sql_stores(redis.url, sql_url), "zaqar-otel-server"


def run_workload(
    jaeger: Any,
    stores: dict[str, Any],
    launcher: str = "zaqar-otel-server",
    env: dict[str, str] | None = None,
    **profiler_opts: str,
) -> Run:
    """A fresh server (own service name), the workload, stop (flushes), read Jaeger."""
    run = Run(service=f"zaqar-clean-{uuid.uuid4().hex[:8]}", marker=f"MARK{uuid.uuid4().hex}")
    server_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": run.service,
        **(env or {}),
    }
    opts = {**zs.PROFILER_ON, **profiler_opts}
    server = zs.ZaqarServer(stores, opts, server_env, launcher).start()
    try:
        workload(server.url, run)
    finally:
        server.close()
    for base in run.bases.values():
        complete_trace(jaeger, base)
    run.traces = service_traces(jaeger, run.service)
    found = {t["traceID"].rjust(32, "0") for t in run.traces}
    # every profiled call is one trace, and nothing else was exported
    assert found == {ids.trace_hex(b) for b in run.bases.values()}
    return run


def complete_trace(jaeger: Any, base: str, timeout: float = 30) -> list[dict[str, Any]]:
    """The spans of a trace once it is whole: one root, every parent among its spans.

    The root ends last and is exported last: a trace is read only once it arrived.
    """

    def whole() -> list[dict[str, Any]] | None:
        spans = jaeger.trace_spans(jaeger.get_trace(ids.trace_hex(base)))
        have = {s["spanID"] for s in spans}
        # CHILD_OF: the parent; FOLLOWS_FROM: a span link (a claim's to the post of a message)
        parents = [
            r["spanID"]
            for s in spans
            for r in s.get("references", [])
            if r["refType"] == "CHILD_OF"
        ]
        roots = [
            s
            for s in spans
            if not any(r["refType"] == "CHILD_OF" for r in s.get("references") or [])
        ]
        return spans if len(roots) == 1 and len(spans) > 1 and set(parents) <= have else None

    return wait_until(whole, f"trace {base} whole", timeout)


def service_traces(jaeger: Any, service: str) -> list[dict[str, Any]]:
    answer = requests.get(
        f"{jaeger.query_url}/api/traces",
        params={"service": service, "limit": 1000, "lookback": "1h"},
        timeout=10,
    )
    answer.raise_for_status()
    traces: list[dict[str, Any]] = answer.json()["data"]
    return traces


@pytest.fixture(scope="module", params=STORES)
def default_run(
    request: pytest.FixtureRequest, jaeger_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Run]]:
    """The workload once per store with the default [profiler] flags (all tracing on)."""
    stores, launcher = stores_for(request.param, request, tmp_path_factory.mktemp("clean"))
    yield request.param, run_workload(jaeger_server, stores, launcher)


def error_spans(run: Run) -> list[str]:
    return [
        f"{s['operationName']}: {tags(s).get('otel.status_description')}"
        for s in run.spans()
        if tags(s).get("error") is True or tags(s).get("otel.status_code") == "ERROR"
    ]


def events(span: dict[str, Any]) -> list[dict[str, Any]]:
    return [{f["key"]: f["value"] for f in log["fields"]} for log in span.get("logs", [])]


# -- 1. content never leaves by default


def test_message_bodies_leave_nowhere_by_default(default_run):
    _, run = default_run
    post = run.trace("post")
    [controller] = [s for s in post["spans"] if s["operationName"].endswith("Controller.post")]
    assert tags(controller)["code.function.name"].endswith("MessageController.post")
    assert run.marker not in run.text()
    for span in run.spans():
        assert not any(key.startswith("osprofiler.function.") for key in tags(span))
        assert not any(key.endswith(".result") for key in tags(span))


def test_no_claim_id_anywhere_but_queue_count_and_message_ids_stay(default_run):
    _, run = default_run
    assert run.claim_id not in run.text()
    paths = [tags(s).get("url.path", "") for s in run.spans()]
    claim_paths = [p for p in paths if "/claims/" in p]
    assert claim_paths and all(p.endswith("/claims/REDACTED") for p in claim_paths)
    [delete] = [s for s in run.trace("delete")["spans"] if tags(s).get("span.kind") == "server"]
    assert tags(delete)["url.query"] == "claim_id=REDACTED"
    assert any(m in tags(delete)["url.path"] for m in run.message_ids)  # message ids stay
    post_root = next(s for s in run.trace("post")["spans"] if tags(s)["span.kind"] == "server")
    assert tags(post_root)["messaging.destination.name"] == run.queue
    assert tags(post_root)["messaging.batch.message_count"] == 3


# -- 2. a healthy workload shows no error


def test_a_healthy_workload_has_zero_error_spans(default_run):
    _, run = default_run
    assert error_spans(run) == []
    # the 404 is there: an answer, recorded as an exception event on the controller
    missing = run.trace("get_deleted")["spans"]
    [root] = [s for s in missing if tags(s)["span.kind"] == "server"]
    assert tags(root)["http.response.status_code"] == 404
    [controller] = [s for s in missing if s["operationName"].endswith("MessageController.get")]
    [event] = events(controller)
    assert event["event"] == "exception"
    assert event["exception.type"] == "zaqar.storage.errors.MessageDoesNotExist"
    assert "exception.message" not in event  # it names what was looked for


@pytest.mark.parametrize("default_run", ["redis-sqlite"], indirect=True)
def test_redis_noscript_is_an_expected_answer_not_an_error(default_run):
    _, run = default_run
    evalsha = [s for s in run.spans() if s["operationName"].startswith("EVALSHA")]
    noscript = [s for s in evalsha if tags(s).get("db.response.status_code") == "NOSCRIPT"]
    assert noscript, [s["operationName"] for s in run.spans()]
    for span in noscript:
        assert "error" not in tags(span)
        assert [e["event"] for e in events(span)] == ["expected database response"]
    assert {s["operationName"] for s in evalsha} <= {
        "EVALSHA claim_messages",
        "EVALSHA index_messages",
    }


# -- 3. one vocabulary


def test_no_deprecated_attribute_key_on_any_span_event_or_resource(default_run):
    store, run = default_run
    assert {"db.statement", "db.system", "net.peer.name", "http.method"} <= DEPRECATED
    used = set()
    for trace in run.traces:
        for span in trace["spans"]:
            used |= set(tags(span)) | {k for e in events(span) for k in e}
        for process in trace["processes"].values():
            used |= {t["key"] for t in process["tags"]}
    assert sorted(used & DEPRECATED) == []
    db_spans = [s for s in run.spans() if "db.system.name" in tags(s)]
    expected_system = {"redis-sqlite": {"redis", "sqlite"}, "ferretdb": {"mongodb"}}[store]
    assert {tags(s)["db.system.name"] for s in db_spans} == expected_system
    assert all("db.query.text" in tags(s) or s["operationName"] == "connect" for s in db_spans)


# -- 4. names a reader understands


ROUTE_NAME = re.compile(r"^[A-Z]+ /v2(/[\w{}]+)*$")


def test_span_names_hold_no_paths_and_say_what_ran(default_run):
    store, run = default_run
    names = {s["operationName"] for s in run.spans()}
    for name in names:
        assert "/" not in name or ROUTE_NAME.match(name), name
    if store == "redis-sqlite":
        assert 'SELECT "Queues"' in names and 'INSERT "Queues"' in names
        assert not any(" HMSET EXPIRE" in n or n.startswith("HMSET EXPIRE") for n in names)
        [post_pipeline] = [
            s
            for s in run.trace("post")["spans"]
            if tags(s).get("db.operation.batch.size") and "HMSET" in tags(s)["db.query.text"]
        ]
        assert post_pipeline["operationName"] == "MULTI"  # redis-py: MULTI/EXEC by default
        # per message HMSET, EXPIRE and HSET otel (its creation context, link_messages)
        assert tags(post_pipeline)["db.operation.batch.size"] == 9
    else:
        assert "insert messages" in names and "find queues" in names


def test_host_and_process_are_in_the_resource_not_on_spans(default_run):
    _, run = default_run
    for trace in run.traces:
        [process] = trace["processes"].values()
        resource = {t["key"]: t["value"] for t in process["tags"]}
        assert process["serviceName"] == run.service
        assert resource["host.name"]
        assert isinstance(resource["process.pid"], int)
    assert not [s["operationName"] for s in run.spans() if "host.name" in tags(s)]


# -- the operator's choices win


@pytest.mark.parametrize("store", STORES)
def test_trace_message_content_lets_bodies_and_claim_ids_out(
    store, request, jaeger_server, tmp_path
):
    stores, launcher = stores_for(store, request, tmp_path)
    run = run_workload(jaeger_server, stores, launcher, trace_message_content="true")
    post = run.trace("post")
    [controller] = [s for s in post["spans"] if s["operationName"].endswith("Controller.post")]
    assert run.marker in tags(controller)["osprofiler.function.kwargs"]
    assert run.claim_id in run.text()
    assert error_spans(run) == []


def test_database_dup_opt_in_keeps_both_vocabularies(request, jaeger_server, tmp_path):
    stores, _ = stores_for("redis-sqlite", request, tmp_path)
    run = run_workload(jaeger_server, stores, env={"OTEL_SEMCONV_STABILITY_OPT_IN": "database/dup"})
    redis_spans = [s for s in run.spans() if tags(s).get("db.system.name") == "redis"]
    assert redis_spans
    for span in redis_spans:
        assert tags(span)["db.system"] == "redis"
        assert tags(span)["db.statement"] == tags(span)["db.query.text"]


# -- real failures stay errors


def test_redis_down_is_an_error_on_every_span_that_failed(jaeger_server, tmp_path):
    sql_url = f"sqlite:///{tmp_path / 'zaqar.db'}"
    zs.create_management_tables(sql_url)
    service = f"zaqar-down-{uuid.uuid4().hex[:8]}"
    with RedisServer() as redis:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger_server.otlp_http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": service,
        }
        stores = redis_sql_stores(redis.url, sql_url)
        retries = {"max_reconnect_attempts": "2", "reconnect_sleep": "0.1"}
        stores["drivers:message_store:redis"].update(retries)
        server = zs.ZaqarServer(stores, zs.PROFILER_ON, env).start()
        try:
            queue = zs.client(server.url).queue(zs.fresh_queue_name(), force_create=True)
            redis.stop()
            with zs.profiled() as base, pytest.raises(Exception):  # noqa: B017 (a 503)
                queue.post([{"body": {"text": "x"}, "ttl": 300}])
        finally:
            server.close()
    spans = complete_trace(jaeger_server, base)
    failed = {s["operationName"]: tags(s) for s in spans if tags(s).get("error") is True}
    assert "POST /v2/queues/{queue_name}/messages" in failed, [
        (s["operationName"], tags(s)) for s in spans
    ]
    root = failed.pop("POST /v2/queues/{queue_name}/messages")
    assert root["http.response.status_code"] == 503 and root["error.type"] == "503"
    [controller] = [t for n, t in failed.items() if n.endswith("MessageController.post")]
    assert controller["error.type"] == "zaqar.storage.errors.ConnectionError"
    redis_failed = [t for t in failed.values() if t.get("db.system.name") == "redis"]
    assert redis_failed and all("ConnectionError" in t["error.type"] for t in redis_failed)


# -- under opentelemetry-instrument: the operator's provider and resource


DISTRO_ENV = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
}


@pytest.mark.parametrize("detectors", ["", "host,process"])
def test_opentelemetry_instrument_keeps_the_operators_resource(
    request, jaeger_server, tmp_path, detectors
):
    stores, _ = stores_for("redis-sqlite", request, tmp_path)
    env = {**DISTRO_ENV, "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": detectors}
    run = run_workload(jaeger_server, stores, "opentelemetry-instrument", env=env)
    assert error_spans(run) == []
    assert run.marker not in run.text() and run.claim_id not in run.text()
    bridge_spans = [s for s in run.spans() if tags(s).get("otel.scope.name") == "zaqar_otel"]
    resources = [
        {t["key"]: t["value"] for t in p["tags"]}
        for trace in run.traces
        for p in trace["processes"].values()
    ]
    if detectors:  # the operator put the host in the resource: not repeated on spans
        assert all(r["host.name"] for r in resources)
        assert not [s for s in bridge_spans if "host.name" in tags(s)]
    else:  # the distro's resource has no host: the bridge's spans say where they ran
        assert not any("host.name" in r for r in resources)
        assert all(tags(s)["host.name"] for s in bridge_spans)
    used = {k for s in run.spans() for k in tags(s)}
    assert sorted(used & DEPRECATED) == []
