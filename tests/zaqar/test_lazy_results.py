"""Lazy storage results (Redis generators, MongoDB cursors) are consumed inside their span.

A real zaqar-server per store (Redis + SQLite; FerretDB for both stores), python-zaqarclient
as the caller, Jaeger as the oracle: the DB spans of list and claim, which Zaqar runs
while its WSGI layer consumes what the controller returned, are descendants of the
controller span and inside its time; afterwards no span is left open.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests import zaqar_server as zs
from tests.zaqar.test_server import (
    Tree,
    assert_one_connected_tree,
    mongodb_stores,
    redis_sql_stores,
    start_server,
    tags,
    trace_of,
)

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]

CONTROLLERS = {"list": "MessageController.list", "claim": "ClaimController.create"}


@pytest.fixture(params=["redis", "mongodb"])
def store_server(request, jaeger_server, tmp_path) -> Any:
    if request.param == "redis":
        sql = f"sqlite:///{tmp_path / 'lazy.db'}"
        zs.create_management_tables(sql)
        redis_url = request.getfixturevalue("redis_server").url
        server = start_server(jaeger_server, redis_sql_stores(redis_url, sql), launcher="status")
    else:
        ferretdb = request.getfixturevalue("ferretdb_server")
        server = start_server(jaeger_server, mongodb_stores(ferretdb.url), launcher="ferretdb")
    yield server
    server.close()


def list_and_claim(url: str) -> dict[str, str]:
    queue = zs.client(url).queue(zs.fresh_queue_name(), force_create=True)
    queue.post([{"body": {"n": i}, "ttl": 300} for i in range(3)])
    bases: dict[str, str] = {}
    with zs.profiled() as bases["list"]:
        assert len(list(queue.messages(echo=True))) == 3
    with zs.profiled() as bases["claim"]:
        assert len(list(queue.claim(ttl=60, grace=60, limit=2))) == 2
    return bases


def db_spans(tree: Tree) -> list[dict[str, Any]]:
    return [s for s in tree.spans if tags(s).get("db.system") or tags(s).get("db.system.name")]


def assert_db_work_inside(tree: Tree, controller_name: str) -> None:
    root = assert_one_connected_tree(tree)
    [controller] = tree.named(controller_name)
    start, end = controller["startTime"], controller["startTime"] + controller["duration"]
    # the call's DB work: every DB span that starts once the controller was called
    later = [s for s in db_spans(tree) if s["startTime"] >= start]
    assert later, [s["operationName"] for s in tree.spans]
    for span in later:
        name = span["operationName"]
        under = any(a is controller for a in tree.ancestors(span))
        assert under, f"{name} is not under {controller_name}"
        assert tree.parent(span) is not root, f"{name} hangs under the SERVER span"
        assert start <= span["startTime"] and span["startTime"] + span["duration"] <= end, name


def test_list_and_claim_db_spans_are_inside_their_controller_span(store_server, jaeger_server):
    bases = list_and_claim(store_server.url)
    for call, controller in CONTROLLERS.items():
        assert_db_work_inside(trace_of(jaeger_server, bases[call], 4), controller)
    assert store_server.status()["open_spans"] == 0


def test_a_listing_left_unconsumed_still_ends_its_span(store_server, jaeger_server):
    # an empty queue: Zaqar never asks the listing for its marker (a generator left
    # suspended, dropped at the end of the request)
    queue = zs.client(store_server.url).queue(zs.fresh_queue_name(), force_create=True)
    with zs.profiled() as base:
        assert list(queue.messages()) == []
    assert_db_work_inside(trace_of(jaeger_server, base, 3), CONTROLLERS["list"])
    assert store_server.status()["open_spans"] == 0
