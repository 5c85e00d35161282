"""The TracerProvider the bridge records into, and chosen span ids.

* ``use_or_build(service, host)``: the process's SDK provider if one is set (say by
  ``opentelemetry-instrument``), never replaced; otherwise one built from the
  ``OTEL_*`` environment and made global, with ``service`` as default service name
  and the host and process in its resource (``resource_for``).
* ``HintedIdGenerator``: the SDK takes no span id in ``start_span``; this id
  generator returns the ids a thread hinted just before the call, so OTel ids
  equal those derived from OSProfiler's (see ``zaqar_otel.bridge.ids``).
* ``ProfiledSampler``: every span inside a profiled request is recorded, whatever the
  provider's sampler (``OTEL_TRACES_SAMPLER``) would say: whether a request is traced
  is decided once, at its start (a valid signature, ``zaqar_otel.bridge.sampling``),
  and its trace is then complete. Other spans are left to that sampler.
* ``flush_on_sigterm``: queued spans are flushed before SIGTERM ends the process.
* ``tracer(name)``: a tracer of the provider ``use_or_build`` chose, for spans the
  bridge starts itself (outgoing calls, messages), not from OSProfiler events.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    OTELResourceDetector,
    ProcessResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler, SamplingResult
from opentelemetry.semconv._incubating.attributes.host_attributes import HOST_ARCH, HOST_NAME
from opentelemetry.semconv._incubating.attributes.process_attributes import (
    PROCESS_COMMAND_ARGS,
    PROCESS_COMMAND_LINE,
)
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from zaqar_otel.bridge.gate import in_profiled_request

# opentelemetry-sdk before 1.44 puts the whole command line in the process attributes
_SECRET_PRONE = (PROCESS_COMMAND_LINE, PROCESS_COMMAND_ARGS)


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
        """False for hinted ids; else the fallback's answer (older SDKs' generators, 1.35's
        among them, have no such method: their ids never claim the W3C random flag)."""
        if getattr(self._local, "ids", None):
            return False
        fallback = getattr(self.fallback, "is_trace_id_random", None)
        return bool(fallback()) if fallback else False


class ProfiledSampler(Sampler):
    """Records every span started inside a profiled request; ``inner`` decides the rest."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: context_api.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        sampler = ALWAYS_ON if in_profiled_request(parent_context) else self.inner
        return sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"ProfiledSampler{{{self.inner.get_description()}}}"


def _record_profiled(provider: TracerProvider) -> None:
    """Tracers created from now on record every span of a profiled request."""
    if not isinstance(provider.sampler, ProfiledSampler):
        provider.sampler = ProfiledSampler(provider.sampler)


class _HashedOnce(Resource):
    """A Resource that computes its hash once: the SDK's OTLP encoder hashes the
    resource of every span it exports (a sorted JSON dump each time)."""

    _hash: int | None = None

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = super().__hash__()
        return self._hash


def resource_for(service: str, host: str | None = None) -> Resource:
    """The bridge's resource: who exports (service, host, process), once per process.

    ``service`` is the default ``service.name``; ``host.name`` is ``host`` (what
    OSProfiler was initialised with) or the machine's hostname, ``host.arch`` and the
    SDK's process attributes (pid, executable, runtime; not the command line, which
    may hold secrets) follow. ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``
    win over all of them. Spans then carry none of these: Jaeger shows them once, as
    the process.
    """
    detected: dict[str, Any] = {
        HOST_NAME: host or socket.gethostname(),
        HOST_ARCH: platform.machine(),
    }
    process = ProcessResourceDetector().detect().attributes
    detected.update({k: v for k, v in process.items() if k not in _SECRET_PRONE})
    merged = Resource.create({**detected, SERVICE_NAME: service}).merge(
        OTELResourceDetector().detect()
    )
    return _HashedOnce(merged.attributes, merged.schema_url)


def sdk_provider() -> TracerProvider | None:
    """The global provider if it is the SDK's."""
    current = trace.get_tracer_provider()
    return current if isinstance(current, TracerProvider) else None


_chosen: TracerProvider | None = None
_tracers: dict[tuple[TracerProvider, str], trace.Tracer] = {}


def tracer(name: str) -> trace.Tracer:
    """A tracer of the provider the bridge records into (the global one before that); its
    spans are LightSpans where the provider allows (``zaqar_otel.bridge.recorder``)."""
    from zaqar_otel import __version__
    from zaqar_otel.bridge.recorder import LightTracer

    chosen = _chosen
    if chosen is None:
        return trace.get_tracer(name, __version__)
    key = (chosen, name)
    found = _tracers.get(key)
    if found is None:
        found = _tracers[key] = LightTracer(chosen.get_tracer(name, __version__))
    return found


def use_or_build(
    service: str, processor: Callable[[], SpanProcessor | None], host: str | None = None
) -> tuple[TracerProvider, HintedIdGenerator, bool]:
    """(provider, its hinted id generator, whether the bridge built it).

    ``processor`` is called only when a provider is built.
    """
    provider = sdk_provider()
    built = provider is None
    if provider is None:
        provider = TracerProvider(
            resource=resource_for(service, host), id_generator=HintedIdGenerator()
        )
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
    _record_profiled(provider)
    global _chosen
    _chosen = provider
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


def flush_at_uwsgi_exit(provider: TracerProvider, timeout_millis: int = 5000) -> bool:
    """Under uWSGI, flush queued spans in ``uwsgi.atexit``, when a worker ends.

    A uWSGI worker that ends (recycled by ``max-requests``, reloaded, stopped)
    runs ``uwsgi.atexit`` first, then ``Py_Finalize``, which joins every other
    Python thread before the ``atexit`` functions (the SDK's own flush) run:
    measured here, 5-7 s of a 2-core machine under load, long enough for a
    stop to kill the worker with its spans still queued. An application's own
    ``uwsgi.atexit`` is kept and called after the flush. False outside uWSGI.
    """
    try:
        uwsgi = importlib.import_module("uwsgi")  # only inside uWSGI
    except ImportError:
        return False
    previous = getattr(uwsgi, "atexit", None)
    if getattr(previous, "__zaqar_otel__", False):
        return False

    def hook() -> None:
        with contextlib.suppress(Exception):  # never let the flush stop the exit
            provider.force_flush(timeout_millis)
        if callable(previous):
            previous()

    hook.__zaqar_otel__ = True  # type: ignore[attr-defined]
    setattr(uwsgi, "atexit", hook)  # noqa: B010  (a module attribute uWSGI reads)
    return True
