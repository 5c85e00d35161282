"""The DB gate: database spans only inside profiled requests, statements without values.

The DB instrumentors (``zaqar_otel.bridge.backends``) are handed a
``GatedTracerProvider``; its tracers start a real span only where the current
context carries the ``PROFILED`` mark, which the bridge sets while an OSProfiler
span is open (``zaqar_otel.bridge.spans``). Anywhere else a database call gets a
shared no-op span: nothing is recorded or exported. Unless ``trace_db_statements``
is on, statement attributes lose their literal values (``?`` instead).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.util import types

from zaqar_otel.bridge.attributes import sanitize_sql

PROFILED = context_api.create_key("zaqar_otel.profiled")


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
