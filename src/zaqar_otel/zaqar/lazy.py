"""Lazy storage results stay inside the span of the storage call that returned them.

Zaqar's storage controllers (traced by OSProfiler's ``trace_cls``) return
generators and cursors: Redis ``MessageController.list`` yields its messages,
MongoDB returns pymongo cursors inside generators and tuples. The database
commands run later, while the WSGI layer consumes them, after the traced call
returned: its span would last microseconds and the database spans would hang
under the request span.

``trace_cls`` here is OSProfiler's, with one difference: when a traced call of
a profiled request returns such a result (or a tuple holding one), the call's
span is held open (``SpanBridge.hold``) and the result comes back wrapped in a
``LazyResult``. Each step of its consumption (``next()``, ``close()``, any
cursor method) runs with the span's context current and the span's OSProfiler
id on top of OSProfiler's stack, so database spans and traced calls made
meanwhile become its children. The span ends when every wrapper is exhausted,
closed or garbage-collected, at the end of the last step; at the latest with
its parent span (``SpanBridge``). Outside profiled requests nothing is wrapped.

``install()`` gives Zaqar's storage modules this ``trace_cls``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from osprofiler import profiler

from zaqar_otel.bridge.logs import LOG
from zaqar_otel.bridge.spans import HeldSpan, current_bridge

# The Zaqar modules that trace storage objects with ``profiler.trace_cls``.
TRACING_MODULES = (
    "zaqar.bootstrap",
    "zaqar.storage.utils",
    "zaqar.storage.pipeline",
    "zaqar.storage.pooling",
    "zaqar.storage.redis.driver",
    "zaqar.storage.mongodb.driver",
    "zaqar.storage.sqlalchemy.driver",
    "zaqar.storage.swift.driver",
)


def is_lazy(value: object) -> bool:
    """Work left to do: a generator, or an iterator that is not a builtin one (cursors)."""
    cls = type(value)
    return cls is types.GeneratorType or (cls.__module__ != "builtins" and hasattr(cls, "__next__"))


def _lazy_result(result: object) -> bool:
    if type(result) is tuple:
        return any(is_lazy(value) for value in result)
    return is_lazy(result)


class LazyResult:
    """``inner`` (a generator or cursor), consumed inside the span ``held``.

    Iteration, ``close()``, special methods ``inner``'s type has (``len()``,
    ``[]``, ``with``) and every method reached through attribute access run
    inside the span; a method returning ``inner`` itself (``cursor.limit(5)``)
    returns the wrapper, a lazy value it returns (``cursor.clone()``) is
    wrapped too. Done (span released) when exhausted, closed or collected.
    """

    __slots__ = ("__weakref__", "_done", "_element", "_held", "_inner", "_profiler")

    def __init__(
        self, inner: Any, held: HeldSpan, owner: profiler._Profiler | None, element: str
    ) -> None:
        self._inner = inner
        self._held = held
        self._profiler = owner
        self._element = element
        held.retain()
        self._done = weakref.finalize(self, held.release)
        self._done.atexit = False  # at exit the request (its parent) is long gone

    def __iter__(self) -> LazyResult:
        return self

    def __next__(self) -> Any:
        return self._run(next, self._inner)

    def close(self) -> None:
        try:
            self._run(self._inner.close)
        finally:
            self._done()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value) or isinstance(value, type):
            return value
        return functools.partial(self._run, value)

    def __repr__(self) -> str:
        return f"LazyResult({self._inner!r})"

    def _run(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)`` inside the span."""
        stack = self._push()
        try:
            with self._held.resumed():
                result = method(*args, **kwargs)
        except StopIteration:
            self._done()
            raise
        except Exception as error:
            self._held.failed(error)
            raise
        finally:
            if stack is not None:
                _pop(stack, self._element)
        if result is self._inner:
            return self
        return self._wrap(result) if is_lazy(result) else result

    def _wrap(self, value: Any) -> Any:
        return wrap(value, self._held, self._profiler, self._element)

    def _push(self) -> Any:
        """Make the held span OSProfiler's current element (same profiler only)."""
        owner = self._profiler
        if owner is None or profiler.get() is not owner:
            return None
        stack = getattr(owner, "_trace_stack", None)
        if stack is None:
            return None
        stack.append(self._element)
        return stack


def _pop(stack: Any, element: str) -> None:
    if stack and stack[-1] == element:
        stack.pop()


# Special methods a wrapper has when the wrapped type has them (looked up on the type).
_SPECIAL = ("__len__", "__getitem__", "__contains__", "__bool__", "__enter__")


def _special(name: str) -> Callable[..., Any]:
    def method(self: LazyResult, *args: Any) -> Any:
        return self._run(getattr(self._inner, name), *args)

    method.__name__ = name
    return method


