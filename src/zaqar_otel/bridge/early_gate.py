"""Unprofiled database calls go past the instrumentations' wrappers, straight to the database.

The DB gate (``GatedTracer``) refuses a span outside profiled requests, but the
instrumentations do work before they ask it: the Redis instrumentation formats every
command (its arguments joined into a statement) and builds the span name; the
SQLAlchemy instrumentation reads the engine's URL and the database name of every
statement. This module makes the gate's check (one context lookup) come first, for
what the bridge instrumented with its gated tracer, and nothing else:

* Redis (``gate_redis``): each class-level wrapper the instrumentation installed
  whose tracer is a ``GatedTracer`` is replaced by one that, outside a profiled
  request, calls the database method directly, and otherwise the instrumentation's
  wrapper as before. ``uninstrument()`` still restores the original methods. Clients
  an operator instrumented one by one (``instrument_client``, their own tracer) keep
  their wrappers untouched.
* SQLAlchemy (``gate_sqlalchemy``): ``Engine.connect``'s wrapper likewise, and
  ``EngineTracer._before_cur_exec`` returns at once outside profiled requests for
  engines traced through a ``GatedTracer``; for those engines the connection-pool
  listeners do nothing either (the bridge gives the instrumentation a no-op meter:
  they would count into nothing). An engine traced with another tracer is traced as
  before.

The ``[profiler]`` flags stay authoritative (``zaqar_otel.bridge.backends``): a backend
whose flag is false is uninstrumented, gated or not.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from zaqar_otel.bridge.gate import GatedTracer, in_profiled_request
from zaqar_otel.bridge.logs import LOG

REDIS_MODULES = ("redis.client", "redis.cluster", "redis.asyncio.client", "redis.asyncio.cluster")
SQLALCHEMY_MODULES = ("sqlalchemy.engine.base",)
_POOL_LISTENERS = ("_pool_connect", "_pool_close", "_pool_checkin", "_pool_checkout")
_GATED = "__zaqar_otel_gated__"


def _gated_tracer(function: Callable[..., Any]) -> bool:
    """Whether ``function`` (an instrumentation's wrapper) closes over a ``GatedTracer``."""
    cells = getattr(function, "__closure__", None) or ()
    for cell in cells:
        try:
            if isinstance(cell.cell_contents, GatedTracer):
                return True
        except ValueError:  # an empty cell
            continue
    return False


def _gate_first(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """``wrapper`` (a wrapt wrapper), skipped outside profiled requests."""

    @functools.wraps(wrapper)
    def gated(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if not in_profiled_request():
            return wrapped(*args, **kwargs)
        return wrapper(wrapped, instance, args, kwargs)

    setattr(gated, _GATED, True)
    return gated


def gate_redis() -> int:
    """Gate the Redis instrumentation's class-level wrappers; how many were gated."""
    return gate_wrappers(REDIS_MODULES)


def gate_wrappers(module_names: tuple[str, ...]) -> int:
    """Gate the instrumentations' wrappers (with a ``GatedTracer``) on the classes of
    ``module_names``; how many were gated."""
    try:
        import wrapt
    except ImportError:
        return 0
    count = 0
    for module_name in module_names:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for cls in list(vars(module).values()):
            if isinstance(cls, type) and cls.__module__ == module_name:
                count += _gate_class(wrapt, cls)
    return count


def _gate_class(wrapt: Any, cls: type) -> int:
    count = 0
    for name, value in list(vars(cls).items()):
        if not isinstance(value, wrapt.FunctionWrapper):
            continue
        wrapper = getattr(value, "_self_wrapper", None)
        if (
            wrapper is None
            or getattr(wrapper, _GATED, False)
            or not getattr(wrapper, "__module__", "").startswith("opentelemetry.instrumentation")
            or not _gated_tracer(wrapper)
        ):
            continue
        setattr(cls, name, wrapt.FunctionWrapper(value.__wrapped__, _gate_first(wrapper)))
        count += 1
    return count


def gate_sqlalchemy() -> bool:
    """Gate ``Engine.connect``'s wrapper and ``EngineTracer`` (its methods once per process);
    whether ``EngineTracer`` is gated."""
    gate_wrappers(SQLALCHEMY_MODULES)
    try:
        from opentelemetry.instrumentation.sqlalchemy import engine
    except ImportError:
        return False
    tracer_class = getattr(engine, "EngineTracer", None)
    before = getattr(tracer_class, "_before_cur_exec", None)
    if tracer_class is None or before is None:
        LOG.debug("zaqar-otel: unknown SQLAlchemy instrumentation: statements not gated early")
        return False
    if getattr(before, _GATED, False):
        return True

    @functools.wraps(before)
    def _before_cur_exec(
        self: Any,
        conn: Any,
        cursor: Any,
        statement: Any,
        params: Any,
        context: Any,
        executemany: Any,
    ) -> Any:
        if isinstance(self.tracer, GatedTracer) and not in_profiled_request():
            return statement, params  # no span: nothing computed
        return before(self, conn, cursor, statement, params, context, executemany)

    setattr(_before_cur_exec, _GATED, True)
    tracer_class._before_cur_exec = _before_cur_exec
    for name in _POOL_LISTENERS:
        listener = getattr(tracer_class, name, None)
        if listener is not None:
            setattr(tracer_class, name, _quiet_for_the_bridge(listener))
    return True


def _quiet_for_the_bridge(listener: Callable[..., Any]) -> Callable[..., Any]:
    """A pool listener that does nothing for engines traced through a ``GatedTracer``."""

    @functools.wraps(listener)
    def quiet(self: Any, *args: Any) -> Any:
        if isinstance(self.tracer, GatedTracer):
            return None
        return listener(self, *args)

    return quiet
