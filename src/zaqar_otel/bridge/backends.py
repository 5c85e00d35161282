"""``[profiler]`` flags -> OpenTelemetry DB instrumentors, switched on and off.

=================  ========================================  ==================
flag               instrumentor                              extra
=================  ========================================  ==================
trace_mongodb      opentelemetry-instrumentation-pymongo     ``zaqar-otel[mongodb]``
trace_redis        opentelemetry-instrumentation-redis       ``zaqar-otel[redis]``
trace_sqlalchemy   opentelemetry-instrumentation-sqlalchemy  ``zaqar-otel[sqlalchemy]``
=================  ========================================  ==================

The flags are authoritative: a true flag instruments the backend with the
bridge's gated provider (DB spans only inside profiled requests; Redis and
SQLAlchemy calls outside them skip the instrumentation's work altogether:
``zaqar_otel.bridge.early_gate``), a false flag uninstruments it even if
something else (``opentelemetry-instrument``) instrumented it. Instrumentation
applies to clients created afterwards (SQLAlchemy engines); Redis is patched at
class level. Redis gets two hooks: a
script's name on ``EVALSHA``, and whether a pipeline is a transaction (the span's
name, see ``zaqar_otel.bridge.conventions``).

pymongo is different: its instrumentor builds one command listener per process
(registered with pymongo, which has no way to unregister it), with the provider
and ``capture_statement`` of the *first* ``instrument()``; later calls only
switch it on and off. Whoever instrumented first (``opentelemetry-instrument``
does, before Zaqar starts), the bridge points that listener at the gated
provider and makes its ``capture_statement`` follow ``trace_db_statements``
live; it then serves every ``MongoClient``, created before or after.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.semconv.attributes.db_attributes import DB_STORED_PROCEDURE_NAME

from zaqar_otel.bridge import conventions, early_gate
from zaqar_otel.bridge.flags import request_flags
from zaqar_otel.bridge.gate import DbSpan, GatedTracer, GatedTracerProvider, in_profiled_request
from zaqar_otel.bridge.logs import LOG, log_once


@dataclass(frozen=True)
class Backend:
    flag: str
    module: str
    instrumentor: str
    extra: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


BACKENDS: dict[str, Backend] = {
    "mongodb": Backend(
        "trace_mongodb", "opentelemetry.instrumentation.pymongo", "PymongoInstrumentor", "mongodb"
    ),
    "redis": Backend(
        "trace_redis", "opentelemetry.instrumentation.redis", "RedisInstrumentor", "redis"
    ),
    "sqlalchemy": Backend(
        "trace_sqlalchemy",
        "opentelemetry.instrumentation.sqlalchemy",
        "SQLAlchemyInstrumentor",
        "sqlalchemy",
        # 0.66b1 declares SQLAlchemy < 2.1 but works with 2.1.
        {"skip_dep_check": True},
    ),
}

_active: set[str] = set()
_lock = threading.Lock()


def active(name: str) -> bool:
    """Whether the bridge has instrumented backend ``name``."""
    return name in _active


def _instrumentor(backend: Backend) -> Any | None:
    try:
        module = importlib.import_module(backend.module)
    except ImportError:
        return None
    return getattr(module, backend.instrumentor)()


def apply(
    flags: Any, provider: trace.TracerProvider, full_statements: Callable[[], bool] = lambda: False
) -> dict[str, bool]:
    """Instrument exactly the backends whose flag is true in ``flags``.

    ``flags`` is the ``[profiler]`` group (``conf.profiler``) or any object or
    mapping with the flag names; ``enabled`` false (if present) turns every flag
    off. Returns {backend: instrumented}.
    ``full_statements`` (``trace_db_statements``) keeps literal values in statements.
    """
    gated = GatedTracerProvider(provider, full_statements)
    result: dict[str, bool] = {}

    def flag(name: str, default: bool) -> bool:
        return bool(
            flags.get(name, default)
            if isinstance(flags, Mapping)
            else getattr(flags, name, default)
        )

    # enabled = false: no request is ever profiled, so no DB span could pass the
    # gate; the instrumentation would only cost time on every DB call.
    enabled = flag("enabled", True)
    with _lock:
        for name, backend in BACKENDS.items():
            wanted = enabled and flag(backend.flag, False)
            result[name] = _switch(name, backend, wanted, gated)
    return result


def _switch(name: str, backend: Backend, wanted: bool, gated: GatedTracerProvider) -> bool:
    instrumentor = _instrumentor(backend)
    if instrumentor is None:
        if wanted:
            log_once.warning(
                f"missing-{name}",
                "zaqar-otel: [profiler] %s = true but %s is not installed "
                "(pip install 'zaqar-otel[%s]'): no %s spans",
                backend.flag,
                backend.module,
                backend.extra,
                name,
            )
        return False
    try:
        if instrumentor.is_instrumented_by_opentelemetry and (not wanted or name not in _active):
            # Off, or instrumented by someone else with an ungated provider.
            instrumentor.uninstrument()
            _active.discard(name)
        if wanted and not instrumentor.is_instrumented_by_opentelemetry:
            kwargs = dict(backend.kwargs)
            if name == "redis":
                kwargs["request_hook"] = redis_request_hook
                kwargs["response_hook"] = redis_response_hook
            if name == "sqlalchemy":
                # traces only: the pool-usage metric costs ~12 us per statement,
                # traced or not (a micro-benchmark on SQLite: +38.6 us -> +26.5 us)
                from opentelemetry.metrics import NoOpMeterProvider

                kwargs["meter_provider"] = NoOpMeterProvider()
            instrumentor.instrument(tracer_provider=gated, **kwargs)
            if name == "mongodb" and not own_pymongo_listener(instrumentor, gated):
                instrumentor.uninstrument()  # not gated: no MongoDB spans rather than leaks
                return False
            # unprofiled calls skip the instrumentation's own work (zaqar_otel.bridge.early_gate)
            if name == "redis":
                early_gate.gate_redis()
            elif name == "sqlalchemy":
                early_gate.gate_sqlalchemy()
            _active.add(name)
    except Exception:
        LOG.warning("zaqar-otel: could not switch %s tracing", name, exc_info=True)
    return name in _active


_SCRIPT_COMMANDS = frozenset({"EVALSHA", "EVALSHA_RO", "FCALL", "FCALL_RO"})


def redis_request_hook(span: Any, instance: Any, args: Any, kwargs: Any) -> None:
    """``EVALSHA <sha>``: the script as ``db.stored_procedure.name`` (its name if known)."""
    if len(args) > 1 and str(args[0]).upper() in _SCRIPT_COMMANDS and span.is_recording():
        script = str(args[1])
        span.set_attribute(DB_STORED_PROCEDURE_NAME, conventions.SCRIPT_NAMES.get(script, script))


def redis_response_hook(span: Any, instance: Any, response: Any) -> None:
    """A pipeline tells whether it ran as a transaction (MULTI/EXEC); nothing else is read."""
    if isinstance(span, DbSpan) and hasattr(instance, "command_stack"):
        span.transaction = bool(getattr(instance, "transaction", True))


class LiveFlag:
    """True inside profiled requests whose ``trace_db_statements`` is (as the request read
    it, else ``read()``), tested each time."""

    __slots__ = ("read",)

    def __init__(self, read: Callable[[], bool]) -> None:
        self.read = read

    def __bool__(self) -> bool:
        if not in_profiled_request():
            return False
        flags = request_flags()
        return flags.statements if flags is not None else bool(self.read())


def own_pymongo_listener(instrumentor: Any, gated: GatedTracerProvider) -> bool:
    """Point pymongo's one command listener at ``gated`` and live ``trace_db_statements``.

    False (and a warning) if this version of the instrumentation has no such listener.
    """
    listener = getattr(instrumentor, "_commandtracer_instance", None)
    tracer = getattr(listener, "_tracer", None)
    if listener is None or tracer is None or not hasattr(listener, "capture_statement"):
        log_once.warning(
            "pymongo-listener",
            "zaqar-otel: unknown opentelemetry-instrumentation-pymongo version (no command "
            "listener found): MongoDB is not traced",
        )
        return False
    if isinstance(tracer, GatedTracer):
        tracer = tracer._inner
    scope = getattr(tracer, "_instrumentation_scope", None)
    listener._tracer = gated.get_tracer(
        getattr(scope, "name", "opentelemetry.instrumentation.pymongo"),
        getattr(scope, "version", None),
        getattr(scope, "schema_url", None),
    )
    listener.capture_statement = LiveFlag(gated.full_statements)
    return True


def reset() -> None:
    """Uninstrument every backend the bridge instrumented (tests, shutdown)."""
    with _lock:
        for name in list(_active):
            instrumentor = _instrumentor(BACKENDS[name])
            if instrumentor is not None and instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
            _active.discard(name)
