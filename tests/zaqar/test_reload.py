"""[profiler] flags changed at run time: edit zaqar.conf, SIGHUP, no restart."""

from __future__ import annotations

import signal
import time

import pytest

from tests import zaqar_server as zs
from tests.zaqar.test_server import redis_sql_stores, start_server, trace_of

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]


def _post(server: zs.ZaqarServer) -> str:
    queue = zs.client(server.url).queue(zs.fresh_queue_name(), force_create=True)
    with zs.profiled() as base:
        queue.post([{"body": 1, "ttl": 300}])
    return base


def test_sighup_applies_changed_backend_flags(jaeger_server, redis_server, tmp_path):
    sql = f"sqlite:///{tmp_path / 'reload.db'}"
    zs.create_sql_tables(sql)
    server = start_server(
        jaeger_server, redis_sql_stores(redis_server.url, sql), trace_redis="false"
    )
    try:
        before = _post(server)
        text = server.conf_path.read_text()
        server.conf_path.write_text(text.replace("trace_redis = false", "trace_redis = true"))
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert server.process.poll() is None  # reloaded, not killed
        after = _post(server)
        server.conf_path.write_text(text)  # and back off
        server.process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        off_again = _post(server)
    finally:
        server.stop()
    assert trace_of(jaeger_server, before, 2).db("redis") == []
    assert trace_of(jaeger_server, after, 3).db("redis")
    assert trace_of(jaeger_server, off_again, 2).db("redis") == []
