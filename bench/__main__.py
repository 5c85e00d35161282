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

BENCHMARKS = ("span_cost", "export", "memory", "requests")


def rows(results: dict[str, Any]) -> list[list[object]]:
    """[measure, value, target, verdict] rows of the table."""
    out: list[list[object]] = []
    req = results.get("requests")
    if req:
        configs = req["configs"]
        for config, label in (
            ("control", "A/A control: not installed again"),
            ("disabled", "installed, enabled = false"),
            ("stock-enabled", "no bridge, stock enabled = true, not signed"),
            ("enabled-unsigned", "enabled, request not signed"),
            ("enabled-signed", "enabled, request signed (traced)"),
        ):
            entry = configs.get(config)
            if not entry:
                continue
            target = req["targets"]["latency_ratio_at_most"].get(config)
            ratio = entry["latency_ratio"]
            out.append(
                [
                    f"1. latency, {label} / not installed (q25)",
                    f"{ratio:.3f} ({entry['latency_ratio_q25']:.3f})",
                    f"<= {target}" if target else "report",
                    common.verdict(ratio, target) if target else "-",
                ]
            )
            out.append(
                [
                    f"1. throughput, {label} / not installed",
                    f"{entry['throughput_ratio']:.3f}",
                    f">= {1 / target:.3f}" if target else "report",
                    common.verdict(entry["throughput_ratio"], 1 / target, at_most=False)
                    if target
                    else "-",
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
    span = results.get("span_cost")
    if span:
        ns = span["ns_per_span"]
        out.append(
            [
                "2. span via bridge / bare SDK span",
                f"{span['ratio_bridge_vs_otel_sdk']:.2f} "
                f"({ns['bridge'] / 1000:.1f} / {ns['otel_sdk'] / 1000:.1f} us)",
                f"<= {span['target_bridge_vs_otel_sdk']}",
                common.verdict(span["ratio_bridge_vs_otel_sdk"], span["target_bridge_vs_otel_sdk"]),
            ]
        )
        out.append(
            [
                "2. span via bridge / SDK span with the same attributes + context",
                f"{span['ratio_bridge_vs_otel_sdk_same_span']:.2f} "
                f"({ns['otel_sdk_same_span'] / 1000:.1f} us)",
                "report",
                "-",
            ]
        )
        out.append(
            [
                "2. span via bridge / OSProfiler, no-op notifier",
                f"{span['ratio_bridge_vs_osprofiler_noop']:.2f} "
                f"({ns['osprofiler_noop'] / 1000:.1f} us)",
                "report",
                "-",
            ]
        )
        out.append(
            [
                "2. (bridge - OSProfiler) / bare SDK span",
                f"{span['ratio_bridge_minus_osprofiler_vs_otel_sdk']:.2f}",
                "report",
                "-",
            ]
        )
    exp = results.get("export")
    if exp:
        summary, target = exp["summary"], exp["target_spans_per_s"]
        rate = summary["sustained"]["spans_per_s_median"]
        out.append(
            [
                "3. OTLP/HTTP export, sustained (spans/s), drops",
                f"{rate:,.0f}/s, dropped {sum(summary['sustained']['dropped_queue_full'])}",
                f">= {target:,}, 0",
                "ok" if rate >= target and exp["zero_drops_sustained"] else "MISSED",
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
                "ok" if exp["zero_drops_below_capacity"] else "MISSED",
            ]
        )
        over = summary["burst_over"]
        spans = 3 * exp["queue_size"]
        unaccounted = max(abs(u) for u in over["unaccounted"])
        out.append(
            [
                f"3. burst of {spans:,} (3 x queue): exported, dropped (counted)",
                f"{over['exported'][0]:,}, {over['dropped_queue_full'][0]:,} "
                f"(unaccounted: {unaccounted})",
                "counted",
                "ok" if unaccounted == 0 else f"counter off by {unaccounted}",
            ]
        )
    mem = results.get("memory")
    if mem:
        first = mem["first_checkpoint"]
        out.append(
            [
                f"4. RSS after {mem['spans']:,} spans / after {first:,}",
                f"{mem['ratio_rss_all_vs_first']:.3f} (+{mem['growth_kib'] / 1024:.1f} MiB; "
                f"full queue {mem['full_queue_kib'] / 1024:.1f} MiB)",
                "growth <= queue",
                "ok" if mem["growth_within_queue"] else "MISSED",
            ]
        )
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
