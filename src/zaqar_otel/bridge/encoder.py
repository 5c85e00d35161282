"""Finished spans -> an OTLP ``ExportTraceServiceRequest``, written as protobuf wire bytes.

The OTLP exporters of the SDK build a tree of protobuf message objects for every
batch (a ``Span``, and a ``KeyValue`` plus an ``AnyValue`` per attribute, each
through a few Python helper calls) and then serialize it: measured here, that is
most of what exporting a span costs. The trace protocol is small and stable, so
this module writes the same request directly: each field as its tag, its length
and its bytes, the encoded attributes that repeat from span to span (names, hosts,
functions, trace ids) taken from a bounded cache.

``encode_spans(spans)`` returns what
``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans(spans)
.SerializeToString()`` returns, field for field (the tests decode both and compare,
for spans with every kind of field): spans grouped by resource, then by
instrumentation scope, in the order they come; every attribute value type
(str, bool, int, float, bytes, sequences, mappings, None); events, links, status,
kinds, flags (``is_remote`` of the parent and of links), trace state, dropped counts.
A value the SDK's encoder cannot encode either (an int beyond 64 bits, an unknown
type) is left out, as there, and logged once.

Wire format reference: https://protobuf.dev/programming-guides/encoding/ and
opentelemetry-proto ``trace/v1/trace.proto``, ``common/v1/common.proto``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from zaqar_otel.bridge.logs import log_once
from zaqar_otel.bridge.recorder import LightSpan

# varints of 0..127 as one byte each; longer ones computed
_SMALL = [bytes((n,)) for n in range(128)]
_DOUBLE = struct.Struct("<d").pack
_TIMES = struct.Struct("<BQBQ").pack  # start (field 7) and end (field 8): fixed64
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# Span.flags (SpanFlags): whether the parent (or a link's span) is remote is known
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_FLAGS_LOCAL = b"\x85\x01" + _FIXED32(_HAS_IS_REMOTE)  # field 16, fixed32
_FLAGS_REMOTE = b"\x85\x01" + _FIXED32(_HAS_IS_REMOTE | _IS_REMOTE)
_LINK_FLAGS_LOCAL = b"\x35" + _FIXED32(_HAS_IS_REMOTE)  # Link field 6, fixed32
_LINK_FLAGS_REMOTE = b"\x35" + _FIXED32(_HAS_IS_REMOTE | _IS_REMOTE)
_KIND = {kind: b"\x30" + _SMALL[kind.value + 1] for kind in SpanKind}  # field 6, enum
_STATUS_UNSET = b"\x7a\x00"  # field 15: present (the SDK always sets it), empty

# Cached encodings of attribute fields ((tag, key, type, value) -> bytes): cleared when full
_CACHE_MAX = 8192
_cache: dict[tuple[int, str, type, Any], bytes] = {}
_keys: dict[str, bytes] = {}


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf varint."""
    if value < 128:
        return _SMALL[value]
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: tag byte (fields 1-15), length, payload."""
    size = len(payload)
    return bytes((tag,)) + (_SMALL[size] if size < 128 else varint(size)) + payload


def _string(tag: int, text: str) -> bytes:
    return _field(tag, text.encode("utf-8", "surrogatepass"))


def _key(key: str) -> bytes:
    """KeyValue.key (field 1), cached: attribute names repeat."""
    encoded = _keys.get(key)
    if encoded is None:
        encoded = _string(0x0A, key)
        if len(_keys) < _CACHE_MAX:
            _keys[key] = encoded
    return encoded


def _any_value(value: Any) -> bytes | None:
    """AnyValue message bytes, the SDK encoder's type order; None if not encodable."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _string(0x0A, value)
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            return None
        return b"\x18" + varint(value if value >= 0 else value + (1 << 64))
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(0x3A, value)
    if isinstance(value, Sequence):
        items = []
        for item in value:
            encoded = _any_value(item)
            if encoded is None:
                return None  # the SDK's encoder fails the whole value too
            items.append(_field(0x0A, encoded))
        return _field(0x2A, b"".join(items))
    if isinstance(value, Mapping):
        pairs = []
        for key, item in value.items():
            encoded = _any_value(item)
            if encoded is None:
                return None
            pairs.append(_field(0x0A, _key(str(key)) + _field(0x12, encoded)))
        return _field(0x32, b"".join(pairs))
    return None


_SCALARS = (str, bool, int, float)


