"""CPU per span of turning finished spans into an OTLP request: three encoders, and gzip.

Spans the bridge made (OSProfiler start + stop, captured once), in batches of 512 (the
batch processor's default), each way timed in interleaved rounds in one process
(thread CPU time per span; the median of the rounds):

* ``sdk``: ``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans(batch)
  .SerializeToString()``, what the SDK's OTLP exporters (HTTP and gRPC) do;
* ``protobuf_direct``: the same request, the protobuf messages built directly (one
  ``Span(...)`` per span with its ``KeyValue``/``AnyValue`` lists, no helper calls),
  then serialized: how much of the SDK's cost is its Python helpers;
* ``bridge``: ``zaqar_otel.bridge.encoder.encode_spans(batch)`` (wire bytes written
  directly), what the bridge's exporters send;
* ``gzip_sdk``: gzip of the bridge's request as the SDK's HTTP exporter compresses with
  ``OTEL_EXPORTER_OTLP_COMPRESSION=gzip`` (``GzipFile``, level 9); ``gzip_fast``: level 1.

The requests of the three encoders decode to the same message (checked here too).

Usage::

    python -m bench.encoding [--quick] [--rounds 9]

Writes ``bench/results/encoding.json``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.sdk.trace import ReadableSpan

from bench import common, export
from zaqar_otel.bridge import encoder

BATCH = 512


def _value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    return AnyValue(double_value=value)


def protobuf_direct(spans: Sequence[ReadableSpan]) -> bytes:
    """The request of ``spans`` (one resource, one scope, scalar attributes) built directly."""
    first = spans[0]
    pb_spans = []
    for span in spans:
        context, parent = span.context, span.parent
        assert context is not None
        pb_spans.append(
            Span(
                trace_id=context.trace_id.to_bytes(16, "big"),
                span_id=context.span_id.to_bytes(8, "big"),
                parent_span_id=parent.span_id.to_bytes(8, "big") if parent else None,
                name=span.name,
                kind=span.kind.value + 1,
                start_time_unix_nano=span.start_time,
                end_time_unix_nano=span.end_time,
                attributes=[
                    KeyValue(key=k, value=_value(v)) for k, v in (span.attributes or {}).items()
                ],
                status=Status(code=span.status.status_code.value, message=span.status.description),
                flags=0x100 | (0x200 if parent is not None and parent.is_remote else 0),
            )
        )
    scope = first.instrumentation_scope
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[
                        KeyValue(key=k, value=_value(v))
                        for k, v in first.resource.attributes.items()
                    ]
                ),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(
                            name=scope.name if scope else "", version=scope.version if scope else ""
                        ),
                        spans=pb_spans,
                    )
                ],
            )
        ]
    )
    return bytes(request.SerializeToString())


def _gzip(level: int) -> Callable[[bytes], bytes]:
    def compress(data: bytes) -> bytes:
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="w", compresslevel=level) as stream:
            stream.write(data)
        return buffer.getvalue()

    return compress


def measure(rounds: int, spans_count: int) -> dict[str, Any]:
    spans = export.captured_spans(spans_count)
    batches = [spans[i : i + BATCH] for i in range(0, len(spans), BATCH)]
    encoded = [encoder.encode_spans(batch) for batch in batches]
    for batch, ours in zip(batches, encoded, strict=True):
        theirs = sdk_encode(batch).SerializeToString()
        direct = protobuf_direct(batch)
        parsed = ExportTraceServiceRequest.FromString(ours)
        if parsed != ExportTraceServiceRequest.FromString(theirs):
            raise RuntimeError("the bridge's encoder and the SDK's disagree")
        if parsed != ExportTraceServiceRequest.FromString(direct):
            raise RuntimeError("the direct protobuf build disagrees")
    ways: dict[str, Callable[[int], object]] = {
        "sdk": lambda i: sdk_encode(batches[i]).SerializeToString(),
        "protobuf_direct": lambda i: protobuf_direct(batches[i]),
        "bridge": lambda i: encoder.encode_spans(batches[i]),
        "gzip_sdk": lambda i: _gzip(9)(encoded[i]),
        "gzip_fast": lambda i: _gzip(1)(encoded[i]),
    }
    names = list(ways)
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            way = ways[name]
            started = time.thread_time_ns()
            for i in range(len(batches)):
                way(i)
            per_round[name].append((time.thread_time_ns() - started) / len(spans))
    ns = {name: round(common.median(values), 1) for name, values in per_round.items()}
    return {
        "rounds": rounds,
        "spans": len(spans),
        "batch": BATCH,
        "bytes_per_span": round(sum(map(len, encoded)) / len(spans), 1),
        "gzip_ratio": round(sum(len(_gzip(9)(e)) for e in encoded) / sum(map(len, encoded)), 3),
        "clock": "thread CPU time",
        "ns_per_span": ns,
        "ns_per_span_rounds": {k: [round(x, 1) for x in v] for k, v in per_round.items()},
        "ratio_sdk_vs_bridge": common.paired(per_round["sdk"], per_round["bridge"]),
        "ratio_protobuf_direct_vs_bridge": common.paired(
            per_round["protobuf_direct"], per_round["bridge"]
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke test)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--spans", type=int, default=5_120)
    args = parser.parse_args(argv)
    rounds, spans = (2, 600) if args.quick else (args.rounds, args.spans)
    result = measure(rounds, spans)
    result["quick"] = args.quick
    common.write_result("encoding", result)
    common.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
