"""zaqar_otel.zaqar.wsgi:application under real uWSGI: forking workers, recycling, shutdown."""

from __future__ import annotations

import pytest

from tests import zaqar_server as zs
from tests.zaqar.test_server import assert_one_connected_tree, redis_sql_stores, trace_of

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]


def test_uwsgi_workers_recycled_and_stopped_lose_no_span(jaeger_server, redis_server, tmp_path):
    sql = f"sqlite:///{tmp_path / 'uwsgi.db'}"
    zs.create_management_tables(sql)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger_server.otlp_http_endpoint,
        # spans leave only when a worker flushes on exit: recycling and shutdown
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
    }
    server = zs.ZaqarServer(
        redis_sql_stores(redis_server.url, sql),
        zs.PROFILER_ON,
        env,
        launcher="uwsgi",
        uwsgi_max_requests=3,  # each worker is recycled after 3 requests
    ).start()
    bases = []
    try:
        cli = zs.client(server.url)
        for _ in range(6):
            with zs.profiled() as base:
                cli.queue(zs.fresh_queue_name(), force_create=True)
            bases.append(base)
    finally:
        server.close()  # SIGTERM to the master: a graceful stop
    for base in bases:
        tree = trace_of(jaeger_server, base, 3)
        root = assert_one_connected_tree(tree)
        assert root["operationName"] == "PUT /v2/queues/{queue_name}"
