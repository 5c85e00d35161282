"""Zaqar embedded with its own ConfigOpts (a real Zaqar WSGI app in a subprocess)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests import zaqar_server as zs
from tests.subproc import ROOT, profiled_env, result_of
from zaqar_otel.bridge import ids
from zaqar_otel.demo.stack import zaqar_conf

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]


def test_zaqar_bootstrapped_with_its_own_config_is_traced(redis_server, otlp_receiver, tmp_path):
    """The driver reads the configuration Zaqar was bootstrapped with. Zaqar 20 and 21 built
    the OSProfiler notifier without it: the [profiler] flags came from cfg.CONF, where
    nothing is enabled, and such a Zaqar exported nothing."""
    sql = f"sqlite:///{tmp_path / 'zaqar.db'}"
    zs.create_management_tables(sql)
    conf = tmp_path / "zaqar.conf"
    conf.write_text(zaqar_conf(0, zs.redis_sql_stores(redis_server.url, sql), zs.PROFILER_ON))
    queue = zs.fresh_queue_name()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.apps.embedded", str(conf), queue],
        cwd=ROOT,
        env=profiled_env({"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = result_of(proc.stdout)
    assert result["status"] == 201
    trace = ids.trace_hex(result["base_id"])
    spans = [s for s in otlp_receiver.wait_for(3, timeout=10) if s.trace_id == trace]
    names = sorted(s.name for s in spans)
    assert "PUT /v2/queues/{queue_name}" in names, names
    assert any("Queue.create" in name for name in names), names
