"""Spans per second through the bridge's exporter to a local OTLP receiver; drops at a burst.

The pipeline is the one the bridge builds for ``otel://127.0.0.1:PORT``: its
counting ``BatchSpanProcessor`` (queue ``OTEL_BSP_MAX_QUEUE_SIZE``, default
2048), its guarded exporter, its OTLP/HTTP (protobuf) exporter
(``zaqar_otel.bridge.otlp``), to ``bench.sink`` in another process (which parses
every request and counts the spans: the receiver acknowledges them).

* ``sustained``: spans the bridge made (captured once) are fed to the
  processor as fast as it takes them while its queue stays below 3/4 full (the
  producer waits, so nothing is dropped); spans/s = spans / time until all are
  exported. Only the export pipeline is timed, not span creation. The export
  thread's CPU time (and the final flush's, in the calling thread) per span is
  reported too.
* ``protocols``: the same, once each, with OTLP/HTTP and OTLP/gRPC, the bridge's
  exporters and the SDK's, and gzip on HTTP (``bench.grpc_sink`` receives gRPC).
* ``end_to_end``: the same with spans made live by OSProfiler + the bridge in
  this thread (the exporter shares the GIL with the producer, as in Zaqar).
* ``burst_over`` / ``burst_under``: ``3 x queue`` and ``0.9 x queue`` spans at
  once, no waiting: what was dropped must be counted, nothing may be dropped
  below capacity; ``unaccounted`` = exported + failed + dropped - spans (0 when
  the counters add up exactly).

Usage::

    python -m bench.export [--quick] [--spans 100000]

Writes ``bench/results/export.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench import bridge, common, sink

TARGET_SPANS_PER_S = 40_000
DEFAULT_QUEUE = 2048
# The producer's wait while the queue is 3/4 full: long enough not to take the
# GIL from the exporter thread every few microseconds (a batch of 512 takes ~20 ms).
PACE = 0.002


def queue_size() -> int:
    return int(os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE") or DEFAULT_QUEUE)


def captured_spans(count: int) -> list[ReadableSpan]:
    """``count`` spans as the bridge makes them (OSProfiler start + stop, seven attributes)."""
    from zaqar_otel.bridge import provider
    from zaqar_otel.bridge import spans as bridge_spans

    # the bridge's span code on a private provider: the process's one driver
    # (end_to_end) stays the only one that builds a global provider
    memory = InMemorySpanExporter()
    hints = provider.HintedIdGenerator()
    private = TracerProvider(id_generator=hints, resource=provider.resource_for("zaqar-bench"))
    private.add_span_processor(SimpleSpanProcessor(memory))
    span_bridge = bridge_spans.SpanBridge(private.get_tracer("zaqar_otel"), hints)
    bridge.activate(span_bridge.handle)
    for _ in range(count):
        bridge.profiled_span()
    spans = list(memory.get_finished_spans())
    if len(spans) != count:
        raise RuntimeError(f"captured {len(spans)} of {count} spans")
    return spans


PROTOCOLS: dict[str, dict[str, Any]] = {
    # name: how the pipeline is built (protocol, the SDK's exporter instead of the bridge's, env)
    "http": {"protocol": "http/protobuf"},
    "http_stock_exporter": {"protocol": "http/protobuf", "stock": True},
    "http_gzip": {"protocol": "http/protobuf", "env": {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}},
    "grpc": {"protocol": "grpc"},
    "grpc_stock_exporter": {"protocol": "grpc", "stock": True},
}


def pipeline(
    endpoint: str, protocol: str = "http/protobuf", stock: bool = False, env: Any = None
) -> tuple[Any, Any]:
    """(processor, guarded exporter) as the bridge builds them for ``endpoint``
    (``http://HOST:PORT``, or ``HOST:PORT`` for gRPC); ``stock``: the SDK's exporter."""
    from zaqar_otel.bridge import export

    address = endpoint.split("://", 1)[-1]
    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})
    try:
        if stock and protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            inner: Any = OTLPSpanExporter(endpoint=f"http://{address}", insecure=True)
        elif stock:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            inner = HttpExporter(endpoint=f"http://{address}/v1/traces")
        else:
            connection = f"otel://{address}?protocol={protocol}"
            inner = export.build_exporter(export.parse_connection_string(connection))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if inner is None:
        raise RuntimeError("no exporter (OTEL_TRACES_EXPORTER=none?)")
    guarded = export.GuardedExporter(inner)
    return export.CountingBatchSpanProcessor(guarded), guarded


def _export_thread_ns(processor: Any) -> int:
    """CPU time of the processor's export thread so far (0 if unknown)."""
    thread = getattr(getattr(processor, "_batch_processor", None), "_worker_thread", None)
    if thread is None or thread.ident is None:
        return 0
    try:
        return time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))
    except (OSError, AttributeError):
        return 0


def sustained(
    endpoint: str, spans: Sequence[ReadableSpan], total: int, **how: Any
) -> dict[str, Any]:
    """Feed ``total`` spans (cycling ``spans``) keeping the queue under 3/4; spans/s and the
    export thread's CPU per span (its own, plus the final flush in this thread)."""
    processor, exporter = pipeline(endpoint, **how)
    high = queue_size() * 3 // 4
    thread_before = _export_thread_ns(processor)
    cpu = time.process_time_ns()
    started = time.perf_counter()
    for i in range(total):
        while processor.queued() >= high:
            time.sleep(PACE)
        processor.on_end(spans[i % len(spans)])
    flush = time.thread_time_ns()
    processor.force_flush(60_000)
    flush = time.thread_time_ns() - flush
    elapsed = time.perf_counter() - started
    cpu = time.process_time_ns() - cpu
    thread = _export_thread_ns(processor) - thread_before
    processor.shutdown()
    result = _counted(total, elapsed, processor, exporter)
    result["export_thread_ns_per_span"] = round((thread + flush) / total, 1)
    result["process_cpu_ns_per_span"] = round(cpu / total, 1)
    return result


