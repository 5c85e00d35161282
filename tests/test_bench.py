"""The benchmarks run and report what they claim (tiny counts: no timing is asserted here).

Speed targets are checked by ``nox -s bench``, never by timed unit tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench import common
from bench import requests as bench_requests

ROOT = Path(__file__).resolve().parent.parent


def run_bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ZAQAR_OTEL_BENCH_RESULTS=str(tmp_path))
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``python -m bench --quick`` once; its bench.json."""
    tmp = tmp_path_factory.mktemp("bench")
    proc = run_bench(tmp, "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| measure" in proc.stdout
    return dict(json.loads((tmp / "bench.json").read_text()))


@pytest.mark.servers
def test_quick_run_writes_every_result_and_the_machine(quick_report):
    assert set(quick_report["results"]) == {"span_cost", "export", "memory", "requests"}
    machine = quick_report["machine"]
    assert machine["nproc"] >= 1 and machine["cpu"] and machine["python"]
    table = quick_report["table"].splitlines()
    assert table[0].startswith("| measure") and len(table) > 10


@pytest.mark.servers
def test_requests_compares_every_configuration_with_not_installed(quick_report):
    configs = quick_report["results"]["requests"]["configs"]
    assert set(configs) == set(bench_requests.CONFIGS)
    assert configs["not-installed"]["zaqar_otel_imported"] is False
    assert configs["not-installed"]["latency_ratio"] == 1.0
    assert configs["stock-enabled"]["zaqar_otel_imported"] is False
    for name in set(bench_requests.CONFIGS) - bench_requests.STOCK:
        assert configs[name]["zaqar_otel_imported"] is True
    for name in bench_requests.CONFIGS:
        assert configs[name]["latency_ratio"] > 0
        assert configs[name]["op_ms_median"] > 0
    # Zaqar 20 and 21 load no OSProfiler driver at all when profiling is disabled: no status
    assert configs["disabled"]["bridge_status"].get("exported", 0) == 0
    assert configs["enabled-unsigned"]["bridge_status"]["exported"] == 0
    assert configs["enabled-signed"]["bridge_status"]["exported"] > 0
    assert configs["signed-unlinked"]["bridge_status"]["exported"] > 0
    assert configs["enabled-signed"]["post_ratio_vs_unlinked"] > 0
    for name in ("signed-down", "signed-blackhole"):
        assert configs[name]["bridge_status"]["exported"] == 0
        assert configs[name]["latency_ratio_vs_signed_healthy"] > 0
    received = quick_report["results"]["requests"]["receiver"]["spans"]
    assert received == sum(
        configs[name]["bridge_status"]["exported"] for name in bench_requests.HEALTHY_SIGNED
    )


@pytest.mark.servers
def test_span_cost_export_and_memory_report_their_figures(quick_report):
    results = quick_report["results"]
    span = results["span_cost"]
    assert set(span["ns_per_span"]) == {
        "bridge",
        "otel_sdk",
        "otel_sdk_same_span",
        "osprofiler_noop",
    }
    assert all(v > 0 for v in span["ns_per_span"].values())
    assert span["driver_status"]["open_spans"] == 0
    export = results["export"]
    assert export["receiver_matches_exporter"] is True
    assert export["zero_drops_below_capacity"] is True
    assert export["summary"]["sustained"]["exported"] == [export["spans_sustained"]]
    assert max(export["summary"]["burst_over"]["dropped_queue_full"]) > 0  # counted, not silent
    memory = results["memory"]
    assert memory["exported"] == memory["spans"]
    assert memory["driver_status"]["open_spans"] == 0
    assert memory["full_queue_kib"] > 0


def test_unknown_benchmark_is_a_one_line_error(tmp_path):
    proc = run_bench(tmp_path, "--only", "nonsense")
    assert proc.returncode == 2
    assert "unknown benchmark(s) ['nonsense']" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ratios_are_medians_of_same_round_ratios():
    def batch(ns: float) -> dict[str, float]:
        keys = ("op_ns_median", "post_ns_median", "list_ns_median", "cpu_ns_per_op")
        return {**dict.fromkeys(keys, ns), "ops_per_s": 1e9 / ns}

    base = [batch(v) for v in (10, 20, 30)]
    slower = [batch(v) for v in (11, 40, 33)]
    summary = bench_requests.summarize({"not-installed": base, "disabled": slower})
    assert summary["not-installed"]["latency_ratio"] == 1.0
    assert summary["disabled"]["latency_ratio_rounds"] == [1.1, 2.0, 1.1]
    assert summary["disabled"]["latency_ratio"] == 1.1
    assert summary["disabled"]["throughput_ratio"] == pytest.approx(1 / 1.1, abs=0.001)


def test_table_is_markdown_with_aligned_columns():
    text = common.table([["a", 1.23456], ["bb", 20_000]], ["name", "value"])
    lines = text.splitlines()
    assert lines[0] == "| name | value  |"
    assert lines[1] == "|------|--------|"
    assert lines[2] == "| a    | 1.235  |"
    assert lines[3] == "| bb   | 20,000 |"
    assert common.verdict(1.01, 1.02) == "ok"
    assert common.verdict(1.03, 1.02) == "MISSED"
    assert common.verdict(25_000, 20_000, at_most=False) == "ok"
