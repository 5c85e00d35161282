"""The TracerProvider the bridge records into, chosen span ids, and the DB gate.

* ``use_or_build(service)``: the process's SDK provider if one is set (say by
  ``opentelemetry-instrument``), never replaced; otherwise one built from the
  ``OTEL_*`` environment and made global, ``service`` as default service name.
* ``HintedIdGenerator``: the SDK takes no span id in ``start_span``; this id
  generator returns the ids a thread hinted just before the call, so OTel ids
  equal those derived from OSProfiler's (see ``zaqar_otel.ids``).
* ``GatedTracerProvider``: handed to the DB instrumentors; its tracers record a
  span only inside a profiled request (a context the bridge marked), so a
  database call outside any profiled request exports nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.util import types

from zaqar_otel.semconv import sanitize_sql

PROFILED = context_api.create_key("zaqar_otel.profiled")


class HintedIdGenerator(IdGenerator):
    """Ids hinted by the current thread, else those of the wrapped generator."""

    def __init__(self, fallback: IdGenerator | None = None) -> None:
        self.fallback = fallback or RandomIdGenerator()
        self._local = threading.local()

    @contextmanager
    def hint(self, trace_id: int, span_id: int) -> Iterator[None]:
        """Ids for the one span started inside this block, in this thread."""
        self._local.ids = (trace_id, span_id)
        try:
            yield
        finally:
            self._local.ids = None

    def generate_trace_id(self) -> int:
        ids = getattr(self._local, "ids", None)
        return ids[0] if ids else self.fallback.generate_trace_id()

    def generate_span_id(self) -> int:
        ids = getattr(self._local, "ids", None)
        if ids:
            self._local.ids = None
            return int(ids[1])
        return self.fallback.generate_span_id()

    def is_trace_id_random(self) -> bool:
        if getattr(self._local, "ids", None):
            return False
        return self.fallback.is_trace_id_random()


class _HashedOnce(Resource):
    """A Resource that computes its hash once: the SDK's OTLP encoder hashes the
    resource of every span it exports (a sorted JSON dump each time)."""

    _hash: int | None = None

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = super().__hash__()
        return self._hash


def resource_for(service: str) -> Resource:
    """``service`` as default service.name; OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win."""
    merged = Resource.create({SERVICE_NAME: service}).merge(OTELResourceDetector().detect())
    return _HashedOnce(merged.attributes, merged.schema_url)


def sdk_provider() -> TracerProvider | None:
    """The global provider if it is the SDK's."""
    current = trace.get_tracer_provider()
    return current if isinstance(current, TracerProvider) else None


def use_or_build(
    service: str, processor: Callable[[], SpanProcessor | None]
) -> tuple[TracerProvider, HintedIdGenerator, bool]:
    """(provider, its hinted id generator, whether the bridge built it).

    ``processor`` is called only when a provider is built.
    """
    provider = sdk_provider()
    built = provider is None
    if provider is None:
        provider = TracerProvider(resource=resource_for(service), id_generator=HintedIdGenerator())
        chosen = processor()
        if chosen is not None:
            provider.add_span_processor(chosen)
        # Refused (with a warning) if a non-SDK provider was set first: theirs
        # stays global, the bridge and the DB instrumentors record into this one.
        trace.set_tracer_provider(provider)
    generator: IdGenerator = provider.id_generator
    if not isinstance(generator, HintedIdGenerator):
        # An existing provider: wrap its generator, so tracers created from now
        # on (the bridge's among them) take hints; others keep working as before.
        generator = HintedIdGenerator(generator)
        provider.id_generator = generator  # type: ignore[assignment]
    return provider, generator, built


