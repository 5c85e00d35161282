"""W3C Trace Context headers (``traceparent``, ``tracestate``) read strictly and quietly.

``parse(traceparent, tracestate)`` gives the caller's span as a remote ``SpanContext``
(its flags and trace state included), or None for a header that is not a valid
``traceparent`` (W3C Trace Context level 1: version ``00`` exactly four fields, a
later version at least those four, never ``ff``; lower-case hex; neither id zero;
spaces and tabs around it ignored; at most 512 characters).

A ``tracestate`` that is not valid (a bad member, a key twice, more than 32 members,
more than 512 characters) is dropped, the ``traceparent`` kept: the W3C allows it, and
it keeps what a caller can make Zaqar carry on small. Unlike the OTel propagator,
nothing here logs: the headers come from anyone, and a log line per bad header would
let anyone fill the log.
"""

from __future__ import annotations

import re

from opentelemetry.trace import SpanContext, TraceFlags, TraceState

MAX_HEADER = 512  # longer headers are not valid here (a traceparent has 55 characters)
MAX_MEMBERS = 32
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_KEY = r"[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(f"({_KEY})=({_VALUE})")


def parse(traceparent: str | None, tracestate: str | None = None) -> SpanContext | None:
    """The remote span a valid ``traceparent`` names (with ``tracestate``), else None."""
    fields = parse_traceparent(traceparent)
    return None if fields is None else span_context(fields, tracestate)


def parse_traceparent(header: str | None) -> tuple[int, int, int] | None:
    """(trace id, span id, flags) of a valid ``traceparent``, else None (cheap: no objects)."""
    if not header or len(header) > MAX_HEADER:
        return None
    match = _TRACEPARENT.fullmatch(header.strip(" \t"))
    if match is None:
        return None
    version, trace_hex, span_hex, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(flags, 16)


def is_sampled(flags: int) -> bool:
    return bool(flags & TraceFlags.SAMPLED)


def span_context(fields: tuple[int, int, int], tracestate: str | None) -> SpanContext:
    """The caller's span from ``parse_traceparent``'s fields and its ``tracestate``."""
    trace_id, span_id, flags = fields
    return SpanContext(
        trace_id,
        span_id,
        is_remote=True,
        trace_flags=TraceFlags(flags),
        trace_state=parse_tracestate(tracestate),
    )


def parse_tracestate(header: str | None) -> TraceState:
    """The members of a valid ``tracestate``; empty for a missing or invalid one."""
    if not header or len(header) > MAX_HEADER:
        return TraceState()
    pairs: list[tuple[str, str]] = []
    for member in header.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        match = _MEMBER.fullmatch(member)
        if match is None:
            return TraceState()
        pairs.append((match.group(1), match.group(2)))
    keys = {key for key, _ in pairs}
    if len(pairs) > MAX_MEMBERS or len(keys) != len(pairs):
        return TraceState()
    return TraceState(pairs)