def end_to_end(drv: Any, total: int) -> dict[str, Any]:
    """``total`` spans made live through OSProfiler + the bridge (``drv``), exported over OTLP.

    The driver's counters are cumulative: this run's share is the difference.
    """
    processor, exporter = drv.processor, drv.exporter
    before = (exporter.exported, exporter.failed, processor.dropped)
    bridge.activate(drv)
    high = queue_size() * 3 // 4
    started = time.perf_counter()
    for _ in range(total):
        while processor.queued() >= high:
            time.sleep(PACE)
        bridge.profiled_span()
    processor.force_flush(60_000)
    elapsed = time.perf_counter() - started
    return _counted(total, elapsed, processor, exporter, before)


def burst(endpoint: str, spans: Sequence[ReadableSpan], total: int) -> dict[str, Any]:
    """``total`` spans handed over at once; then flush and count."""
    processor, exporter = pipeline(endpoint)
    started = time.perf_counter()
    for i in range(total):
        processor.on_end(spans[i % len(spans)])
    handed = time.perf_counter() - started
    processor.force_flush(60_000)
    elapsed = time.perf_counter() - started
    processor.shutdown()
    result = _counted(total, elapsed, processor, exporter)
    result["handover_seconds"] = round(handed, 4)
    return result


def _counted(
    total: int,
    elapsed: float,
    processor: Any,
    exporter: Any,
    before: tuple[int, int, int] = (0, 0, 0),
) -> dict[str, Any]:
    exported = exporter.exported - before[0]
    failed = exporter.failed - before[1]
    dropped = processor.dropped - before[2]
    return {
        "spans": total,
        "seconds": round(elapsed, 3),
        "spans_per_s": round(total / elapsed, 1),
        "exported": exported,
        "export_failed": failed,
        "dropped_queue_full": dropped,
        # exported + failed + dropped - spans: 0 when every span is accounted for
        "unaccounted": exported + failed + dropped - total,
    }


def protocols(spans: Sequence[ReadableSpan], total: int) -> tuple[dict[str, Any], bool]:
    """One sustained run per way of exporting (``PROTOCOLS``), to ``bench.sink`` or
    ``bench.grpc_sink``; the receivers' counts must match the exporters'."""
    from bench import grpc_sink

    results: dict[str, dict[str, Any]] = {}
    with sink.Sink() as http_receiver, grpc_sink.GrpcSink() as grpc_receiver:
        for name, how in PROTOCOLS.items():
            endpoint = (
                grpc_receiver.endpoint if how["protocol"] == "grpc" else http_receiver.endpoint
            )
            results[name] = sustained(endpoint, spans, total, **how)
        received = http_receiver.count()["spans"] + grpc_receiver.count()["spans"]
    acknowledged = sum(r["exported"] for r in results.values())
    return results, received == acknowledged


def measure(
    total: int, rounds: int, capture: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    spans = captured_spans(capture)
    capacity = queue_size()
    results: dict[str, list[dict[str, Any]]] = {
        "sustained": [],
        "end_to_end": [],
        "burst_over": [],
        "burst_under": [],
    }
    with sink.Sink() as receiver:
        endpoint = receiver.endpoint
        drv = bridge.driver(connection_string=f"otel://{endpoint[7:]}")
        for r in range(rounds):
            progress(f"export round {r + 1}/{rounds}")
            results["sustained"].append(sustained(endpoint, spans, total))
            results["end_to_end"].append(end_to_end(drv, max(total // 5, 100)))
            results["burst_over"].append(burst(endpoint, spans, 3 * capacity))
            results["burst_under"].append(burst(endpoint, spans, capacity * 9 // 10))
        received = receiver.count()
    progress("export protocols")
    compared, compared_match = protocols(spans, max(total // 2, 1000))
    sent = sum(r["exported"] for runs in results.values() for r in runs)
    summary = {
        name: {
            "spans_per_s_median": round(common.median([r["spans_per_s"] for r in runs]), 1),
            "dropped_queue_full": [r["dropped_queue_full"] for r in runs],
            "exported": [r["exported"] for r in runs],
            "unaccounted": [r["unaccounted"] for r in runs],
        }
        for name, runs in results.items()
    }
    thread_ns = [r["export_thread_ns_per_span"] for r in results["sustained"]]
    return {
        "export_thread_ns_per_span": round(common.median(thread_ns), 1),
        "protocols": compared,
        "protocols_receivers_match_exporters": compared_match,
        "queue_size": capacity,
        "spans_sustained": total,
        "rounds": rounds,
        "summary": summary,
        "receiver_spans": received["spans"],
        "exporter_acknowledged_spans": sent,
        "receiver_matches_exporter": received["spans"] == sent,
        "zero_drops_sustained": all(r["dropped_queue_full"] == 0 for r in results["sustained"]),
        "zero_drops_below_capacity": all(
            r["dropped_queue_full"] == 0 for r in results["burst_under"]
        ),
        "target_spans_per_s": TARGET_SPANS_PER_S,
        "runs": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke test)")
    parser.add_argument("--spans", type=int, default=100_000, help="spans per sustained run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    total, rounds, capture = (2_000, 1, 500) if args.quick else (args.spans, args.rounds, 5_000)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    result = measure(total, rounds, capture, progress)
    result["quick"] = args.quick
    common.write_result("export", result)
    common.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