def flush_on_sigterm(provider: TracerProvider, timeout_millis: int = 5000) -> bool:
    """On SIGTERM, flush queued spans (bounded by ``timeout_millis``), then terminate as before.

    An application's own SIGTERM handler is kept and called after the flush; an
    ignored SIGTERM, or one handled outside Python (uWSGI), is left alone. Only
    possible from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None or previous is signal.SIG_IGN:
        # None: a handler installed outside Python (uWSGI's own); leave it be,
        # such servers end their workers through the normal exit path.
        return False
    if getattr(previous, "__zaqar_otel__", False):
        return False

    def handler(signum: int, frame: Any) -> None:
        with contextlib.suppress(Exception):  # never let the flush stop the termination
            provider.force_flush(timeout_millis)
        if callable(previous):
            previous(signum, frame)
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    handler.__zaqar_otel__ = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, handler)
    return True


def in_profiled_request(context: context_api.Context | None = None) -> bool:
    return bool(context_api.get_value(PROFILED, context))


STATEMENT_KEYS = frozenset({"db.statement", "db.query.text"})


def _sanitized(attributes: types.Attributes) -> types.Attributes:
    if not attributes or STATEMENT_KEYS.isdisjoint(attributes):
        return attributes
    return {
        key: sanitize_sql(value) if key in STATEMENT_KEYS and isinstance(value, str) else value
        for key, value in attributes.items()
    }


class SanitizingSpan(trace.Span):
    """A DB span whose statement attributes lose their literal values (``?`` instead)."""

    def __init__(self, inner: trace.Span) -> None:
        self._inner = inner

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if key in STATEMENT_KEYS and isinstance(value, str):
            value = sanitize_sql(value)
        self._inner.set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        self._inner.set_attributes(_sanitized(attributes) or {})

    def end(self, end_time: int | None = None) -> None:
        self._inner.end(end_time)

    def get_span_context(self) -> trace.SpanContext:
        return self._inner.get_span_context()

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        self._inner.add_event(name, attributes, timestamp)

    def update_name(self, name: str) -> None:
        self._inner.update_name(name)

    def is_recording(self) -> bool:
        return self._inner.is_recording()

    def set_status(
        self, status: trace.Status | trace.StatusCode, description: str | None = None
    ) -> None:
        self._inner.set_status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self._inner.record_exception(exception, attributes, timestamp, escaped)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_NOT_PROFILED: AbstractContextManager[trace.Span] = nullcontext(trace.INVALID_SPAN)


class GatedTracer(trace.Tracer):
    """Starts real spans only inside a profiled request; no-op spans elsewhere.

    Unless ``full_statements()`` is true, DB statements lose their literal values.
    """

    def __init__(self, inner: trace.Tracer, full_statements: Callable[[], bool]) -> None:
        self._inner = inner
        self._full_statements = full_statements

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        if not in_profiled_request(context):
            return trace.INVALID_SPAN
        full = self._full_statements()
        span = self._inner.start_span(
            name,
            context,
            kind,
            attributes if full else _sanitized(attributes),
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        return span if full else SanitizingSpan(span)

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> AbstractContextManager[trace.Span]:
        if not in_profiled_request(context):
            # Every DB call of an unprofiled request comes here: no span, no
            # context switch, no generator: the cheapest way through.
            return _NOT_PROFILED
        return self._current_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
            end_on_exit,
        )

    @contextmanager
    def _current_span(
        self,
        name: str,
        context: context_api.Context | None,
        kind: trace.SpanKind,
        attributes: types.Attributes,
        links: Sequence[trace.Link] | None,
        start_time: int | None,
        record_exception: bool,
        set_status_on_exception: bool,
        end_on_exit: bool,
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


class GatedTracerProvider(trace.TracerProvider):
    """Hands out ``GatedTracer``s over the tracers of ``inner``."""

    def __init__(
        self, inner: trace.TracerProvider, full_statements: Callable[[], bool] = lambda: False
    ) -> None:
        self.inner = inner
        self.full_statements = full_statements

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> trace.Tracer:
        return GatedTracer(
            self.inner.get_tracer(
                instrumenting_module_name, instrumenting_library_version, schema_url, attributes
            ),
            self.full_statements,
        )

    def __getattr__(self, name: str) -> Any:
        # force_flush, shutdown, ...: the real provider's.
        return getattr(self.inner, name)
