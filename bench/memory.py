"""Memory: resident set size after 100,000 spans through the bridge against after 1,000.

One process, the ``otel://`` driver with its own batch processor and a null
exporter (no network, so the queue drains and is never the limit). Spans are
OSProfiler start + stop pairs, each 1,000 spans one trace (a new base id, as
requests would have). RSS (``VmRSS``) is read after a flush and a full GC at
each checkpoint; the driver's counters must show nothing open or dropped.
The growth is compared with what a full span queue holds (tracemalloc).

Usage::

    python -m bench.memory [--quick] [--spans 100000]

Writes ``bench/results/memory.json``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from typing import Any

from osprofiler import profiler

from bench import bridge, common, export

TARGET_RATIO = 1.05  # no growth beyond the queue: RSS after 100k / after 1k
SPANS_PER_TRACE = 1_000


def measure(total: int, first: int) -> dict[str, Any]:
    exporter = bridge.NullExporter()
    drv = bridge.driver(exporter=exporter)
    bridge.activate(drv)
    checkpoints = sorted({first, total // 10, total // 2, total})
    high = export.queue_size() * 3 // 4
    rss: dict[str, int] = {"before_first_span": common.rss_kib()}
    done = 0
    for checkpoint in checkpoints:
        while done < checkpoint:
            if done % SPANS_PER_TRACE == 0:
                profiler.clean()
                profiler.init(bridge.HMAC_KEY)
            if done % 256 == 0:
                # pace to the exporter thread (starved on a busy machine, it
                # would let the queue overflow: drops are bench.export's subject)
                while drv.processor.queued() >= high:
                    time.sleep(0.002)
            bridge.profiled_span()
            done += 1
        drv.provider.force_flush()
        gc.collect()
        rss[str(checkpoint)] = common.rss_kib()
    status = bridge.status(drv)
    after_first, after_all = rss[str(first)], rss[str(total)]
    queue_kib = full_queue_kib()
    return {
        "spans": total,
        "first_checkpoint": first,
        "rss_kib": rss,
        "ratio_rss_all_vs_first": common.ratio(after_all, after_first),
        "growth_kib": after_all - after_first,
        # what a full span queue holds (OTEL_BSP_MAX_QUEUE_SIZE spans, measured
        # with tracemalloc): growth up to this is the queue, not a leak
        "full_queue_kib": queue_kib,
        "growth_within_queue": after_all - after_first <= queue_kib,
        "exported": exporter.exported,
        "driver_status": status,
        "target_ratio": TARGET_RATIO,
    }


def full_queue_kib() -> int:
    """KiB of Python heap that a full queue of the bridge's spans takes."""
    size = export.queue_size()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        spans = export.captured_spans(size)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del spans
    return held // 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke test)")
    parser.add_argument("--spans", type=int, default=100_000)
    args = parser.parse_args(argv)
    total, first = (2_000, 200) if args.quick else (args.spans, 1_000)
    result = measure(total, first)
    result["quick"] = args.quick
    common.write_result("memory", result)
    common.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
