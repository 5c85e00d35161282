"""CPU per span with export counted: OSProfiler + bridge + OTLP against an SDK span exported by
the SDK's OTLP/HTTP exporter, and against OSProfiler's own ``otlp://`` driver.

Each variant runs in a worker process of its own (an OTLP setup is one global provider
per process), exporting to ``bench.sink`` (another process, which parses and counts
every span). A round asks every worker, in rotated order, for ``--spans`` spans and
a flush; a worker reports the process CPU time this took (all its threads: the span,
the queue, the exporter thread's encoding and HTTP, the flush) per span, and the
export's CPU time per span (the export thread's, plus the final flush's).

==========================  ======================================================
``osprofiler_noop``         OSProfiler start + stop in an open request span, no-op notifier
``sdk_otlp``                ``tracer.start_span(name, attributes=...)`` + ``end()`` with the
                            bridge's attributes, SDK ``BatchSpanProcessor``, the SDK's
                            ``OTLPSpanExporter`` (HTTP, protobuf)
``bridge``                  OSProfiler + ``otel://HOST:PORT`` (the bridge's processor and
                            exporter: ``zaqar_otel.bridge.otlp``)
``bridge_stock_exporter``   the same with the SDK's ``OTLPSpanExporter`` (what the encoder saves)
``osprofiler_otlp``         OSProfiler + its own ``otlp://HOST:PORT`` driver
==========================  ======================================================

The target: ``(bridge - osprofiler_noop) / sdk_otlp`` <= 1.3 (median over rounds of the
same-round ratio).

Usage::

    python -m bench.export_cost [--quick] [--rounds 9] [--spans 4000]

Writes ``bench/results/export_cost.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from bench import bridge, common, sink

TARGET = 1.3
VARIANTS = ("osprofiler_noop", "sdk_otlp", "bridge", "bridge_stock_exporter", "osprofiler_otlp")


# -- the worker


def _export_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("OtelBatch")]


def _thread_cpu_ns(threads: list[threading.Thread]) -> int:
    total = 0
    for thread in threads:
        if thread.ident is None or not thread.is_alive():
            continue
        with contextlib.suppress(OSError, AttributeError):
            total += time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))
    return total


def _sdk(endpoint: str) -> tuple[Callable[[], None], Callable[[], None]]:
    import uuid

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(f"{endpoint}/v1/traces")))
    tracer = provider.get_tracer("bench")
    name = f"{bridge.SPAN_NAME} MessageController.post"
    attributes = {
        "osprofiler.name": bridge.SPAN_NAME,
        "code.function.name": bridge.FUNCTION,
        "osprofiler.id": str(uuid.uuid4()),
        "osprofiler.base_id": str(uuid.uuid4()),
    }

    def op() -> None:
        tracer.start_span(name, attributes=attributes).end()

    return op, lambda: provider.force_flush()


def setup(variant: str, endpoint: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """(one span, flush) for ``variant``."""
    if variant == "osprofiler_noop":
        bridge.open_request(lambda info: None)
        return bridge.profiled_span, lambda: None
    if variant == "sdk_otlp":
        return _sdk(endpoint)
    if variant in ("bridge", "bridge_stock_exporter"):
        exporter = None
        if variant == "bridge_stock_exporter":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(f"{endpoint}/v1/traces")
        drv = bridge.driver(connection_string=f"otel://{endpoint[7:]}", exporter=exporter)
        bridge.open_request(drv)
        return bridge.profiled_span, lambda: drv.provider.force_flush()
    if variant == "osprofiler_otlp":
        from opentelemetry import trace
        from oslo_config import cfg
        from osprofiler.drivers import otlp

        cfg.CONF([], project="bench")
        driver = otlp.OTLP(f"otlp://{endpoint[7:]}", project="zaqar", service="bench", host="h")
        bridge.open_request(driver)
        provider = trace.get_tracer_provider()
        return bridge.profiled_span, lambda: provider.force_flush()  # type: ignore[attr-defined]
    raise ValueError(variant)


def serve(variant: str, endpoint: str, warmup: int) -> None:
    op, flush = setup(variant, endpoint)
    for _ in range(warmup):
        op()
    flush()
    common.emit({"ready": variant})
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command != "run":
            break
        spans = int(arg)
        threads = _export_threads()
        thread_cpu = _thread_cpu_ns(threads)
        cpu = time.process_time_ns()
        for _ in range(spans):
            op()
        flushing = time.thread_time_ns()
        flush()  # what is left in the queue: exported in this thread
        flushing = time.thread_time_ns() - flushing
        cpu = time.process_time_ns() - cpu
        thread_cpu = _thread_cpu_ns(threads) - thread_cpu + flushing
        common.emit(
            {
                "cpu_ns_per_span": cpu / spans,
                "export_thread_ns_per_span": thread_cpu / spans if threads else None,
            }
        )


# -- the orchestrator


def measure(rounds: int, spans: int, warmup: int) -> dict[str, Any]:
    per_round: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    with sink.Sink() as receiver:
        workers = {
            v: common.Worker(
                "bench.export_cost",
                ["--worker", v, "--endpoint", receiver.endpoint, "--warmup", str(warmup)],
                {},
            )
            for v in VARIANTS
        }
        try:
            for worker in workers.values():
                worker.read()  # ready
            for r in range(rounds):
                order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
                for variant in order:
                    per_round[variant].append(workers[variant].ask(f"run {spans}"))
        finally:
            for worker in workers.values():
                worker.close()
        received = receiver.count()
    cpu = {v: [r["cpu_ns_per_span"] for r in runs] for v, runs in per_round.items()}
    marginal = [b - n for b, n in zip(cpu["bridge"], cpu["osprofiler_noop"], strict=True)]
    ratios = [m / s for m, s in zip(marginal, cpu["sdk_otlp"], strict=True)]

    def thread(variant: str) -> float | None:
        values = [r["export_thread_ns_per_span"] for r in per_round[variant]]
        known = [v for v in values if v is not None]
        return round(common.median(known), 1) if known else None

    return {
        "rounds": rounds,
        "spans_per_round": spans,
        "clock": "process CPU time (all threads), flush included",
        "ns_per_span": {v: round(common.median(c), 1) for v, c in cpu.items()},
        "ns_per_span_rounds": {v: [round(x, 1) for x in c] for v, c in cpu.items()},
        "export_thread_ns_per_span": {v: thread(v) for v in VARIANTS},
        "bridge_marginal_ns": round(common.median(marginal), 1),
        "ratio_bridge_marginal_vs_sdk_otlp": round(common.median(ratios), 3),
        "ratio_bridge_marginal_vs_sdk_otlp_spread": common.spread(ratios),
        "ratio_bridge_vs_osprofiler_otlp": common.paired(cpu["bridge"], cpu["osprofiler_otlp"]),
        "ratio_bridge_stock_exporter_vs_bridge": common.paired(
            cpu["bridge_stock_exporter"], cpu["bridge"]
        ),
        "ratio_sdk_otlp_vs_bridge_marginal": common.paired(cpu["sdk_otlp"], marginal),
        "target_bridge_marginal_vs_sdk_otlp": TARGET,
        "receiver_spans": received["spans"],
        "per_round": per_round,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke test)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--spans", type=int, default=4_000, help="spans per worker and round")
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        serve(args.worker, args.endpoint, args.warmup)
        return 0
    rounds, spans, warmup = (2, 200, 50) if args.quick else (args.rounds, args.spans, args.warmup)
    result = measure(rounds, spans, warmup)
    result["quick"] = args.quick
    common.write_result("export_cost", result)
    common.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