def _exit(self: LazyResult, *exc_info: Any) -> Any:
    try:
        return self._run(self._inner.__exit__, *exc_info)
    finally:
        self._done()


_WRAPPER_TYPES: dict[type, type[LazyResult]] = {}


def _wrapper_type(cls: type) -> type[LazyResult]:
    """LazyResult with the special methods of ``cls`` (so ``len()``/``bool()`` behave alike)."""
    wrapper = _WRAPPER_TYPES.get(cls)
    if wrapper is None:
        methods = {name: _special(name) for name in _SPECIAL if hasattr(cls, name)}
        if hasattr(cls, "__exit__"):
            methods["__exit__"] = _exit
        wrapper = LazyResult
        if methods:
            namespace: dict[str, Any] = {"__slots__": (), **methods}
            wrapper = type(f"LazyResult[{cls.__name__}]", (LazyResult,), namespace)
        _WRAPPER_TYPES[cls] = wrapper
    return wrapper


def wrap(value: Any, held: HeldSpan, owner: profiler._Profiler | None, element: str) -> Any:
    """``value`` in a LazyResult of the right type."""
    return _wrapper_type(type(value))(value, held, owner, element)


def keep_in_span(result: Any) -> Any:
    """``result`` with its lazy parts wrapped inside the current bridge span, if any."""
    bridge = current_bridge()
    owner = profiler.get()
    if bridge is None or owner is None:
        return result
    element = owner.get_id()
    held = bridge.hold(element)
    if held is None:  # this call's span was skipped (a [profiler] flag)
        return result
    try:
        if type(result) is tuple:
            return tuple(wrap(v, held, owner, element) if is_lazy(v) else v for v in result)
        return wrap(result, held, owner, element)
    finally:
        held.release()


def held_call(method: Any) -> Any:
    """The bound ``method``, whose lazy result stays in the span of its traced call.

    Bound to the same object and named like ``method``, so OSProfiler names the
    span as before.
    """
    function = method.__func__
    _profiler = profiler.get

    @functools.wraps(function)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = function(self, *args, **kwargs)
        if _profiler() is None or not _lazy_result(result):
            return result  # outside profiled requests: one thread-local lookup
        return keep_in_span(result)

    return types.MethodType(call, method.__self__)


def _traced_methods(obj: object, trace_private: bool) -> Iterator[tuple[str, Any]]:
    """The bound methods of ``obj`` that OSProfiler's ``trace_cls`` traces (a subset at most).

    Plain functions of the class, not shadowed on the instance; properties are not evaluated.
    """
    instance = getattr(obj, "__dict__", {})
    for name in dir(type(obj)):
        if name.startswith("__") or (name.startswith("_") and not trace_private):
            continue
        if name in instance:
            continue  # replaced on this instance already (traced before)
        if isinstance(inspect.getattr_static(type(obj), name, None), types.FunctionType):
            yield name, getattr(obj, name)


def trace_cls(
    name: str,
    info: dict[str, Any] | None = None,
    hide_args: bool = False,
    hide_result: bool = True,
    trace_private: bool = False,
    allow_multiple_trace: bool = True,
    trace_class_methods: bool = False,
    trace_static_methods: bool = False,
) -> Callable[[Any], Any]:
    """OSProfiler's ``trace_cls``; on an instance, lazy results also stay in their span."""
    stock = profiler.trace_cls(
        name,
        info=info,
        hide_args=hide_args,
        hide_result=hide_result,
        trace_private=trace_private,
        allow_multiple_trace=allow_multiple_trace,
        trace_class_methods=trace_class_methods,
        trace_static_methods=trace_static_methods,
    )

    def decorator(obj: Any) -> Any:
        if not inspect.isclass(obj):
            for attr, method in list(_traced_methods(obj, trace_private)):
                setattr(obj, attr, held_call(method))
        return stock(obj)

    return decorator


class _ProfilerModule(types.ModuleType):
    """``osprofiler.profiler`` as Zaqar's storage modules see it: this module's ``trace_cls``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(profiler, name)


PROFILER = _ProfilerModule("osprofiler.profiler")
PROFILER.trace_cls = trace_cls  # type: ignore[attr-defined]


def install() -> list[str]:
    """Give Zaqar's storage modules this ``trace_cls`` (idempotent); the modules patched."""
    patched = []
    for module_name in TRACING_MODULES:
        try:
            module = importlib.import_module(module_name)
        except Exception:  # an optional store's dependency is missing: not used then
            LOG.debug("zaqar-otel: %s not importable", module_name, exc_info=True)
            continue
        if getattr(module, "profiler", None) in (profiler, PROFILER):
            module.profiler = PROFILER  # type: ignore[attr-defined]
            patched.append(module_name)
    return patched