def _attribute(tag: int, key: str, value: Any) -> bytes | None:
    """One repeated ``KeyValue`` field (``tag`` of the enclosing message), cached if scalar."""
    kind = type(value)
    if kind in _SCALARS:
        memo = (tag, key, kind, value)
        encoded = _cache.get(memo)
        if encoded is not None:
            return encoded
    else:
        memo = None
    any_value = _any_value(value)
    if any_value is None:
        log_once.warning(
            "otlp-attribute",
            "zaqar-otel: attribute %r has a value OTLP cannot carry (%s): left out (logged once)",
            key,
            kind.__name__,
        )
        return None
    encoded = _field(tag, _key(key) + _field(0x12, any_value))
    if memo is not None and len(value if kind is str else "") < 256:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[memo] = encoded
    return encoded


def _attributes(tag: int, attributes: Mapping[str, Any] | None) -> list[bytes]:
    if not attributes:
        return []
    out = []
    for key, value in attributes.items():
        encoded = _attribute(tag, key, value)
        if encoded is not None:
            out.append(encoded)
    return out


def _dropped(tag: int, count: int) -> bytes:
    return bytes((tag,)) + varint(count) if count else b""


def _trace_state(tag: int, context: SpanContext) -> bytes:
    state = context.trace_state
    if not state:
        return b""
    return _string(tag, ",".join(f"{key}={value}" for key, value in state.items()))


class _Ids:
    """Encoded trace ids, remembered for the last trace (its spans come together)."""

    __slots__ = ("encoded", "trace_id")

    def __init__(self) -> None:
        self.trace_id = -1
        self.encoded = b""

    def trace(self, trace_id: int) -> bytes:
        if trace_id != self.trace_id:
            self.trace_id = trace_id
            self.encoded = b"\x0a\x10" + trace_id.to_bytes(16, "big")
        return self.encoded


# types whose fields are ReadableSpan's, read directly (not through the properties)
_DIRECT: frozenset[type] = frozenset({ReadableSpan, LightSpan})
_names: dict[str, bytes] = {}
_span_strings: dict[tuple[str, str], bytes] = {}  # (key, str value) -> Span.attributes field


def _span_attributes(attributes: Any) -> list[bytes]:
    """Span.attributes fields; string values (most of them) from their own cache."""
    out = []
    cache = _span_strings
    for key, value in attributes.items():
        if type(value) is str:
            encoded = cache.get((key, value))
            if encoded is None:
                encoded = _attribute(0x4A, key, value)
                if encoded is None:
                    continue
                if len(value) < 256:
                    if len(cache) >= _CACHE_MAX:
                        cache.clear()
                    cache[(key, value)] = encoded
            out.append(encoded)
        else:
            encoded = _attribute(0x4A, key, value)
            if encoded is not None:
                out.append(encoded)
    return out


def _name(name: str) -> bytes:
    encoded = _names.get(name)
    if encoded is None:
        encoded = _string(0x2A, name)
        if len(_names) >= _CACHE_MAX:
            _names.clear()
        _names[name] = encoded
    return encoded


def encode_span(span: ReadableSpan, ids: _Ids | None = None) -> bytes:
    """One ``Span`` message (without its enclosing tag)."""
    context: Any
    if type(span) in _DIRECT:
        context, parent, attributes = span._context, span._parent, span._attributes
        events, links, status = span._events, span._links, span._status
        dropped = 0 if type(attributes) is dict else span.dropped_attributes
        name, kind, start, end = span._name, span._kind, span._start_time, span._end_time
    else:
        context, parent, attributes = span.context, span.parent, span.attributes
        events, links, status = span.events, span.links, span.status
        dropped = span.dropped_attributes
        name, kind, start, end = span.name, span.kind, span.start_time, span.end_time
    parts = [
        (ids or _Ids()).trace(context.trace_id),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_trace_state(0x1A, context))
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts.append(_name(name))
    parts.append(_KIND[kind])
    parts.append(_TIMES(0x39, start or 0, 0x41, end or 0))
    if attributes:
        parts += _span_attributes(attributes)
    if dropped:
        parts.append(_dropped(0x50, dropped))
    if events:
        parts += [_field(0x5A, _event(event)) for event in events]
    if type(events) is not tuple:  # a BoundedList may have dropped some (or all)
        parts.append(_dropped(0x60, span.dropped_events))
    if links:
        parts += [_field(0x6A, _link(link)) for link in links]
    if type(links) is not tuple:
        parts.append(_dropped(0x70, span.dropped_links))
    if status is not None:
        code = status.status_code
        if code is StatusCode.UNSET and not status.description:
            parts.append(_STATUS_UNSET)
        else:
            parts.append(_status(code.value, status.description))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def _event(event: Any) -> bytes:
    parts = []
    if event.timestamp:
        parts.append(b"\x09" + _FIXED64(event.timestamp))
    if event.name:
        parts.append(_string(0x12, event.name))
    parts += _attributes(0x1A, event.attributes)
    parts.append(_dropped(0x20, getattr(event, "dropped_attributes", 0)))
    return b"".join(parts)


