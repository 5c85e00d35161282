"""CPU cost of one OSProfiler span through the bridge, against an SDK span and OSProfiler alone.

Variants, timed in interleaved rounds in one process (process CPU time per span; the
median of the rounds):

* ``bridge``: ``profiler.start`` + ``profiler.stop`` with the ``otel://`` driver as
  notifier, inside an open request span (as Zaqar's storage calls are): OSProfiler's
  work, the bridge's (ids, attributes, context attach, pairing), the span, the
  bridge's batch processor with a null exporter;
* ``osprofiler_noop``: the same OSProfiler calls with ``notifier.set(lambda info: None)``;
* ``otel_sdk_same_attributes``: ``tracer.start_span(name, attributes=...)`` + ``end()``
  with the attributes the bridge writes, on a plain SDK provider with a
  ``BatchSpanProcessor`` and a null exporter (the target's yardstick);
* ``otel_sdk``: a bare ``tracer.start_span(name).end()``;
* ``otel_sdk_same_span``: the SDK span with those attributes, also attached as the
  current context while open (what the bridge does besides);
* ``bridge_root`` / ``osprofiler_noop_root``: each span a trace of its own (the
  per-request work, the ``[profiler]`` flags read once per request, counted in every span).

The target: the bridge's marginal cost per span, ``bridge - osprofiler_noop`` (what the
driver adds to a service that profiles with OSProfiler anyway), is at most 1.3 x
``otel_sdk_same_attributes``; ratios are medians over rounds of the same-round ratio.

Usage::

    python -m bench.span_cost [--quick] [--rounds 15] [--spans 5000] [--profile]

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

TARGET = 1.3  # (bridge - OSProfiler alone) / SDK span with the same attributes
Op = tuple[Callable[[], None], Callable[[], None], Callable[[], None]]  # setup, op, teardown


def _nested(notify: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    """(setup, teardown): a trace with an open request span that the measured spans join."""
    return lambda: bridge.open_request(notify), bridge.close_request


def _nothing() -> None:
    return None


def variants(drv: Any) -> tuple[dict[str, Op], Callable[[], None]]:
    """({variant: (setup before a round, one span, teardown after it)}, flush both queues)."""
    sdk = TracerProvider()
    sdk.add_span_processor(BatchSpanProcessor(bridge.NullExporter()))
    tracer = sdk.get_tracer("bench")
    name = f"{bridge.SPAN_NAME} MessageController.post"
    # what the bridge records by default: no arguments (content), the host in the resource
    attributes = {
        "osprofiler.name": bridge.SPAN_NAME,
        "code.function.name": bridge.FUNCTION,
        "osprofiler.id": str(uuid.uuid4()),
        "osprofiler.base_id": str(uuid.uuid4()),
    }

    def bare() -> None:
        tracer.start_span(name).end()

    def same_attributes() -> None:
        tracer.start_span(name, attributes=attributes).end()

    def same_span() -> None:
        span = tracer.start_span(name, attributes=attributes)
        token = context_api.attach(trace.set_span_in_context(span))
        context_api.detach(token)
        span.end()

    def noop(info: Any) -> None:
        return None

    def flush() -> None:
        sdk.force_flush()
        drv.provider.force_flush()

    nested_bridge, nested_noop = _nested(drv), _nested(noop)
    ops: dict[str, Op] = {
        "bridge": (nested_bridge[0], bridge.profiled_span, nested_bridge[1]),
        "osprofiler_noop": (nested_noop[0], bridge.profiled_span, nested_noop[1]),
        "otel_sdk_same_attributes": (_nothing, same_attributes, _nothing),
        "otel_sdk": (_nothing, bare, _nothing),
        "otel_sdk_same_span": (_nothing, same_span, _nothing),
        "bridge_root": (lambda: bridge.activate(drv), bridge.profiled_span, _nothing),
        "osprofiler_noop_root": (lambda: bridge.activate(noop), bridge.profiled_span, _nothing),
    }
    return ops, flush


def measure(rounds: int, spans: int) -> dict[str, Any]:
    drv = bridge.driver(exporter=bridge.NullExporter())
    ops, flush = variants(drv)
    names = list(ops)
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for setup, op, teardown in ops.values():  # warm-up: caches, lazy imports
        setup()
        common.cpu_per_op(op, max(spans // 10, 10))
        teardown()
    flush()
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            setup, op, teardown = ops[name]
            setup()
            gc.collect()
            per_round[name].append(common.cpu_per_op(op, spans))
            teardown()
            flush()
    medians = {name: common.median(values) for name, values in per_round.items()}

    def marginal(variant: str, floor: str) -> list[float]:
        return [a - b for a, b in zip(per_round[variant], per_round[floor], strict=True)]

    bridge_marginal = marginal("bridge", "osprofiler_noop")
    root_marginal = marginal("bridge_root", "osprofiler_noop_root")
    yardstick = per_round["otel_sdk_same_attributes"]
    return {
        "rounds": rounds,
        "spans_per_round": spans,
        "clock": "process CPU time",
        "ns_per_span": {k: round(v, 1) for k, v in medians.items()},
        "ns_per_span_rounds": {k: [round(x, 1) for x in v] for k, v in per_round.items()},
        "bridge_marginal_ns": round(common.median(bridge_marginal), 1),
        "ratio_bridge_marginal_vs_sdk_same_attributes": common.paired(bridge_marginal, yardstick),
        "ratio_bridge_marginal_vs_sdk_same_attributes_spread": common.spread(
            [a / b for a, b in zip(bridge_marginal, yardstick, strict=True)]
        ),
        "ratio_bridge_marginal_vs_sdk_same_span": common.paired(
            bridge_marginal, per_round["otel_sdk_same_span"]
        ),
        "ratio_bridge_marginal_vs_sdk_bare": common.paired(bridge_marginal, per_round["otel_sdk"]),
        "ratio_bridge_root_marginal_vs_sdk_same_attributes": common.paired(
            root_marginal, yardstick
        ),
        "ratio_bridge_vs_osprofiler_noop": common.paired(
            per_round["bridge"], per_round["osprofiler_noop"]
        ),
        "target_bridge_marginal_vs_sdk_same_attributes": TARGET,
        "driver_status": bridge.status(drv),
    }


def profile(spans: int) -> None:
    """A pyinstrument profile of ``spans`` bridge spans (nested in a request), to stderr."""
    from pyinstrument import Profiler

    drv = bridge.driver(exporter=bridge.NullExporter())
    setup, op, teardown = variants(drv)[0]["bridge"]
    setup()
    common.time_per_op(op, 1000)
    with Profiler(interval=0.0001) as prof:
        common.time_per_op(op, spans)
    teardown()
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
