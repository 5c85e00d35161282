"""Bridge spans without the SDK's ``Span``: a light span while open, finished once at its end.

An OSProfiler span only needs to exist, as far as OpenTelemetry is concerned, at
two moments: while it is open its context must be current (so that database spans
become its children, and the middleware can name it), and when it ends the
finished span must reach the provider's span processors. The SDK's ``Span`` does
much more per span: a sampler call, ``on_start`` on every processor, a lock and a
``BoundedAttributes`` (with its own lock) per span, every attribute value cleaned
one by one, and a second object (``ReadableSpan``) built at ``end()``.

A ``LightSpan`` is a ``trace.Span`` (what the middleware and the DB instrumentations
use: ``update_name``, ``set_attribute(s)``, ``set_status``, ``add_event``,
``add_link``, ``record_exception``, ``is_recording``) and a ``ReadableSpan`` (what
processors and exporters read) in one object. At ``end()`` it applies the
provider's span limits and hands *itself* to the provider's span processor; after
that it refuses every change, as an ended SDK span does.

What it keeps from the SDK, exactly:

* the provider's resource, the tracer's instrumentation scope, the provider's
  ``SpanLimits`` (count and length limits of attributes, events, links; the SDK's
  own ``BoundedAttributes``/``BoundedList`` do the dropping, oldest first, counted);
* attributes set from outside the bridge are cleaned by the SDK's
  ``BoundedAttributes`` (the span switches to one at the first such call);
  the bridge's own attributes are clean by construction (``bridge.attributes``);
* ``set_status``/``add_event``/``add_link``/``record_exception`` semantics;
* every processor of the provider, added before or after the bridge started, gets
  ``on_end`` (through the provider's multi-processor, as SDK spans do).

When it is used (``Recorder.usable``): the tracer is the SDK's, enabled, without the
SDK's self-metrics (``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``), and *no processor
of the provider does anything in* ``on_start`` *or* ``_on_ending`` (the SDK's
batch and simple processors, the bridge's counting one, any processor whose hooks
are empty). A processor that does work there may expect the SDK's ``Span`` (and a
parent ``Context``): then the bridge uses SDK spans, as before, for every span while
that processor is registered. Bridge spans are always sampled: whether a request
is traced was decided once, at its start (a valid OSProfiler signature), so the
provider's sampler is not asked again for each of its spans.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from time import time_ns
from types import CodeType
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util import types

from zaqar_otel.bridge.logs import LOG

_UNSET = Status(StatusCode.UNSET)
_SCALARS = frozenset({str, bool, int, float})
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | 0x02)  # W3C level 2: random trace id
_EXCEPTION_ESCAPED = "exception.escaped"


class LightSpan(trace.Span, ReadableSpan):
    """An open bridge span; at ``end()`` the finished span the processors receive."""

    # Defaults at class level: most spans never get events, links or a status.
    _events: Any = ()
    _links: Any = ()
    _status = _UNSET
    _end_time: int | None = None
    _instrumentation_info = None

    def __init__(
        self,
        recorder: Recorder,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        start_time: int,
    ) -> None:
        # ReadableSpan.__init__ is not called: the same fields, set directly
        self._recorder = recorder
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes: Any = attributes  # a plain dict until set from outside
        self._start_time = start_time
        self._resource = recorder.resource
        self._instrumentation_scope = recorder.scope

    def __repr__(self) -> str:
        return f'LightSpan(name="{self._name}", context={self._context})'

    # -- trace.Span

    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]  # set in __init__, never None

    def is_recording(self) -> bool:
        return self._end_time is None

    def _ended(self, what: str) -> bool:
        if self._end_time is None:
            return False
        LOG.warning("zaqar-otel: %s on an ended span (%s)", what, self._name)
        return True

    def _bounded(self) -> BoundedAttributes:
        """The attributes as the SDK's ``BoundedAttributes`` (under the lock)."""
        attributes = self._attributes
        if type(attributes) is dict:
            limits = self._recorder.limits
            attributes = self._attributes = BoundedAttributes(
                limits.max_span_attributes,
                attributes,
                immutable=False,
                max_value_len=limits.max_span_attribute_length,
            )
        return attributes  # type: ignore[no-any-return]

    def _put(self, key: str, value: Any) -> None:
        """One attribute (under the lock): a scalar straight into the plain dict when no limit
        applies (what ``BoundedAttributes`` would store), anything else through it."""
        attributes = self._attributes
        recorder = self._recorder
        if (
            type(value) in _SCALARS
            and type(attributes) is dict
            and type(key) is str
            and key
            and recorder.plain
            and len(attributes) < recorder.room
        ):
            if key in attributes:
                del attributes[key]  # re-set: newest, as BoundedAttributes does
            attributes[key] = value
        else:
            self._bounded()[key] = value

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        with self._recorder.lock:
            if not self._ended("set_attribute"):
                self._put(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        with self._recorder.lock:
            if not self._ended("set_attributes"):
                for key, value in attributes.items():
                    self._put(key, value)

    def set_clean(self, attributes: Mapping[str, Any]) -> None:
        """The bridge's own attributes (clean by construction: str, bool, int, float)."""
        with self._recorder.lock:
            if self._ended("set_attributes"):
                return
            current = self._attributes
            if type(current) is not dict:
                for key, value in attributes.items():  # as BoundedAttributes of any SDK
                    current[key] = value
                return
            for key, value in attributes.items():
                if key in current:
                    del current[key]  # re-set: newest, as BoundedAttributes does
                current[key] = value

    def update_name(self, name: str) -> None:
        with self._recorder.lock:
            if not self._ended("update_name"):
                self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        with self._recorder.lock:
            if self._ended("set_status"):
                return
            # the SDK's rules: OK is final, UNSET is ignored
            if self._status.status_code is StatusCode.OK:
                return
            if isinstance(status, Status):
                if status.status_code is StatusCode.UNSET:
                    return
                if description is not None:
                    LOG.warning(
                        "zaqar-otel: description %s ignored: use either `Status` or "
                        "`(StatusCode, Description)`",
                        description,
                    )
                self._status = status
            elif status is not StatusCode.UNSET:
                self._status = Status(status, description)

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        limits = self._recorder.limits
        event = Event(
            name,
            BoundedAttributes(
                limits.max_event_attributes,
                attributes,
                max_value_len=limits.max_attribute_length,
                immutable=True,
            ),
            timestamp,
        )
        with self._recorder.lock:
            if self._ended("add_event"):
                return
            if self._events == ():
                self._events = BoundedList(limits.max_events)
            self._events.append(event)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if not (context and (context.is_valid or attributes or context.trace_state)):
            return  # what the SDK drops too
        limits = self._recorder.limits
        link = Link(
            context,
            BoundedAttributes(
                limits.max_link_attributes,
                attributes,
                max_value_len=limits.max_attribute_length,
                immutable=True,
            ),
        )
        with self._recorder.lock:
            if self._ended("add_link"):
                return
            if self._links == ():
                self._links = BoundedList(limits.max_links)
            self._links.append(link)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """As the SDK records it: an ``exception`` event with type, message, stack trace."""
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        event: dict[str, Any] = {
            EXCEPTION_TYPE: f"{module}.{qualname}" if module and module != "builtins" else qualname,
            EXCEPTION_MESSAGE: str(exception),
            EXCEPTION_STACKTRACE: "".join(traceback.format_exception(exception)),
            _EXCEPTION_ESCAPED: str(escaped),
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        """``with span:``: an exception is recorded and sets the status, as the SDK's span does
        with its defaults; then the span ends."""
        if exc_val is not None and self.is_recording():
            self.record_exception(exc_val, escaped=True)
            self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()

    def end(self, end_time: int | None = None) -> None:
        recorder = self._recorder
        with recorder.lock:
            if self._end_time is not None:
                LOG.warning("zaqar-otel: end() on an ended span (%s)", self._name)
                return
            self._end_time = end_time if end_time is not None else time_ns()
            attributes = self._attributes
            if type(attributes) is dict:
                if recorder.bounds_attributes(attributes):
                    limits = recorder.limits
                    self._attributes = BoundedAttributes(
                        limits.max_span_attributes,
                        attributes,
                        max_value_len=limits.max_span_attribute_length,
                    )
            else:
                attributes._immutable = True
        recorder.processor.on_end(self)


def _empty_hook_code() -> tuple[CodeType, ...]:
    """Bytecode of hooks that do nothing (``pass``, a docstring, ``return None``)."""

    def documented(self: Any, span: Any, parent_context: Any = None) -> None:
        """Nothing."""

    def returns(self: Any, span: Any, parent_context: Any = None) -> None:
        return None

    return documented.__code__, returns.__code__


_EMPTY = _empty_hook_code()


def _does_nothing(method: Any) -> bool:
    if method is SpanProcessor.on_start or method is getattr(SpanProcessor, "_on_ending", None):
        return True
    code = getattr(method, "__code__", None)
    return code is not None and any(
        code.co_code == empty.co_code and code.co_names == empty.co_names for empty in _EMPTY
    )


def quiet_processor(processor: SpanProcessor) -> bool:
    """Whether ``processor`` does nothing when a span starts or is ending."""
    kind = type(processor)
    return _does_nothing(getattr(kind, "on_start", None)) and _does_nothing(
        getattr(kind, "_on_ending", SpanProcessor.on_start)
    )


class Recorder:
    """Makes ``LightSpan``s for the SDK tracer ``tracer`` (see the module docstring)."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self.processor: SpanProcessor = tracer.span_processor
        self.scope: InstrumentationScope | None = getattr(tracer, "_instrumentation_scope", None)
        self.limits: SpanLimits = tracer._span_limits
        self.lock = threading.Lock()
        self._checked: tuple[SpanProcessor, ...] | None = None
        self._quiet = False
        self._attribute_count = self.limits.max_span_attributes
        # no value length limit; how many attributes fit (the count limit)
        self.plain = self.limits.max_span_attribute_length is None
        self.room = self._attribute_count if self._attribute_count is not None else 1 << 62

    @classmethod
    def for_tracer(cls, tracer: trace.Tracer) -> Recorder | None:
        """A recorder for ``tracer``, or None if it is not an SDK tracer this module knows."""
        try:
            recorder = cls(tracer)
            processors = recorder.processor._span_processors  # type: ignore[attr-defined]
            metrics = getattr(tracer, "_tracer_metrics", None)
        except AttributeError:
            return None
        if not isinstance(processors, tuple):
            return None
        if metrics is not None and type(metrics).__name__ != "NoOpTracerMetrics":
            return None  # the SDK's own span metrics: SDK spans count themselves
        return recorder

    @property
    def resource(self) -> Resource:
        return self.tracer.resource  # type: ignore[no-any-return]

    def usable(self) -> bool:
        """Whether a span started now can be a ``LightSpan`` (cheap: checked per span)."""
        config = getattr(self.tracer, "_tracer_config", None)
        if config is not None and not config.is_enabled:
            return False
        processors = self.processor._span_processors  # type: ignore[attr-defined]
        if processors is not self._checked:
            self._quiet = all(quiet_processor(p) for p in processors)
            self._checked = processors
        return self._quiet

    def bounds_attributes(self, attributes: dict[str, Any]) -> bool:
        """Whether the span limits cut ``attributes`` (then ``BoundedAttributes`` does it)."""
        count = self._attribute_count
        return not self.plain or (count is not None and len(attributes) > count)

    def start(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
    ) -> LightSpan:
        """A span with these ids and (clean) attributes, started now."""
        return LightSpan(self, name, context, parent, kind, attributes, time_ns())

    def start_child(
        self,
        name: str,
        context: context_api.Context | None,
        kind: SpanKind,
        attributes: types.Attributes,
        links: Any,
        start_time: int | None,
    ) -> LightSpan:
        """A span of an instrumentation, child of the span current in ``context``: ids from
        the tracer's id generator, trace flags and state from the parent, as the SDK does."""
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        generator = self.tracer.id_generator
        if parent is not None and parent.is_valid:
            flags = _SAMPLED_RANDOM if parent.trace_flags & 0x02 else _SAMPLED
            ids = SpanContext(
                parent.trace_id, generator.generate_span_id(), False, flags, parent.trace_state
            )
        else:
            parent = None
            trace_id = generator.generate_trace_id()
            random = getattr(generator, "is_trace_id_random", lambda: False)()
            flags = _SAMPLED_RANDOM if random else _SAMPLED
            ids = SpanContext(trace_id, generator.generate_span_id(), False, flags)
        span = LightSpan(self, name, ids, parent, kind, {}, start_time or time_ns())
        if attributes:
            span.set_attributes(attributes)
        for link in links or ():
            span.add_link(link.context, link.attributes)
        return span


class LightTracer(trace.Tracer):
    """A tracer whose spans are ``LightSpan``s while the provider allows (``Recorder.usable``),
    the SDK tracer's spans otherwise: for spans the bridge starts itself inside profiled
    requests (messages posted, calls to other services)."""

    def __init__(self, inner: trace.Tracer) -> None:
        self._inner = inner
        self._recorder = Recorder.for_tracer(inner)

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Any = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        recorder = self._recorder
        if recorder is not None and recorder.usable():
            return recorder.start_child(name, context, kind, attributes, links, start_time)
        return self._inner.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Any = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current
