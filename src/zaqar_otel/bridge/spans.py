"""OSProfiler start/stop notifications -> OpenTelemetry spans.

One ``-start`` opens one span, the ``-stop`` with the same element id ends it:
pairs are matched by id in a table, never by a stack, so threads cannot end
each other's spans. While a span is open its context is attached in the thread
that opened it (OSProfiler notifies synchronously in the traced thread), so
spans of the DB instrumentations started meanwhile are its children; the
context also carries the ``PROFILED`` mark the DB gate looks for, and the
bridge itself (``current_bridge()``).

Work a call leaves to be done later (a generator or a database cursor it
returns, consumed by its caller after the ``-stop``) can stay inside the call's
span: while the span is open, ``SpanBridge.hold(element_id)`` keeps it open past
its ``-stop`` and returns a ``HeldSpan``; the deferred work runs inside
``held.resumed()`` (the span's context is current again, DB spans become its
children) and the span ends when the last holder ``release()``s it, at the end
of the latest resumed work. A held span never outlives its parent span: when the
parent ends, held children still open end with it; and the ``max_open`` bound
counts held spans too.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags
from oslo_utils import reflection

from zaqar_otel.bridge import attributes, ids
from zaqar_otel.bridge.flags import DEFAULT, FLAGS, Flags
from zaqar_otel.bridge.gate import PROFILED
from zaqar_otel.bridge.logs import LOG, log_once
from zaqar_otel.bridge.provider import HintedIdGenerator
from zaqar_otel.bridge.recorder import LightSpan, Recorder

DEFAULT_MAX_OPEN = 10_000
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_RANDOM_TRACE_ID = 0x02  # W3C trace context level 2 (TraceFlags.RANDOM_TRACE_ID)
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | _RANDOM_TRACE_ID)
_NOTHING = attributes.NOTHING
_NO_INFO: Mapping[str, Any] = {}


BRIDGE = context_api.create_key("zaqar_otel.bridge")


def current_bridge(context: context_api.Context | None = None) -> SpanBridge | None:
    """The bridge whose span is current (None outside bridge spans)."""
    value = context_api.get_value(BRIDGE, context)
    return value if isinstance(value, SpanBridge) else None


@dataclass(slots=True)
class _Open:
    span: trace.Span
    token: object
    thread: int
    context: context_api.Context
    parent_id: str | None
    held: HeldSpan | None = None


def _default_flags() -> Flags:
    return DEFAULT


def _text(value: Any) -> str:
    return value if type(value) is str else str(value)


class SpanBridge:
    """Turns notifications into spans of ``tracer`` (whose provider uses ``hints``)."""

    def __init__(
        self,
        tracer: trace.Tracer,
        hints: HintedIdGenerator,
        flags: Callable[[], Flags] = _default_flags,
        max_open: int = DEFAULT_MAX_OPEN,
        expected: Callable[[str], bool] = lambda etype: False,
        span_attributes: Mapping[str, attributes.AttributeValue] | None = None,
    ) -> None:
        """``flags()``: the ``[profiler]`` flags, read at the start of each request
        (``zaqar_otel.bridge.flags``); ``expected(etype)``: an exception that is an
        answer (a 404), not a failure; ``span_attributes``: added to every span
        (``host.name`` when the provider's resource lacks it)."""
        self.tracer = tracer
        self.hints = hints
        self.flags = flags
        self.expected = expected
        # LightSpans where the tracer allows (zaqar_otel.bridge.recorder), else SDK spans
        self.recorder = Recorder.for_tracer(tracer)
        self.span_attributes = dict(span_attributes or {})
        self.max_open = max_open
        self.evicted = 0
        self.malformed = 0
        self._open: OrderedDict[str, _Open] = OrderedDict()
        # stopped but held spans (also in _open), by element id
        self._held: dict[str, _Open] = {}
        # Skipped elements -> their own parent, so that their children hang
        # under the nearest exported ancestor instead of a missing span.
        self._skipped: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()
        self._last_trace: tuple[str, int] = ("", 0)

    def open_count(self) -> int:
        return len(self._open)

    def handle(self, payload: Mapping[str, Any]) -> None:
        """Process one notification; never raises."""
        try:
            name = payload["name"]
            if name.endswith("-start"):
                self._start(payload, name[: -len("-start")])
            elif name.endswith("-stop"):
                self._stop(payload)
            else:
                raise ValueError(f"notification name {name!r} ends in neither -start nor -stop")
        except Exception:
            with self._lock:
                self.malformed += 1
            log_once.warning(
                "malformed",
                "zaqar-otel: dropped a malformed OSProfiler notification (logged once; %r)",
                _preview(payload),
                exc_info=True,
            )

    def _trace_id(self, base_id: str) -> int:
        """``ids.trace_id(base_id)``, remembered for the last base id (one trace: many spans)."""
        last = self._last_trace
        if last[0] == base_id:
            return last[1]
        number = ids.trace_id(base_id)
        self._last_trace = (base_id, number)
        return number

    def _exported_parent(self, parent_id: str | None) -> str | None:
        """``parent_id``, or its nearest ancestor that was not skipped."""
        while parent_id is not None and parent_id in self._skipped:
            parent_id = self._skipped[parent_id]
        return parent_id

    def _parent(self, base_id: str, parent_id: str | None) -> SpanContext | None:
        """The parent of a new span: an open span, the remote caller, or none (a root)."""
        if not parent_id or parent_id == base_id:
            return None
        entry = self._open.get(parent_id)
        if entry is not None:
            return entry.span.get_span_context()
        return SpanContext(
            self._trace_id(base_id), ids.span_id(parent_id), is_remote=True, trace_flags=_SAMPLED
        )

    def _start(self, payload: Mapping[str, Any], name: str) -> None:
        element_id = _text(payload["trace_id"])
        base_id = _text(payload["base_id"])
        parent_id = payload.get("parent_id")
        # ids are used as keys: whatever a signed header carried, use its text
        if parent_id is not None:
            parent_id = _text(parent_id)
        info = payload.get("info") or _NO_INFO
        if type(info) is not dict and not isinstance(info, Mapping):
            raise TypeError("info is not a mapping")
        current = context_api.get_current()
        outermost = current.get(BRIDGE) is not self
        flags = self._request_flags() if outermost else current.get(FLAGS)
        if not isinstance(flags, Flags):
            flags = self._request_flags()
        if flags.skips(name, info):
            with self._lock:
                self._skipped[element_id] = parent_id
                while len(self._skipped) > self.max_open:
                    self._skipped.popitem(last=False)
            return
        statements = flags.statements and "db" in info
        content = flags.content and ("function" in info or "request" in info or "requests" in info)
        capture = attributes.Capture(statements, content) if statements or content else _NOTHING
        span_name, kind, attrs = attributes.describe_start(name, info, capture)
        if self.span_attributes:
            attrs.update(self.span_attributes)
        attrs["osprofiler.id"] = element_id
        attrs["osprofiler.base_id"] = base_id
        if self._skipped:
            parent_id = self._exported_parent(parent_id)
        span = self._new_span(span_name, kind, attrs, base_id, element_id, parent_id, current)
        active = trace.set_span_in_context(span, current)
        if outermost:  # the request's marks, once
            active = context_api.set_value(
                BRIDGE,
                self,
                context_api.set_value(PROFILED, True, context_api.set_value(FLAGS, flags, active)),
            )
        token = context_api.attach(active)
        entry = _Open(span, token, threading.get_ident(), active, parent_id)
        with self._lock:
            self._open[element_id] = entry
            stale = (
                [self._open.popitem(last=False)[1] for _ in range(len(self._open) - self.max_open)]
                if len(self._open) > self.max_open
                else None
            )
        if stale:
            for old in stale:
                self._end_unfinished(old)

    def _request_flags(self) -> Flags:
        flags = self.flags()
        return flags if isinstance(flags, Flags) else DEFAULT

    def _new_span(
        self,
        name: str,
        kind: trace.SpanKind,
        attrs: dict[str, Any],
        base_id: str,
        element_id: str,
        parent_id: str | None,
        current: context_api.Context,
    ) -> trace.Span:
        """A ``LightSpan`` (``zaqar_otel.bridge.recorder``) if the tracer allows, else an SDK
        span; with OSProfiler's ids either way."""
        parent = self._parent(base_id, parent_id)
        recorder = self.recorder
        if recorder is not None and recorder.usable():
            if parent is None:
                context = SpanContext(
                    self._trace_id(base_id), ids.span_id(element_id), False, _SAMPLED
                )
            else:
                flags = _SAMPLED_RANDOM if parent.trace_flags & _RANDOM_TRACE_ID else _SAMPLED
                context = SpanContext(
                    parent.trace_id, ids.span_id(element_id), False, flags, parent.trace_state
                )
            return recorder.start(name, context, parent, kind, attrs)
        # the SDK's span: its sampler sees a profiled parent context
        marked = (
            current if current.get(PROFILED) else context_api.set_value(PROFILED, True, current)
        )
        parent_span = trace.INVALID_SPAN if parent is None else NonRecordingSpan(parent)
        parent_context = trace.set_span_in_context(parent_span, marked)
        with self.hints.hint(self._trace_id(base_id), ids.span_id(element_id)):
            return self.tracer.start_span(name, parent_context, kind, attrs)

    def _end_unfinished(self, entry: _Open) -> None:
        if entry.held is not None:
            with self._lock:
                entry.held.ended = True
                self._held.pop(entry.held.element_id, None)
        with self._lock:
            self.evicted += 1
        log_once.warning(
            "evicted",
            "zaqar-otel: more than %d spans open without a stop; ending the oldest (logged once)",
            self.max_open,
        )
        entry.span.set_attribute("osprofiler.unfinished", True)
        entry.span.end()

    def _stop(self, payload: Mapping[str, Any]) -> None:
        element_id = _text(payload["trace_id"])
        held = False
        with self._lock:
            entry = self._open.get(element_id)
            if entry is None:
                self._skipped.pop(element_id, None)
            elif entry.held is not None and not entry.held.ended:
                entry.held.stopped_at = time.time_ns()  # held: ends when released
                self._held[element_id] = entry
                held = True
            else:
                del self._open[element_id]
        if entry is None:
            # Skipped start (e.g. an OSProfiler SQL event replaced by the OTel
            # SQLAlchemy span), evicted, or a stop without start: nothing to end.
            return
        try:
            info = payload.get("info")
            if info and isinstance(info, Mapping) and attributes.stop_matters(info):
                self.apply_stop(entry.span, info, entry.context)
        finally:
            if entry.thread == threading.get_ident():
                _detach(entry.token)
            if not held:
                entry.span.end()
                if self._held:
                    self._end_held_children(element_id)

    def apply_stop(
        self, span: trace.Span, info: Mapping[str, Any], context: context_api.Context
    ) -> None:
        """What a ``-stop`` (or deferred work that raised) adds to ``span`` (in ``context``)."""
        capture = _NOTHING
        if info.get("etype") or "function" in info or "db" in info:
            flags = context_api.get_value(FLAGS, context)
            if isinstance(flags, Flags) and flags.content:
                capture = attributes.Capture(content=True)
        stop = attributes.describe_stop(info, capture, self.expected)
        if stop.attributes:
            if type(span) is LightSpan:
                span.set_clean(stop.attributes)
            else:
                span.set_attributes(stop.attributes)
        if stop.event is not None:
            span.add_event("exception", stop.event)
        if stop.error is not None:
            span.set_status(Status(StatusCode.ERROR, stop.error))

    # -- held spans (see the module docstring)

    def hold(self, element_id: str) -> HeldSpan | None:
        """Keep the open span of ``element_id`` open past its ``-stop``; None if none is open.

        Call it while the span is open (before its ``-stop``); ``release()`` the
        result when done with it, after ``retain()``ing it for each later user.
        """
        with self._lock:
            entry = self._open.get(element_id)
            if entry is None or element_id in self._held:
                return None
            if entry.held is None or entry.held.ended:
                entry.held = HeldSpan(self, element_id, entry.span, entry.context)
            else:
                entry.held.users += 1
            return entry.held

    def _release(self, held: HeldSpan) -> None:
        with self._lock:
            if held.ended or held.users <= 0:
                return
            held.users -= 1
            if held.users:
                return
            entry = self._open.get(held.element_id)
            if held.stopped_at is None:
                # released before the -stop: the span ends there as usual
                if entry is not None and entry.held is held:
                    entry.held = None
                return
            held.ended = True
            self._held.pop(held.element_id, None)
            if entry is not None:
                del self._open[held.element_id]
        if entry is not None:
            self._end_held(entry, held)

    def _end_held(self, entry: _Open, held: HeldSpan) -> None:
        stopped = held.stopped_at or time.time_ns()
        if held.worked_until > stopped:
            entry.span.add_event("returned", timestamp=stopped)
        entry.span.end(max(stopped, held.worked_until))
        self._end_held_children(held.element_id)

    def _end_held_children(self, parent_id: str) -> None:
        """A span ended: its held children end too (a held span never outlives its parent)."""
        if not self._held:
            return
        with self._lock:
            children = [e for e in self._held.values() if e.parent_id == parent_id]
            for entry in children:
                assert entry.held is not None
                entry.held.ended = True
                del self._held[entry.held.element_id]
                self._open.pop(entry.held.element_id, None)
        for entry in children:
            assert entry.held is not None
            self._end_held(entry, entry.held)


class HeldSpan:
    """A bridge span kept open after its ``-stop`` (``SpanBridge.hold``), for deferred work.

    ``context`` is the span's context (span, ``PROFILED`` mark, bridge). Thread-safe;
    ``retain``/``release``/``resumed`` do nothing once the span ended.
    """

    def __init__(
        self,
        bridge: SpanBridge,
        element_id: str,
        span: trace.Span,
        context: context_api.Context,
    ) -> None:
        self.bridge = bridge
        self.element_id = element_id
        self.span = span
        self.context = context
        self.users = 1
        self.stopped_at: int | None = None
        self.worked_until = 0
        self.ended = False

    def retain(self) -> None:
        """One more user: the span stays open until each has released it."""
        with self.bridge._lock:
            if not self.ended:
                self.users += 1

    def release(self) -> None:
        """One user is done; the last one (after the ``-stop``) ends the span."""
        self.bridge._release(self)

    def resumed(self) -> _Resumed:
        """``with held.resumed(): ...`` runs deferred work inside the span."""
        return _Resumed(self)

    def failed(self, error: BaseException) -> None:
        """Deferred work raised ``error``: recorded as an error at ``-stop`` would be."""
        if self.ended:
            return
        info = {"etype": reflection.get_class_name(error), "message": str(error)}
        self.bridge.apply_stop(self.span, info, self.context)


class _Resumed:
    __slots__ = ("held", "token")

    def __init__(self, held: HeldSpan) -> None:
        self.held = held
        self.token: object = None

    def __enter__(self) -> None:
        if not self.held.ended:
            self.token = context_api.attach(self.held.context)

    def __exit__(self, *exc_info: object) -> None:
        if self.token is not None:
            self.held.worked_until = time.time_ns()
            _detach(self.token)


def _detach(token: object) -> None:
    try:
        context_api.detach(token)  # type: ignore[arg-type]
    except Exception:
        LOG.debug("zaqar-otel: context detach failed", exc_info=True)


def _preview(payload: object) -> str:
    """The shape of a notification for the log: its name and keys, never the values of
    ``info`` (they may hold function arguments: message bodies)."""
    if not isinstance(payload, Mapping):
        return type(payload).__name__
    info = payload.get("info")
    shape = {
        key: (sorted(map(str, info)) if isinstance(info, Mapping) else type(info).__name__)
        if key == "info"
        else payload[key]
        for key in payload
    }
    text = repr(shape)
    return text if len(text) < 300 else text[:297] + "..."
