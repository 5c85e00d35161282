"""The benchmarks run and report what they claim (tiny counts: no timing is asserted here).

Speed targets are checked by ``nox -s bench``, never by timed unit tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench import common
from bench import export as bench_export
from bench import export_cost as bench_export_cost
from bench import readme as bench_readme
from bench import requests as bench_requests

ROOT = Path(__file__).resolve().parent.parent
HEADER = ["measure", "value", "target", "verdict"]
# issue 13's targets (fast path): each has a row with a target and a verdict
FAST_PATH_TARGETS = (
    "2. bridge per span (bridge - OSProfiler alone) / SDK span, same attributes",
    "5. with export: (bridge - OSProfiler alone) / SDK span + SDK OTLP/HTTP exporter",
    "1. latency, enabled, request signed",
    "1. latency, enabled, request not signed",
    "3. OTLP/HTTP export, sustained (spans/s), drops",
)


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
    assert set(quick_report["results"]) == {
        "span_cost",
        "export_cost",
        "encoding",
        "export",
        "memory",
        "requests",
    }
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
    assert configs["enabled-signed"]["spans_per_request"] > 1
    assert configs["signed-unlinked"]["bridge_status"]["exported"] > 0
    assert configs["enabled-signed"]["post_ratio_vs_unlinked"] > 0
    for name in ("signed-down", "signed-blackhole"):
        assert configs[name]["bridge_status"]["exported"] == 0
        assert configs[name]["latency_ratio_vs_signed_healthy"] > 0
    sampled = configs["sampled-unsigned"]["bridge_status"]
    assert sampled["rate_limited"] == 0  # 1% of a few requests: never near the limit
    received = quick_report["results"]["requests"]["receiver"]["spans"]
    exporting = (*bench_requests.HEALTHY_SIGNED, "sampled-unsigned")  # one process each
    assert received == sum(configs[name]["bridge_status"]["exported"] for name in exporting)


@pytest.mark.servers
def test_span_cost_export_and_memory_report_their_figures(quick_report):
    results = quick_report["results"]
    span = results["span_cost"]
    assert set(span["ns_per_span"]) == {
        "bridge",
        "osprofiler_noop",
        "otel_sdk_same_attributes",
        "otel_sdk",
        "otel_sdk_same_span",
        "bridge_root",
        "osprofiler_noop_root",
    }
    assert all(v > 0 for v in span["ns_per_span"].values())
    assert span["driver_status"]["open_spans"] == 0
    assert span["driver_status"]["exported"] > 0
    cost = results["export_cost"]
    assert set(cost["ns_per_span"]) == set(bench_export_cost.VARIANTS)
    assert all(v > 0 for v in cost["ns_per_span"].values())
    assert cost["export_thread_ns_per_span"]["bridge"] > 0
    assert cost["receiver_spans"] > 0
    encoding = results["encoding"]
    assert set(encoding["ns_per_span"]) == {
        "sdk",
        "protobuf_direct",
        "bridge",
        "gzip_sdk",
        "gzip_fast",
    }
    export = results["export"]
    assert export["receiver_matches_exporter"] is True
    assert export["zero_drops_below_capacity"] is True
    assert export["summary"]["sustained"]["exported"] == [export["spans_sustained"]]
    assert export["export_thread_ns_per_span"] > 0
    assert export["protocols_receivers_match_exporters"] is True
    assert set(export["protocols"]) == set(bench_export.PROTOCOLS)
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
    assert common.verdict(1.01, 1.02) == "PASS"
    assert common.verdict(1.03, 1.02) == "MISS"
    assert common.verdict(25_000, 20_000, at_most=False) == "PASS"


def _cells(table: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]


def _readme_table() -> str:
    text = bench_readme.README.read_text()
    block = text[text.index(bench_readme.BEGIN) : text.index(bench_readme.END)]
    return "\n".join(line for line in block.splitlines() if line.startswith("|"))


def _measure(label: str) -> str:
    return re.sub(r"\d[\d,.]*", "N", label)  # counts that depend on the run's sizes


def _report(quick: bool = False) -> dict[str, Any]:
    return {
        "taken_at": "2026-12-02 03:00 UTC",
        "quick": quick,
        "seconds": {"span_cost": 60.0, "requests": 180.0},
        "machine": {
            "nproc": 2,
            "cpu": "CPU",
            "memory_gib": 1.0,
            "python": "3.11",
            "loadavg_at_start": [1.0, 2.0, 3.0],
        },
        "loadavg_at_end": [0.5, 0.25, 0.125],
        "table": common.table([["2. x", "1.00", "<= 1.3", "PASS"]], HEADER),
    }


def test_readme_table_goes_between_its_markers():
    begin, end = bench_readme.BEGIN, bench_readme.END
    text = f"intro\n{begin}\nthe old table\n{end}\nafter\n"
    new = bench_readme.update(text, _report())
    assert new.startswith(f"intro\n{begin}\n") and new.endswith(f"\n{end}\nafter\n")
    assert "the old table" not in new and _report()["table"] in new
    assert "2026-12-02 03:00 UTC" in new and "(4 minutes)" in new and "1.00/2.00/3.00" in new
    assert bench_readme.update(new, _report()) == new


def test_readme_refuses_a_quick_run_and_a_readme_without_markers():
    with pytest.raises(bench_readme.ReadmeError, match="--quick"):
        bench_readme.update(f"{bench_readme.BEGIN}\n{bench_readme.END}", _report(quick=True))
    with pytest.raises(bench_readme.ReadmeError, match="no "):
        bench_readme.update("no markers", _report())


def test_readme_table_is_a_bench_table_with_every_fast_path_target():
    table = _readme_table()
    cells = _cells(table)
    header, rows = cells[0], cells[2:]
    assert header == HEADER
    assert table == common.table(rows, header)  # as the bench prints it, column widths too
    for row in rows:
        assert row[3] in ("PASS", "MISS", "-") or row[3].startswith("counter off by")
    for target in FAST_PATH_TARGETS:
        [row] = [row for row in rows if row[0].startswith(target)]
        assert row[2] != "report" and row[3] in ("PASS", "MISS")


@pytest.mark.servers
def test_readme_has_every_target_row_a_run_reports(quick_report):
    targets = [row[0] for row in _cells(quick_report["table"])[2:] if row[3] != "-"]
    assert targets
    in_readme = {_measure(row[0]) for row in _cells(_readme_table())[2:]}
    assert {_measure(label) for label in targets} <= in_readme
