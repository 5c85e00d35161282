"""MongoDB spans under ``opentelemetry-instrument``: gated, and trace_db_statements live.

The distro instruments pymongo before Zaqar starts, with the global (ungated)
provider, and pymongo's instrumentation keeps one command listener per process.
A real ``opentelemetry-instrument zaqar-server`` with both stores on FerretDB
must still export MongoDB spans only inside profiled requests, nested, and a
SIGHUP flip of ``trace_db_statements`` must change what they carry.
"""

from __future__ import annotations

import signal
import uuid
from typing import Any

import pytest

from tests import zaqar_server as zs
from tests.zaqar.test_server import (
    Tree,
    assert_one_connected_tree,
    mongodb_stores,
    tags,
    trace_of,
)
from zaqar_otel.bridge import ids
from zaqar_otel.lookup.jaeger import JaegerQuery

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]
STATEMENT_KEYS = ("db.statement", "db.query.text")


def unprofiled_traffic(queue: Any) -> None:
    """create, post, list, claim: MongoDB commands on both stores, nothing signed."""
    queue.post([{"body": {"n": i}, "ttl": 300} for i in range(2)])
    assert len(list(queue.messages(echo=True))) >= 2
    list(queue.claim(ttl=60, grace=60, limit=1))


def profiled_list(jaeger: Any, queue: Any) -> Tree:
    """A profiled listing; its trace (waited for) is also the control for what came before."""
    with zs.profiled() as base:
        list(queue.messages(echo=True))
    tree = trace_of(jaeger, base, 4)
    assert_one_connected_tree(tree)
    mongo = tree.db("mongodb")
    assert mongo, [s["operationName"] for s in tree.spans]
    for span in mongo:
        assert any("controller" in a["operationName"] for a in tree.ancestors(span))
    return tree


def statements(tree: Tree) -> list[str]:
    found = []
    for span in tree.db("mongodb"):
        span_tags = tags(span)
        found += [str(span_tags[key]) for key in STATEMENT_KEYS if key in span_tags]
    return found


def test_mongodb_spans_are_gated_and_follow_trace_db_statements(jaeger_server, ferretdb_server):
    service = f"zaqar-gate-{uuid.uuid4().hex[:8]}"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger_server.otlp_http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": service,
    }
    opts = {**zs.PROFILER_ON, "trace_db_statements": "false"}
    stores = mongodb_stores(ferretdb_server.url)
    launcher = "opentelemetry-instrument:ferretdb"  # stock zaqar-server under the distro
    server = zs.ZaqarServer(stores, opts, env, launcher=launcher).start()
    try:
        queue = zs.client(server.url).queue(zs.fresh_queue_name(), force_create=True)
        unprofiled_traffic(queue)
        without_values = profiled_list(jaeger_server, queue)
        text = server.conf_path.read_text()
        server.conf_path.write_text(
            text.replace("trace_db_statements = false", "trace_db_statements = true")
        )
        server.send_signal(signal.SIGHUP)
        server.wait_for_log("[profiler] reloaded")
        unprofiled_traffic(queue)
        with_values = profiled_list(jaeger_server, queue)
    finally:
        server.close()
    # nothing but the two profiled requests reached Jaeger: no root MongoDB spans
    found = JaegerQuery(jaeger_server.query_url).find_traces(service, limit=1000)
    expected = {ids.trace_hex(t.spans[0]["traceID"]) for t in (without_values, with_values)}
    assert set(found) == expected, {t: [s.name for s in found[t]] for t in set(found) - expected}
    # statements: the command alone, then with its (filter) values after the SIGHUP
    assert statements(without_values) and all("{" not in s for s in statements(without_values))
    assert any("{" in s for s in statements(with_values)), statements(with_values)
