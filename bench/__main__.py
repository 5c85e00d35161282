"""All benchmarks, one table: ``python -m bench [--quick]`` (what ``nox -s bench`` runs).

Each benchmark runs in its own process (``python -m bench.<name>``), one
after the other; the table goes to stdout (Markdown, as in the README) and
everything to ``bench/results/bench.json``, with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from bench import common

BENCHMARKS = ("span_cost", "export_cost", "encoding", "export", "memory", "requests")
Row = list[object]


def _us(ns: float) -> str:
    return f"{ns / 1000:.1f} us"


def request_rows(req: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    configs, targets = req["configs"], req["targets"]["latency_ratio_at_most"]
    for config, label in (
        ("control", "A/A control: not installed again"),
        ("disabled", "installed, enabled = false"),
        ("stock-enabled", "no bridge, stock enabled = true, not signed"),
        ("enabled-unsigned", "enabled, request not signed"),
        ("enabled-signed", "enabled, request signed (traced, export in the process)"),
    ):
        entry = configs.get(config)
        if not entry:
            continue
        target, ratio = targets.get(config), entry["latency_ratio"]
        spans = entry.get("spans_per_request")
        extra = f"; {spans:.0f} spans/request" if spans else ""
        out.append(
            [
                f"1. latency, {label} / not installed (q25)",
                f"{ratio:.3f} ({entry['latency_ratio_q25']:.3f}; rounds "
                f"{entry['latency_ratio_spread'][0]:.2f}-{entry['latency_ratio_spread'][1]:.2f})"
                f"{extra}",
                f"<= {target}" if target else "report",
                common.verdict(ratio, target) if target else "-",
            ]
        )
        out.append(
            [
                f"1. CPU per operation, {label} / not installed",
                f"{entry['cpu_ratio']:.3f}",
                "report",
                "-",
            ]
        )
    base = configs.get("not-installed")
    if base:
        out.append(
            [
                "1. not installed: median POST + GET (ms), ops/s",
                f"{base['op_ms_median']:.2f} ms, {base['ops_per_s_median']:.0f}/s",
                "-",
                "-",
            ]
        )
    linked = configs.get("enabled-signed", {})
    if "post_ratio_vs_unlinked" in linked:
        out.append(
            [
                "8. traced POST, GET: link_messages on / off",
                f"{linked['post_ratio_vs_unlinked']:.3f} "
                f"(+{linked['post_extra_us_vs_unlinked']:.0f} us), "
                f"{linked['list_ratio_vs_unlinked']:.3f} "
                f"(+{linked['list_extra_us_vs_unlinked']:.0f} us)",
                "report",
                "-",
            ]
        )
    limit = req["targets"]["reliability_at_most"]
    for config, label in (("signed-down", "DOWN"), ("signed-blackhole", "BLACKHOLED")):
        entry = configs.get(config)
        if not entry or "latency_ratio_vs_signed_healthy" not in entry:
            continue
        ratio = entry["latency_ratio_vs_signed_healthy"]
        dropped = entry.get("bridge_status", {}).get("dropped_queue_full", 0)
        out.append(
            [
                f"7. signed latency, collector {label} / healthy (q25)",
                f"{ratio:.3f} ({entry['latency_ratio_vs_signed_healthy_q25']:.3f}); "
                f"{dropped:,} spans dropped, counted",
                f"<= {limit}",
                common.verdict(ratio, limit),
            ]
        )
    return out


def span_rows(span: dict[str, Any]) -> list[Row]:
    ns, target = span["ns_per_span"], span["target_bridge_marginal_vs_sdk_same_attributes"]
    ratio = span["ratio_bridge_marginal_vs_sdk_same_attributes"]
    low, high = span["ratio_bridge_marginal_vs_sdk_same_attributes_spread"]
    return [
        [
            "2. bridge per span (bridge - OSProfiler alone) / SDK span, same attributes",
            f"{ratio:.2f} ({_us(span['bridge_marginal_ns'])} / "
            f"{_us(ns['otel_sdk_same_attributes'])}; rounds {low:.2f}-{high:.2f})",
            f"<= {target}",
            common.verdict(ratio, target),
        ],
        [
            "2. the same / SDK span with those attributes attached as context",
            f"{span['ratio_bridge_marginal_vs_sdk_same_span']:.2f} "
            f"({_us(ns['otel_sdk_same_span'])})",
            "report",
            "-",
        ],
        [
            "2. the same / bare SDK span (no attributes)",
            f"{span['ratio_bridge_marginal_vs_sdk_bare']:.2f} ({_us(ns['otel_sdk'])})",
            "report",
            "-",
        ],
        [
            "2. the same, each span a trace of its own (flags read per request)",
            f"{span['ratio_bridge_root_marginal_vs_sdk_same_attributes']:.2f}",
            "report",
            "-",
        ],
        [
            "2. span via bridge / OSProfiler alone (no-op notifier)",
            f"{span['ratio_bridge_vs_osprofiler_noop']:.2f} "
            f"({_us(ns['bridge'])} / {_us(ns['osprofiler_noop'])})",
            "report",
            "-",
        ],
    ]


def export_cost_rows(cost: dict[str, Any], encoding: dict[str, Any] | None) -> list[Row]:
    ns, target = cost["ns_per_span"], cost["target_bridge_marginal_vs_sdk_otlp"]
    ratio = cost["ratio_bridge_marginal_vs_sdk_otlp"]
    low, high = cost["ratio_bridge_marginal_vs_sdk_otlp_spread"]
    out: list[Row] = [
        [
            "5. with export: (bridge - OSProfiler alone) / SDK span + SDK OTLP/HTTP exporter",
            f"{ratio:.2f} ({_us(cost['bridge_marginal_ns'])} / {_us(ns['sdk_otlp'])}; "
            f"rounds {low:.2f}-{high:.2f})",
            f"<= {target}",
            common.verdict(ratio, target),
        ],
        [
            "5. OSProfiler + bridge / OSProfiler's own otlp:// driver",
            f"{cost['ratio_bridge_vs_osprofiler_otlp']:.2f} "
            f"({_us(ns['bridge'])} / {_us(ns['osprofiler_otlp'])})",
            "report",
            "-",
        ],
        [
            "5. bridge with the SDK's exporter / with its own",
            f"{cost['ratio_bridge_stock_exporter_vs_bridge']:.2f} "
            f"({_us(ns['bridge_stock_exporter'])} / {_us(ns['bridge'])})",
            "report",
            "-",
        ],
    ]
    if encoding:
        enc = encoding["ns_per_span"]
        out.append(
            [
                "5. encoding per span: SDK, protobuf built directly, bridge",
                f"{_us(enc['sdk'])}, {_us(enc['protobuf_direct'])}, {_us(enc['bridge'])} "
                f"(SDK / bridge {encoding['ratio_sdk_vs_bridge']:.1f} x)",
                "report",
                "-",
            ]
        )
        out.append(
            [
                "5. gzip per span (level 9 as the SDK, level 1); size after gzip",
                f"{_us(enc['gzip_sdk'])}, {_us(enc['gzip_fast'])}; "
                f"{encoding['gzip_ratio']:.2f} x of {encoding['bytes_per_span']:.0f} B",
                "report",
                "-",
            ]
        )
    return out


def export_rows(exp: dict[str, Any]) -> list[Row]:
    summary, target = exp["summary"], exp["target_spans_per_s"]
    rate = summary["sustained"]["spans_per_s_median"]
    out: list[Row] = [
        [
            "3. OTLP/HTTP export, sustained (spans/s), drops",
            f"{rate:,.0f}/s, dropped {sum(summary['sustained']['dropped_queue_full'])}",
            f">= {target:,}, 0",
            "PASS" if rate >= target and exp["zero_drops_sustained"] else "MISS",
        ],
        [
            "3. export thread CPU per span (encoding, HTTP, queue)",
            _us(exp["export_thread_ns_per_span"]),
            "report",
            "-",
        ],
    ]
    for name, run in exp.get("protocols", {}).items():
        out.append(
            [
                f"3. one run, {name.replace('_', ' ')}: spans/s, export thread per span",
                f"{run['spans_per_s']:,.0f}/s, {_us(run['export_thread_ns_per_span'])}",
                "report",
                "-",
            ]
        )
    out.append(
        [
            "3. same, spans made live by OSProfiler + bridge (spans/s)",
            f"{summary['end_to_end']['spans_per_s_median']:,.0f}/s",
            "report",
            "-",
        ]
    )
    under = summary["burst_under"]
    out.append(
        [
            f"3. burst of {under['exported'][0] + under['dropped_queue_full'][0]:,} "
            f"(0.9 x queue {exp['queue_size']:,}): dropped",
            f"{max(under['dropped_queue_full'])}",
            "0",
            "PASS" if exp["zero_drops_below_capacity"] else "MISS",
        ]
    )
    over = summary["burst_over"]
    unaccounted = max(abs(u) for u in over["unaccounted"])
    out.append(
        [
            f"3. burst of {3 * exp['queue_size']:,} (3 x queue): exported, dropped (counted)",
            f"{over['exported'][0]:,}, {over['dropped_queue_full'][0]:,} "
            f"(unaccounted: {unaccounted})",
            "counted",
            "PASS" if unaccounted == 0 else f"counter off by {unaccounted}",
        ]
    )
    return out


def memory_rows(mem: dict[str, Any]) -> list[Row]:
    return [
        [
            f"4. RSS after {mem['spans']:,} spans / after {mem['first_checkpoint']:,}",
            f"{mem['ratio_rss_all_vs_first']:.3f} (+{mem['growth_kib'] / 1024:.1f} MiB; "
            f"full queue {mem['full_queue_kib'] / 1024:.1f} MiB)",
            "growth <= queue",
            "PASS" if mem["growth_within_queue"] else "MISS",
        ]
    ]


def rows(results: dict[str, Any]) -> list[Row]:
    """[measure, value, target, verdict] rows of the table."""
    out: list[Row] = []
    if results.get("requests"):
        out += request_rows(results["requests"])
    if results.get("span_cost"):
        out += span_rows(results["span_cost"])
    if results.get("export_cost"):
        out += export_cost_rows(results["export_cost"], results.get("encoding"))
    if results.get("export"):
        out += export_rows(results["export"])
    if results.get("memory"):
        out += memory_rows(results["memory"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke test)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    args = parser.parse_args(argv)
    chosen = [name for name in args.only.split(",") if name]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    machine = common.machine()
    taken_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in chosen:
        print(f"-- bench.{name}", file=sys.stderr, flush=True)
        started = time.monotonic()
        results[name] = common.run_worker(
            f"bench.{name}", ["--quick"] if args.quick else [], stderr=sys.stderr
        )
        seconds[name] = round(time.monotonic() - started, 1)
    table = common.table(rows(results), ["measure", "value", "target", "verdict"])
    report = {
        "taken_at": taken_at,
        "machine": machine,
        "loadavg_at_end": list(os.getloadavg()),
        "seconds": seconds,
        "quick": args.quick,
        "table": table,
        "results": results,
    }
    path = common.write_result("bench", report)
    print(table)
    print(f"\nmachine: {json.dumps(machine)}\nresults: {path}")
    if not args.quick:
        print("bench/README.md's table from this run: python -m bench.readme", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
