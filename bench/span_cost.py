"""Cost of one OSProfiler span through the bridge, against a bare SDK span and OSProfiler alone.

Three variants, timed in interleaved rounds in one process (median of the rounds):

* ``bridge``: ``profiler.start`` + ``profiler.stop`` with the ``otel://`` driver
  as notifier: OSProfiler's work, the bridge's (ids, attributes, context attach,
  pairing), the SDK span, the bridge's batch processor with a null exporter;
* ``otel_sdk``: ``tracer.start_span(name).end()`` on a plain SDK provider with a
  ``BatchSpanProcessor`` and a null exporter;
* ``otel_sdk_same_span``: the span the bridge makes, made with the SDK directly:
  the same seven attributes, attached as current context while open;
* ``osprofiler_noop``: ``profiler.start`` + ``profiler.stop`` with
  ``notifier.set(lambda info: None)``.

Ratios are medians over rounds of the ratio within a round. The bridge pays
OSProfiler's own work on top of a span; ``bridge - osprofiler_noop`` is what
the driver adds to a service that profiles with OSProfiler anyway.

Usage::

    python -m bench.span_cost [--quick] [--rounds 7] [--spans 20000] [--profile]

``--profile`` prints a pyinstrument profile of the bridge variant to stderr.
Writes ``bench/results/span_cost.json``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bench import bridge, common

TARGET = 1.3  # bridge / bare OTel SDK span


def measure(rounds: int, spans: int) -> dict[str, Any]:
    ops, flush, drv = _ops()
    per_round: dict[str, list[float]] = {name: [] for name in ops}
    names = list(ops)
    for setup, op in ops.values():  # warm-up: caches, lazy imports
        setup()
        common.time_per_op(op, max(spans // 10, 10))
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            setup, op = ops[name]
            setup()
            gc.collect()
            per_round[name].append(common.time_per_op(op, spans))
            flush()
    medians = {name: common.median(values) for name, values in per_round.items()}

    def paired(a: str, b: str, minus: str | None = None) -> float:
        """Median over rounds of a/b (or (a - minus)/b) within the same round."""
        return round(
            common.median(
                [
                    (x - (per_round[minus][i] if minus else 0)) / per_round[b][i]
                    for i, x in enumerate(per_round[a])
                ]
            ),
            3,
        )

    return {
        "rounds": rounds,
        "spans_per_round": spans,
        "ns_per_span": {k: round(v, 1) for k, v in medians.items()},
        "ns_per_span_rounds": {k: [round(x, 1) for x in v] for k, v in per_round.items()},
        "ratio_bridge_vs_otel_sdk": paired("bridge", "otel_sdk"),
        "ratio_bridge_vs_osprofiler_noop": paired("bridge", "osprofiler_noop"),
        "ratio_bridge_minus_osprofiler_vs_otel_sdk": paired(
            "bridge", "otel_sdk", minus="osprofiler_noop"
        ),
        "ratio_bridge_vs_otel_sdk_same_span": paired("bridge", "otel_sdk_same_span"),
        "ratio_bridge_minus_osprofiler_vs_otel_sdk_same_span": paired(
            "bridge", "otel_sdk_same_span", minus="osprofiler_noop"
        ),
        "target_bridge_vs_otel_sdk": TARGET,
        "driver_status": bridge.status(drv),
    }


def _ops() -> tuple[dict[str, tuple[Callable[[], None], Callable[[], None]]], Any, Any]:
    """{variant: (setup before a round, one span)}, flush both queues, the bridge driver."""
    sdk = TracerProvider()
    sdk.add_span_processor(BatchSpanProcessor(bridge.NullExporter()))
    tracer = sdk.get_tracer("bench")
    name = f"{bridge.SPAN_NAME} MessageController.post"
    drv = bridge.driver(exporter=bridge.NullExporter())

    def bare() -> None:
        tracer.start_span(name).end()

    base_id, element_id = str(uuid.uuid4()), str(uuid.uuid4())
    # what the bridge records by default: no arguments (content), the host in the resource
    attributes = {
        "osprofiler.name": bridge.SPAN_NAME,
        "code.function.name": bridge.FUNCTION,
        "osprofiler.id": element_id,
        "osprofiler.base_id": base_id,
    }

    def same_span() -> None:
        span = tracer.start_span(name, attributes=attributes)
        token = context_api.attach(trace.set_span_in_context(span))
        context_api.detach(token)
        span.end()

    def noop(info: Any) -> None:
        return None

    ops = {
        "bridge": (lambda: bridge.activate(drv), bridge.profiled_span),
        "otel_sdk": (lambda: None, bare),
        "otel_sdk_same_span": (lambda: None, same_span),
        "osprofiler_noop": (lambda: bridge.activate(noop), bridge.profiled_span),
    }

    def flush() -> None:
        sdk.force_flush()
        drv.provider.force_flush()

    return ops, flush, drv


def profile(spans: int) -> None:
    """A pyinstrument profile of ``spans`` bridge spans, printed to stderr."""
    from pyinstrument import Profiler

    ops, _, _ = _ops()
    setup, op = ops["bridge"]
    setup()
    common.time_per_op(op, 1000)
    with Profiler(interval=0.0001) as prof:
        common.time_per_op(op, spans)
    print(prof.output_text(unicode=False, color=False, show_all=False), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke test)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--spans", type=int, default=5_000, help="spans per variant and round")
    parser.add_argument("--profile", action="store_true", help="pyinstrument the bridge")
    args = parser.parse_args(argv)
    rounds, spans = (2, 200) if args.quick else (args.rounds, args.spans)
    # Room for a whole round in both queues: a worker thread starved by a busy
    # machine must not turn the round into a count of drops (bench.export does).
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(max(spans + 1000, 2048))
    if args.profile:
        profile(spans)
        return 0
    result = measure(rounds, spans)
    result["quick"] = args.quick
    common.write_result("span_cost", result)
    common.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
