"""The DB gate: database spans only inside profiled requests, statements without values.

The DB instrumentors (``zaqar_otel.bridge.backends``) are handed a
``GatedTracerProvider``; its tracers start a real span only where the current
context carries the ``PROFILED`` mark, which the bridge sets while an OSProfiler
span is open (``zaqar_otel.bridge.spans``). Anywhere else a database call gets a
shared no-op span: nothing is recorded or exported. Unless ``trace_db_statements``
is on, statement attributes lose their literal values (``?`` instead). Every DB span
that passes is a ``DbSpan``: stable semantic conventions, a readable name, expected
answers not marked as errors (``zaqar_otel.bridge.conventions``).
"""

from __future__ import annotations

import contextvars
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import db_attributes as old_db
from opentelemetry.semconv.attributes.db_attributes import DB_QUERY_TEXT, DB_RESPONSE_STATUS_CODE
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_ESCAPED,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.util import types

from zaqar_otel.bridge import conventions
from zaqar_otel.bridge.attributes import sanitize_sql
from zaqar_otel.bridge.flags import request_flags
from zaqar_otel.bridge.logs import LOG
from zaqar_otel.bridge.recorder import Recorder
from zaqar_otel.bridge.redact import scrub_error_text

PROFILED = context_api.create_key("zaqar_otel.profiled")
EXPECTED_RESPONSE_EVENT = "expected database response"


def _current_context() -> Callable[[], context_api.Context]:
    """``context_api.get_current``, or the ContextVar's own ``get`` behind it (the default
    runtime context): called for every database call, profiled or not."""
    runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime).__name__ == "ContextVarsRuntimeContext" and isinstance(
        variable, contextvars.ContextVar
    ):
        return variable.get
    return context_api.get_current


_current = _current_context()


def in_profiled_request(context: context_api.Context | None = None) -> bool:
    """Whether ``context`` (the current one by default) is inside a profiled request."""
    return bool((_current() if context is None else context).get(PROFILED))


STATEMENT_KEYS = frozenset({old_db.DB_STATEMENT, DB_QUERY_TEXT})


def _sanitized(attributes: types.Attributes) -> types.Attributes:
    if not attributes or STATEMENT_KEYS.isdisjoint(attributes):
        return attributes
    return {
        key: sanitize_sql(value) if key in STATEMENT_KEYS and isinstance(value, str) else value
        for key, value in attributes.items()
    }


