"""The traces of one Zaqar message in Jaeger: the one that posted it, those that received it.

::

    from zaqar_otel.lookup.jaeger import JaegerQuery
    from zaqar_otel.lookup.messages import find_message

    found = find_message(JaegerQuery("http://jaeger:16686"), "orders", "bd6f118f-...")
    for ref in found.posted + found.received + found.settled:
        print(ref.role, ref.trace_id, ref.name)

Two of Jaeger's tag searches per service (Jaeger searches one service at a time):

1. ``messaging.message.id = ID`` and ``messaging.destination.name = QUEUE``: the
   ``create <queue>`` PRODUCER span of a profiled post or the request span of a
   one-message post (``posted``), the request span of a get, or of a claim or
   list that returned only this message (``received``), of a delete (``settled``);
2. ``messaging.destination.name = QUEUE`` and ``messaging.operation.type = receive``
   since the post (less a minute of clock skew): claims and lists that returned
   several messages, kept if the message's id is in
   ``messaging.zaqar.batch.message_ids`` or the span links to its ``create`` span.

A message posted outside a profiled request has no ``posted`` trace; its profiled
receives are still found by id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from zaqar_otel.lookup.jaeger import JaegerQuery, SpanRecord

MESSAGE_ID = "messaging.message.id"
DESTINATION = "messaging.destination.name"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
BATCH_IDS = "messaging.zaqar.batch.message_ids"
DEFAULT_LOOKBACK_S = 7 * 24 * 3600
CLOCK_SKEW_US = 60_000_000


@dataclass(frozen=True)
class TraceRef:
    """One trace in the life of a message, and the span that says so."""

    role: str  # posted, received, settled
    trace_id: str
    name: str  # the span's name (the request's route, or "create <queue>")
    operation: str  # messaging.operation.name: create, claim, list, get, delete...
    service: str
    start_us: int
    linked: bool = False  # a received trace whose span links to the posting span

    def to_json(self) -> dict[str, object]:
        return {
            "role": self.role,
            "trace_id": self.trace_id,
            "name": self.name,
            "operation": self.operation,
            "service": self.service,
            "start_us": self.start_us,
            "linked": self.linked,
        }


@dataclass
class MessageTraces:
    queue: str
    message_id: str
    posted: list[TraceRef] = field(default_factory=list)
    received: list[TraceRef] = field(default_factory=list)
    settled: list[TraceRef] = field(default_factory=list)

    def found(self) -> bool:
        return bool(self.posted or self.received or self.settled)


def _batch_ids(span: SpanRecord) -> list[str]:
    value = span.attributes.get(BATCH_IDS)
    if isinstance(value, str):  # Jaeger's v1 JSON: an array attribute as JSON text
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _role(span: SpanRecord) -> str | None:
    kind = span.attributes.get(OPERATION_TYPE)
    if kind in ("create", "send"):  # the message's create span, or a one-message post
        return "posted"
    if kind == "receive":
        return "received"
    if kind == "settle":
        return "settled"
    return None


def _ref(role: str, span: SpanRecord, linked: bool = False) -> TraceRef:
    operation = span.attributes.get(OPERATION_NAME)
    return TraceRef(
        role=role,
        trace_id=span.trace_id,
        name=span.name,
        operation=str(operation or ""),
        service=span.service,
        start_us=span.start_us,
        linked=linked,
    )


def _search(
    query: JaegerQuery, tags: dict[str, str], limit: int, start_us: int | None, lookback_s: float
) -> list[SpanRecord]:
    """Every span of the traces any service's search finds (each trace once)."""
    spans: dict[tuple[str, str], SpanRecord] = {}
    for service in query.services():
        found = query.find_traces(service, limit, lookback_s, tags, start_us=start_us)
        for trace_spans in found.values():
            for span in trace_spans:
                spans.setdefault((span.trace_id, span.span_id), span)
    return list(spans.values())


def _sorted(refs: Iterable[TraceRef]) -> list[TraceRef]:
    best: dict[str, TraceRef] = {}
    for ref in refs:  # one entry per trace: the earliest matching span
        if ref.trace_id not in best or ref.start_us < best[ref.trace_id].start_us:
            best[ref.trace_id] = ref
    return sorted(best.values(), key=lambda ref: (ref.start_us, ref.trace_id))


def find_message(
    query: JaegerQuery,
    queue: str,
    message_id: str,
    lookback_s: float = DEFAULT_LOOKBACK_S,
    limit: int = 1000,
) -> MessageTraces:
    """The traces of message ``message_id`` of ``queue`` (raises ``JaegerError``)."""
    by_id = {MESSAGE_ID: message_id, DESTINATION: queue}
    named = [
        (role, span)
        for span in _search(query, by_id, limit, None, lookback_s)
        if span.attributes.get(MESSAGE_ID) == message_id and (role := _role(span)) is not None
    ]
    creations = {(span.trace_id, span.span_id) for _, span in named if span.kind == "producer"}
    refs = [_ref(role, span, bool(creations & set(span.links))) for role, span in named]
    posted_at = min((ref.start_us for ref in refs if ref.role == "posted"), default=None)
    if posted_at is not None:
        posted_at -= CLOCK_SKEW_US  # receives on another Zaqar host: its clock may differ
    receives = {DESTINATION: queue, OPERATION_TYPE: "receive"}
    for span in _search(query, receives, limit, posted_at, lookback_s):
        if _role(span) != "received" or span.attributes.get(MESSAGE_ID) == message_id:
            continue  # single-message receives were found by id
        linked = bool(creations & set(span.links))
        if linked or message_id in _batch_ids(span):
            refs.append(_ref("received", span, linked))
    return MessageTraces(
        queue,
        message_id,
        posted=_sorted(r for r in refs if r.role == "posted"),
        received=_sorted(r for r in refs if r.role == "received"),
        settled=_sorted(r for r in refs if r.role == "settled"),
    )
