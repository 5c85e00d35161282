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
from zaqar_otel.bridge.recorder import _UNSET, LightSpan

# varints of 0..127 as one byte each (longer ones computed), and one-byte tags
_SMALL = [bytes((n,)) for n in range(128)]
_TAGS = [bytes((n,)) for n in range(256)]
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
    return _TAGS[tag] + (_SMALL[size] if size < 128 else varint(size)) + payload


def _string(tag: int, text: str) -> bytes:
    """A string field (UTF-8; a string that is not valid Unicode raises, as in protobuf)."""
    payload = text.encode()
    size = len(payload)
    return _TAGS[tag] + (_SMALL[size] if size < 128 else varint(size)) + payload


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
    try:
        any_value = _any_value(value)
        key_field = _key(key)
    except UnicodeEncodeError:  # a lone surrogate: protobuf refuses it too
        any_value = None
    if any_value is None:
        log_once.warning(
            "otlp-attribute",
            "zaqar-otel: attribute %r has a value OTLP cannot carry (%s): left out (logged once)",
            key,
            kind.__name__,
        )
        return None
    encoded = _field(tag, key_field + _field(0x12, any_value))
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
    return _TAGS[tag] + varint(count) if count else b""


def _trace_state(tag: int, context: SpanContext) -> bytes:
    state = context.trace_state
    if not state:
        return b""
    return _string(tag, ",".join(f"{key}={value}" for key, value in state.items()))


_SPAN_ID = struct.Struct(">BBQ").pack  # field 2 (span_id), 8 bytes, big-endian
_PARENT_ID = struct.Struct(">BBQ").pack  # field 4 (parent_span_id)
_TRACE_ID = struct.Struct(">BBQQ").pack  # field 1 (trace_id), 16 bytes: high, low halves
_LOW64 = (1 << 64) - 1

# types whose fields are ReadableSpan's, read directly (not through the properties)
_DIRECT: frozenset[type] = frozenset({ReadableSpan, LightSpan})
_names: dict[str, bytes] = {}
# Span.attributes fields with a string value (most of them): key -> value -> field bytes,
# except for keys whose values rarely repeat (ids): encoded each time, not kept
_span_strings: dict[str, dict[str, bytes]] = {}
_varied: set[str] = set()
_VALUES_PER_KEY = 512


def _string_attribute(key: str, value: str) -> bytes:
    """A Span.attributes field (``KeyValue`` with a string ``AnyValue``)."""
    payload = value.encode()
    size = len(payload)
    any_value = b"\x0a" + (_SMALL[size] if size < 128 else varint(size)) + payload
    size = len(any_value)
    pair = (_keys.get(key) or _key(key)) + b"\x12" + (_SMALL[size] if size < 128 else varint(size))
    size = len(pair) + len(any_value)
    return b"\x4a" + (_SMALL[size] if size < 128 else varint(size)) + pair + any_value


def _span_string(key: str, value: str) -> bytes | None:
    """A string attribute not in the cache: encoded, and kept unless its key varies."""
    try:
        encoded = _string_attribute(key, value)
    except UnicodeEncodeError:
        return _attribute(0x4A, key, value)  # left out (and logged), as protobuf would
    if key in _varied or len(value) >= 256:
        return encoded
    values = _span_strings.get(key)
    if values is None:
        if len(_span_strings) >= _CACHE_MAX:
            _span_strings.clear()
        values = _span_strings[key] = {}
    if len(values) >= _VALUES_PER_KEY:
        _varied.add(key)  # an id: a new value almost every time
        _span_strings.pop(key, None)  # (another export thread may have cleared it)
    else:
        values[value] = encoded
    return encoded


def _span_attributes(attributes: Any, out: list[bytes]) -> None:
    """Append the Span.attributes fields of ``attributes`` to ``out``."""
    strings = _span_strings
    for key, value in attributes.items():
        if type(value) is str:
            values = strings.get(key)
            encoded = values.get(value) if values is not None else None
            if encoded is None:
                encoded = _span_string(key, value)
        else:
            encoded = _attribute(0x4A, key, value)
        if encoded is not None:
            out.append(encoded)


