"""``zaqar-otel trace show --message QUEUE/ID`` against a real zaqar-server and Jaeger."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests import messaging as m
from tests import zaqar_server as zs
from tests.waiting import wait_for_control
from tests.zaqar.test_server import redis_sql_stores, start_server
from zaqar_otel.bridge import ids
from zaqar_otel.lookup.jaeger import JaegerQuery

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]


@pytest.fixture(scope="module")
def zaqar(jaeger_server, redis_server, tmp_path_factory) -> Iterator[zs.ZaqarServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('lookup') / 'zaqar.db'}"
    zs.create_management_tables(url)
    server = start_server(jaeger_server, redis_sql_stores(redis_server.url, url))
    yield server
    server.close()


def signed(method: str, url: str, **kwargs: Any) -> requests.Response:
    from osprofiler import web

    headers = {**m.headers(), **web.get_trace_id_headers()}
    return requests.request(method, url, headers=headers, timeout=10, **kwargs)


def wait_spans(jaeger: Any, base: str, count: int) -> None:
    JaegerQuery(jaeger.query_url).wait_for_trace(base, count, timeout=30)


def show(jaeger: Any, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(m.BIN / "zaqar-otel"), "trace", "show", "--jaeger", jaeger.query_url, *args]
    return subprocess.run(command, capture_output=True, text=True, env=m.clean_env(), timeout=60)


@pytest.fixture(scope="module")
def history(zaqar, jaeger_server) -> dict[str, str]:
    """One queue's messages and the profiled operations on them: {name: id or base id}."""
    queue = zs.fresh_queue_name()
    m.create_queue(zaqar.url, queue)
    seen: dict[str, str] = {"queue": queue}
    with zs.profiled() as seen["post_batch"]:
        seen["p1"], seen["p2"] = m.post(zaqar.url, queue, [{"n": 1}, {"n": 2}])
    with zs.profiled() as seen["post_one"]:
        [seen["single"]] = m.post(zaqar.url, queue, [{"n": 3}])
    [seen["untraced"]] = m.post(zaqar.url, queue, [{"n": 4}])
    messages = f"{zaqar.url}/v2/queues/{queue}/messages"
    with zs.profiled() as seen["claim"]:
        answer = signed("POST", f"{zaqar.url}/v2/queues/{queue}/claims?limit=2", json={"ttl": 60})
    assert answer.status_code == 201
    claim_id = answer.headers["Location"].rsplit("/", 1)[-1]
    with zs.profiled() as seen["get"]:
        assert signed("GET", f"{messages}/{seen['single']}").status_code == 200
    with zs.profiled() as seen["get_untraced"]:
        assert signed("GET", f"{messages}?ids={seen['untraced']}").status_code == 200
    with zs.profiled() as seen["delete"]:
        answer = signed("DELETE", f"{messages}/{seen['p1']}?claim_id={claim_id}")
    assert answer.status_code == 204
    for name, spans in (("post_batch", 5), ("claim", 3), ("get", 2), ("delete", 2)):
        wait_spans(jaeger_server, seen[name], spans)
    wait_spans(jaeger_server, seen["get_untraced"], 2)
    with zs.profiled() as control:  # after them, by the same server: the last batch is in
        zs.client(zaqar.url, m.PROJECT).queue(zs.fresh_queue_name(), force_create=True)
    wait_for_control(jaeger_server, control)
    return seen


def test_a_batch_posted_message_its_claim_and_its_delete(history, jaeger_server):
    done = show(jaeger_server, "--message", f"{history['queue']}/{history['p1']}", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert [r["trace_id"] for r in found["posted"]] == [ids.trace_hex(history["post_batch"])]
    assert found["posted"][0]["name"] == f"create {history['queue']}"
    [claim] = found["received"]
    assert claim["trace_id"] == ids.trace_hex(history["claim"])
    assert (claim["operation"], claim["linked"]) == ("claim", True)
    [delete] = found["settled"]
    assert delete["trace_id"] == ids.trace_hex(history["delete"])


def test_a_single_posted_message_and_its_get(history, jaeger_server):
    done = show(jaeger_server, "--message", f"{history['queue']}/{history['single']}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"message {history['queue']}/{history['single']}"
    posted = [line for line in lines if line.startswith("posted by:")]
    received = [line for line in lines if line.startswith("received by:")]
    assert len(posted) == 1 and ids.trace_hex(history["post_one"]) in posted[0]
    assert "POST /v2/queues/{queue_name}/messages" in posted[0]
    assert len(received) == 1 and ids.trace_hex(history["get"]) in received[0]
    assert received[0].endswith("(links to the post)")


def test_a_message_posted_untraced_is_found_by_its_receive(history, jaeger_server):
    done = show(jaeger_server, "--message", f"{history['queue']}/{history['untraced']}")
    assert done.returncode == 0, done.stderr
    assert "posted by:    no trace" in done.stdout
    [received] = [line for line in done.stdout.splitlines() if line.startswith("received by:")]
    assert ids.trace_hex(history["get_untraced"]) in received
    assert "links to the post" not in received


def test_unknown_message_and_bad_arguments(history, jaeger_server):
    unknown = show(jaeger_server, "--message", f"{history['queue']}/no-such-message")
    assert unknown.returncode == 1
    assert "no trace of message" in unknown.stderr
    assert show(jaeger_server, "--message", "no-slash").returncode == 2
    both = show(jaeger_server, "--message", "q/1", ids.trace_hex(history["claim"]))
    assert both.returncode == 2 and "either a trace ID or --message" in both.stderr
