"""What ``[profiler] link_messages`` costs a traced post and a traced list, in one process.

One in-process Zaqar app (Redis messages, SQLite management, OTLP to a local
receiver), every request signed. Batches alternate between ``link_messages =
true`` and ``false`` (the flag is mutable: flipped with ``set_override``), each
mode on a queue of its own, so that a linked list reads only messages that have
a stored context (up to 10: one link each) and an unlinked one none. Same
process, same heap, interleaved batches: drift and the load of a shared machine
cancel out in the paired differences, where ``bench.requests`` compares processes.

Usage::

    python -m bench.link_cost [--batches 30] [--ops 20]

Writes ``bench/results/link_cost.json``: per batch pair, the difference of the
median POST and GET latencies and of the CPU time per operation (on - off).

On a busy machine those differences drown in the noise; ``micro`` times the code
the flag adds, alone, in interleaved rounds (median of rounds, microseconds):
``producer`` is one posted message (its ``create`` span started, its context
packed, the span ended into a batch processor with a null exporter; the Redis
``HSET`` rides in the post's own MULTI/EXEC round trip), ``consumer_10`` a
receive of ten messages with stored contexts (read hooks, ids, ages, ten links),
``bare_span`` an SDK span for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

from bench import common


def _batch(client: Any, ops: int, start: int) -> dict[str, float]:
    posts, lists = [], []
    cpu = time.process_time_ns()
    for n in range(start, start + ops):
        post, listed = client.operation(n)
        posts.append(post)
        lists.append(listed)
    return {
        "post_ns": common.median(posts),
        "list_ns": common.median(lists),
        "cpu_ns_per_op": (time.process_time_ns() - cpu) / ops,
    }


def micro(rounds: int = 9, n: int = 5000) -> dict[str, float]:
    """Microseconds per operation of the code ``link_messages`` adds (see the docstring)."""
    import uuid

    from opentelemetry import context as context_api
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from bench import bridge
    from zaqar_otel.bridge.gate import PROFILED
    from zaqar_otel.zaqar import consumer, producer

    sdk = TracerProvider()
    sdk.add_span_processor(BatchSpanProcessor(bridge.NullExporter()))
    trace.set_tracer_provider(sdk)
    tracer = sdk.get_tracer("bench")
    request = tracer.start_span("request")
    context_api.attach(context_api.set_value(PROFILED, True, trace.set_span_in_context(request)))
    ids = [str(uuid.uuid4()) for _ in range(10)]

    def producer_one() -> None:
        batch = producer.PostedBatch("orders")
        batch.context_for(ids[0])
        batch.close(None)

    stored = producer.PostedBatch("orders")
    contexts = {i: stored.context_for(i) for i in ids}
    stored.close(None)
    returned = [(i, 3) for i in ids]

    def consumer_ten() -> None:
        span = tracer.start_span("claim")
        consumer.start_receiving()
        sink = consumer.receiving_sink()
        for i in ids:  # what the store hooks do per message read
            if sink is not None:
                sink[i] = contexts[i]  # type: ignore[assignment]
        consumer.record_received(span, returned, consumer.stop_receiving())
        span.end()

    def bare_span() -> None:
        tracer.start_span("bare").end()

    ops = {"producer": producer_one, "consumer_10": consumer_ten, "bare_span": bare_span}
    per_round: dict[str, list[float]] = {name: [] for name in ops}
    for op in ops.values():
        common.time_per_op(op, n // 10)
    for r in range(rounds):
        names = list(ops)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            per_round[name].append(common.time_per_op(ops[name], n))
    return {name: round(common.median(v) / 1000, 1) for name, v in per_round.items()}


def measure(batches: int, ops: int) -> dict[str, Any]:
    import uuid

    from oslo_config import cfg
    from tests import zaqar_server as zs
    from tests.servers import RedisServer

    from bench import requests as bench_requests
    from bench import sink

    with (
        tempfile.TemporaryDirectory(prefix="bench-link-") as tmp,
        RedisServer() as redis_server,
        sink.Sink() as receiver,
    ):
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
        sql_url = f"sqlite:///{tmp}/zaqar.db"
        zs.create_management_tables(sql_url)
        app = bench_requests.App("enabled-signed", redis_server.url, sql_url)  # type: ignore[attr-defined]
        clients = {
            mode: bench_requests.Client(app.client.app, f"link-{uuid.uuid4().hex[:8]}", True)
            for mode in ("on", "off")
        }
        for client in clients.values():
            status, _ = client.call("PUT", f"/v2/queues/{client.queue}")
            assert status in (201, 204)

        def run(mode: str, start: int) -> dict[str, float]:
            cfg.CONF.set_override("link_messages", mode == "on", "profiler")
            return _batch(clients[mode], ops, start)

        for warm in range(2):  # both queues hold 10+ messages before measuring
            run("on", warm * ops)
            run("off", warm * ops)
        pairs = []
        for index in range(batches):
            start = (index + 2) * ops
            order = ("on", "off") if index % 2 == 0 else ("off", "on")
            result = {mode: run(mode, start) for mode in order}
            pairs.append(result)
        exported = receiver.count()
    diff = {
        key: [p["on"][key] - p["off"][key] for p in pairs]
        for key in ("post_ns", "list_ns", "cpu_ns_per_op")
    }
    return {
        "batches": batches,
        "ops_per_batch": ops,
        "operation": "signed POST 1 message + signed GET messages (limit 10)",
        "post_us_off_median": round(common.median([p["off"]["post_ns"] for p in pairs]) / 1e3, 1),
        "list_us_off_median": round(common.median([p["off"]["list_ns"] for p in pairs]) / 1e3, 1),
        "post_extra_us_median": round(common.median(diff["post_ns"]) / 1e3, 1),
        "list_extra_us_median": round(common.median(diff["list_ns"]) / 1e3, 1),
        "cpu_extra_us_per_op_median": round(common.median(diff["cpu_ns_per_op"]) / 1e3, 1),
        "receiver": exported,
        "pairs": pairs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--ops", type=int, default=20)
    parser.add_argument("--micro-only", action="store_true", help="only the code, no Zaqar")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {} if args.micro_only else measure(args.batches, args.ops)
    result["micro_us"] = micro()
    common.write_result("link_cost", result)
    print(json.dumps({k: v for k, v in result.items() if k != "pairs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
