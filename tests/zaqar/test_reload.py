"""[profiler] flags changed at run time: edit zaqar.conf, SIGHUP, no restart."""

from __future__ import annotations

import signal

import pytest

from tests import zaqar_server as zs
from tests.waiting import wait_for_log
from tests.zaqar.test_server import redis_sql_stores, start_server, trace_of

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]
RELOADED = "zaqar-otel: [profiler] reloaded"


def _post(server: zs.ZaqarServer) -> str:
    queue = zs.client(server.url).queue(zs.fresh_queue_name(), force_create=True)
    with zs.profiled() as base:
        queue.post([{"body": 1, "ttl": 300}])
    return base


def _reload(server: zs.ZaqarServer, conf_text: str) -> None:
    """Write zaqar.conf, SIGHUP, and wait for the bridge to say it re-read it."""
    server.conf_path.write_text(conf_text)
    offset = server.log_size()
    server.send_signal(signal.SIGHUP)
    wait_for_log(server, RELOADED, offset)
    assert server.running  # reloaded, not killed


def test_sighup_applies_changed_backend_flags(jaeger_server, redis_server, tmp_path):
    sql = zs.create_management_tables(f"sqlite:///{tmp_path / 'reload.db'}")
    server = start_server(
        jaeger_server, redis_sql_stores(redis_server.url, sql), trace_redis="false"
    )
    try:
        before = _post(server)
        text = server.conf_path.read_text()
        _reload(server, text.replace("trace_redis = false", "trace_redis = true"))
        after = _post(server)
        _reload(server, text)  # and back off
        off_again = _post(server)
    finally:
        server.close()
    assert trace_of(jaeger_server, before, 2).db("redis") == []
    assert trace_of(jaeger_server, after, 3).db("redis")
    assert trace_of(jaeger_server, off_again, 2).db("redis") == []
