"""16 threads x 100 signed requests on a real in-process Zaqar: every trace exact, memory flat."""

import subprocess
import sys

import pytest

from tests.subproc import ROOT, result_of
from tests.zaqar_server import create_management_tables

pytestmark = [pytest.mark.servers, pytest.mark.zaqar]


def test_concurrency_soak(redis_server, tmp_path):
    sql = f"sqlite:///{tmp_path / 'soak.db'}"
    create_management_tables(sql)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.apps.soak", "--redis", redis_server.url, "--sql", sql,
         "--threads", "16", "--rounds", "5", "--per-round", "10"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = result_of(proc.stdout)
    assert result["failure_count"] == 0, result["failures"]
    assert result["requests"] == 16 + 16 * 5 * 10 * 2
    assert result["traces_checked"] == result["requests"]
    status = result["status"]
    assert status["open_spans"] == 0
    assert status["skipped_pending"] == 0
    assert status["malformed_notifications"] == 0
    # Python heap after the warm-up round vs at the end: no per-request growth
    heap = result["python_heap_kb"]
    assert heap[-1] - heap[1] < 512, heap