def _link(link: Any) -> bytes:
    context = link.context
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    parts += _attributes(0x22, link.attributes)
    parts.append(_dropped(0x28, getattr(link, "dropped_attributes", 0)))
    parts.append(_LINK_FLAGS_REMOTE if context.is_remote else _LINK_FLAGS_LOCAL)
    return b"".join(parts)


def _status(code: int, description: str | None) -> bytes:
    body = (_string(0x12, description) if description else b"") + (
        b"\x18" + varint(code) if code else b""
    )
    return _field(0x7A, body)


# -- resources and scopes: encoded once per object


class _Encoded:
    """Encoded Resource / InstrumentationScope messages (and their schema URL fields), by
    identity: a few objects per process, the same for every batch."""

    def __init__(self) -> None:
        self.resources: dict[int, tuple[Resource, tuple[bytes, bytes]]] = {}
        self.scopes: dict[int, tuple[InstrumentationScope | None, tuple[bytes, bytes]]] = {}

    def resource(self, resource: Resource) -> tuple[bytes, bytes]:
        known = self.resources.get(id(resource))
        if known is not None and known[0] is resource:
            return known[1]
        body = b"".join(_attributes(0x0A, resource.attributes))
        schema = resource.schema_url
        encoded = (_field(0x0A, body), _string(0x1A, schema) if schema else b"")
        if len(self.resources) > 64:
            self.resources.clear()
        self.resources[id(resource)] = (resource, encoded)
        return encoded

    def scope(self, scope: InstrumentationScope | None) -> tuple[bytes, bytes]:
        known = self.scopes.get(id(scope))
        if known is not None and known[0] is scope:
            return known[1]
        if scope is None:
            body = b""
        else:
            body = b"".join(
                [
                    _string(0x0A, scope.name) if scope.name else b"",
                    _string(0x12, scope.version) if scope.version else b"",
                    *_attributes(0x1A, scope.attributes),
                ]
            )
        schema = getattr(scope, "schema_url", None) or ""
        encoded = (_field(0x0A, body), _string(0x1A, schema) if schema else b"")
        if len(self.scopes) > 256:
            self.scopes.clear()
        self.scopes[id(scope)] = (scope, encoded)
        return encoded


_ENCODED = _Encoded()


_Group = tuple[Any, list[Any]]  # (resource or scope, its members)


def _member(groups: list[_Group], by_id: dict[int, _Group], key: Any) -> list[Any]:
    """The members' list of ``key``'s group: found by identity, else by equality, else new."""
    group = by_id.get(id(key))
    if group is None:
        group = next((g for g in groups if g[0] == key), None)
        if group is None:
            group = (key, [])
            groups.append(group)
        by_id[id(key)] = group
    return group[1]


def _groups(spans: Sequence[ReadableSpan]) -> list[_Group]:
    """[(resource, [(scope, [span, ...]), ...]), ...]: first-seen order, equal objects as one
    group (as the SDK's encoder groups them)."""
    resources: list[_Group] = []
    resource_ids: dict[int, _Group] = {}
    scope_ids: dict[tuple[int, int], _Group] = {}
    for span in spans:
        resource = span.resource
        scopes = _member(resources, resource_ids, resource)
        scope = span.instrumentation_scope or None
        key = (id(resource), id(scope))
        group = scope_ids.get(key)
        if group is None:
            group = next((g for g in scopes if g[0] == scope), None)
            if group is None:
                group = (scope, [])
                scopes.append(group)
            scope_ids[key] = group
        group[1].append(span)
    return resources


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The ``ExportTraceServiceRequest`` of ``spans``, serialized."""
    ids = _Ids()
    request = []
    for resource, scopes in _groups(spans):
        resource_part, resource_schema = _ENCODED.resource(resource)
        scope_spans = []
        for scope, members in scopes:
            scope_part, scope_schema = _ENCODED.scope(scope)
            body = [scope_part]
            for span in members:
                body.append(_field(0x12, encode_span(span, ids)))
            body.append(scope_schema)
            scope_spans.append(_long_field(0x12, b"".join(body)))
        resource_body = b"".join([resource_part, *scope_spans, resource_schema])
        request.append(_long_field(0x0A, resource_body))
    return b"".join(request)


def _long_field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + varint(len(payload)) + payload