def _name(name: str) -> bytes:
    encoded = _names.get(name)
    if encoded is None:
        encoded = _string(0x2A, name)
        if len(_names) >= _CACHE_MAX:
            _names.clear()
        _names[name] = encoded
    return encoded


def _span(span: ReadableSpan, trace_id: bytes) -> bytes:
    """One ``Span`` message (without its enclosing tag); ``trace_id`` its encoded field."""
    context: Any
    if type(span) in _DIRECT:
        context, parent, attributes = span._context, span._parent, span._attributes
        events, links, status = span._events, span._links, span._status
        dropped = 0 if type(attributes) is dict else span.dropped_attributes
        # a tuple dropped nothing; a BoundedList may have dropped some (or all)
        dropped_events = 0 if type(events) is tuple else span.dropped_events
        dropped_links = 0 if type(links) is tuple else span.dropped_links
        name, kind, start, end = span._name, span._kind, span._start_time, span._end_time
    else:  # another ReadableSpan type: its properties (events, links are tuples there)
        context, parent, attributes = span.context, span.parent, span.attributes
        events, links, status = span.events, span.links, span.status
        dropped, dropped_events = span.dropped_attributes, span.dropped_events
        dropped_links = span.dropped_links
        name, kind, start, end = span.name, span.kind, span.start_time, span.end_time
    parts = [trace_id, _SPAN_ID(0x12, 8, context.span_id)]
    if context.trace_state:
        parts.append(_trace_state(0x1A, context))
    if parent is not None:
        parts.append(_PARENT_ID(0x22, 8, parent.span_id))
    parts.append(_names.get(name) or _name(name))
    parts.append(_KIND[kind])
    parts.append(_TIMES(0x39, start or 0, 0x41, end or 0))
    if attributes:
        _span_attributes(attributes, parts)
    if dropped:
        parts.append(_dropped(0x50, dropped))
    if events:
        parts += [_field(0x5A, _event(event)) for event in events]
    if dropped_events:
        parts.append(_dropped(0x60, dropped_events))
    if links:
        parts += [_field(0x6A, _link(link)) for link in links]
    if dropped_links:
        parts.append(_dropped(0x70, dropped_links))
    if status is _UNSET or status is None:
        parts.append(_STATUS_UNSET if status is not None else b"")
    else:
        code = status.status_code
        if code is StatusCode.UNSET and not status.description:
            parts.append(_STATUS_UNSET)
        else:
            parts.append(_status(code.value, status.description))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def encode_span(span: ReadableSpan) -> bytes:
    """One ``Span`` message (without its enclosing tag)."""
    trace_id = span.context.trace_id
    return _span(span, _TRACE_ID(0x0A, 16, trace_id >> 64, trace_id & _LOW64))


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
    request = []
    last_trace, trace_field = -1, b""
    for resource, scopes in _groups(spans):
        resource_part, resource_schema = _ENCODED.resource(resource)
        scope_spans = []
        for scope, members in scopes:
            scope_part, scope_schema = _ENCODED.scope(scope)
            body = [scope_part]
            append = body.append
            for span in members:
                trace_id = span.context.trace_id
                if trace_id != last_trace:  # a trace's spans come together: encoded once
                    last_trace = trace_id
                    trace_field = _TRACE_ID(0x0A, 16, trace_id >> 64, trace_id & _LOW64)
                encoded = _span(span, trace_field)
                size = len(encoded)
                append(b"\x12" + (_SMALL[size] if size < 128 else varint(size)))
                append(encoded)
            append(scope_schema)
            scope_spans.append(_long_field(0x12, b"".join(body)))
        resource_body = b"".join([resource_part, *scope_spans, resource_schema])
        request.append(_long_field(0x0A, resource_body))
    return b"".join(request)


def _long_field(tag: int, payload: bytes) -> bytes:
    return _TAGS[tag] + varint(len(payload)) + payload