class DbSpan(trace.Span):
    """A DB span of an instrumentation, made fit to leave (``zaqar_otel.bridge.conventions``).

    Attributes in the stable conventions, statements without literal values (unless
    ``full``), exception texts without the values they echo (unless ``full``), the
    name of the current convention at ``end()``, and expected answers (Redis
    ``NOSCRIPT``) recorded as what they are instead of as an error.
    """

    def __init__(self, inner: trace.Span, name: str, full: bool, keep_old: bool) -> None:
        self._inner = inner
        self._name = name
        self._full = full
        self._keep_old = keep_old
        self._seen: dict[str, Any] = {}
        self._expected = False
        self.transaction: bool | None = None  # Redis pipelines: MULTI/EXEC or not

    def _clean(self, attributes: types.Attributes) -> dict[str, Any]:
        if attributes:
            self._seen.update(attributes)
        translated = conventions.translate_all(attributes, self._keep_old)
        if not self._full:
            translated = dict(_sanitized(translated) or {})
        self._seen.update(translated)
        return translated

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        # what _clean does for one key, without building dicts (instrumentations set many)
        self._seen[key] = value
        for new_key, new_value in conventions.translate(key, value, self._keep_old):
            if not self._full and new_key in STATEMENT_KEYS and isinstance(new_value, str):
                new_value = sanitize_sql(new_value)
            self._seen[new_key] = new_value
            self._inner.set_attribute(new_key, new_value)

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        translated = self._clean(attributes)
        if translated:
            self._inner.set_attributes(translated)

    def update_name(self, name: str) -> None:
        self._name = name
        self._inner.update_name(name)

    def end(self, end_time: int | None = None) -> None:
        try:
            name, extra = conventions.finish(self._name, self._seen, self.transaction)
            if extra:
                self._inner.set_attributes(extra)
            if name != self._name:
                self._inner.update_name(name)
        except Exception:
            LOG.debug("zaqar-otel: could not name a DB span", exc_info=True)
        self._inner.end(end_time)

    def get_span_context(self) -> trace.SpanContext:
        return self._inner.get_span_context()

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        self._inner.add_event(name, attributes, timestamp)

    def is_recording(self) -> bool:
        return self._inner.is_recording()

    def set_status(
        self, status: trace.Status | trace.StatusCode, description: str | None = None
    ) -> None:
        code = status.status_code if isinstance(status, trace.Status) else status
        if isinstance(status, trace.Status):
            description = status.description
        if code is trace.StatusCode.ERROR:
            if self._expected:
                return  # an expected answer (NOSCRIPT) is not an error
            if description and not self._full:
                description = scrub_error_text(description)
        self._inner.set_status(trace.Status(code, description))

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        if self._full:
            self._inner.record_exception(exception, attributes, timestamp, escaped)
            return
        message = scrub_error_text(str(exception))
        # where it was raised, without the source lines (they may hold literals)
        frames = "".join(
            f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}\n'
            for frame in traceback.extract_tb(exception.__traceback__)
        )
        event = {
            EXCEPTION_TYPE: conventions.error_attributes(exception).get(ERROR_TYPE, ""),
            EXCEPTION_MESSAGE: message,
            EXCEPTION_STACKTRACE: f"Traceback (most recent call last):\n{frames}"
            f"{type(exception).__name__}: {message}",
            EXCEPTION_ESCAPED: str(escaped),
        }
        event.update(attributes or {})
        self._inner.add_event("exception", event, timestamp)

    def fail(self, exception: BaseException, record: bool, set_status: bool) -> None:
        """What leaving the span with ``exception`` means: an expected answer or an error."""
        expected = conventions.expected_response(exception)
        if expected is not None:
            code, explanation = expected
            self._expected = True
            self._inner.set_attribute(DB_RESPONSE_STATUS_CODE, code)
            self._inner.add_event(
                EXPECTED_RESPONSE_EVENT,
                {
                    DB_RESPONSE_STATUS_CODE: code,
                    EXCEPTION_TYPE: type(exception).__name__,
                    "zaqar_otel.explanation": explanation,
                },
            )
            return
        self._inner.set_attributes(conventions.error_attributes(exception))
        if record:
            self.record_exception(exception, escaped=True)
        if set_status:
            self.set_status(trace.StatusCode.ERROR, f"{type(exception).__name__}: {exception}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_NOT_PROFILED: AbstractContextManager[trace.Span] = nullcontext(trace.INVALID_SPAN)


class GatedTracer(trace.Tracer):
    """Starts real spans only inside a profiled request; no-op spans elsewhere.

    The real spans are ``DbSpan``s: unless ``full_statements()`` is true, DB
    statements lose their literal values; ``keep_old`` keeps the old convention keys.
    """

    def __init__(
        self, inner: trace.Tracer, full_statements: Callable[[], bool], keep_old: bool = False
    ) -> None:
        self._inner = inner
        self._full_statements = full_statements
        self._keep_old = keep_old
        # DB spans are LightSpans too where the tracer allows (zaqar_otel.bridge.recorder)
        self._recorder = Recorder.for_tracer(inner)

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
        flags = request_flags(context)  # trace_db_statements as the request read it
        full = flags.statements if flags is not None else self._full_statements()
        translated = conventions.translate_all(attributes, self._keep_old) if attributes else None
        clean = translated if full else _sanitized(translated)
        recorder = self._recorder
        if recorder is not None and recorder.usable():
            inner: trace.Span = recorder.start_child(name, context, kind, clean, links, start_time)
        else:
            inner = self._inner.start_span(
                name,
                context,
                kind,
                clean,
                links,
                start_time,
                record_exception,
                set_status_on_exception,
            )
        span = DbSpan(
            inner,
            name,
            full,
            self._keep_old,
        )
        if attributes:
            span._seen.update(attributes)
            span._seen.update(translated or {})
        return span

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
        return _CurrentSpan(span, end_on_exit, record_exception, set_status_on_exception)


class _CurrentSpan:
    """``trace.use_span`` for a DB span, as a plain context manager (no generator): the span
    current while the block runs; an exception is what ``DbSpan.fail`` makes of it."""

    __slots__ = ("end_on_exit", "record_exception", "set_status", "span", "token")

    def __init__(
        self, span: trace.Span, end_on_exit: bool, record_exception: bool, set_status: bool
    ) -> None:
        self.span = span
        self.end_on_exit = end_on_exit
        self.record_exception = record_exception
        self.set_status = set_status
        self.token: object = None

    def __enter__(self) -> trace.Span:
        self.token = context_api.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        try:
            if isinstance(exc, Exception) and isinstance(self.span, DbSpan):
                self.span.fail(exc, self.record_exception, self.set_status)
        finally:
            context_api.detach(self.token)  # type: ignore[arg-type]
            if self.end_on_exit:
                self.span.end()


class GatedTracerProvider(trace.TracerProvider):
    """Hands out ``GatedTracer``s over the tracers of ``inner``."""

    def __init__(
        self,
        inner: trace.TracerProvider,
        full_statements: Callable[[], bool] = lambda: False,
        keep_old: bool | None = None,
    ) -> None:
        self.inner = inner
        self.full_statements = full_statements
        # OTEL_SEMCONV_STABILITY_OPT_IN=database/dup: the operator wants both vocabularies
        self.keep_old = conventions.keep_old_keys() if keep_old is None else keep_old

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
            self.keep_old,
        )

    def __getattr__(self, name: str) -> Any:
        # force_flush, shutdown, ...: the real provider's.
        return getattr(self.inner, name)
