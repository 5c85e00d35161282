"""Unsigned requests traced by sampling or a trusted W3C parent, decided at the outermost tracer.

Zaqar's request tracer (OSProfiler's ``WsgiMiddleware``, put outermost by
``request_span``) traces signed requests. ``SamplingTracer`` wraps it:

* a signed request (``X-Trace-Info``/``X-Trace-HMAC`` valid for one of ``hmac_keys``)
  goes to it as before: a signature always wins, and takes no token;
* for any other request ``zaqar_otel.bridge.sampling.ADMISSION`` decides (sampled?
  trusted ``traceparent``? within ``trace_rate_limit``?); a chosen request is traced
  as a signed one is (the same ``wsgi`` element, so the same request, controller and
  DB spans), with the OSProfiler ids the decision derived, the caller's span (and its
  ``tracestate``) as the current OTel context, and ``zaqar_otel.trace.origin``
  (``sampled`` or ``traceparent``) on the request span;
* everything else goes to the tracer untouched (it passes unsigned requests through).

The profiler of a chosen request has no HMAC key: what Zaqar calls while serving it
carries a W3C ``traceparent`` (keystoneauth, python-requests calls, webhooks), never
``X-Trace-Info``/``X-Trace-HMAC``: an unsigned caller cannot make Zaqar sign for it.

``configure(conf)`` applies the ``[profiler]`` options at start and on every reload
(``conf.mutate_config_files()``, SIGHUP). ``trace_info``, ``attach_caller`` and
``mark_origin`` serve the websocket transport too; ``profiled(decision)`` combines them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan
from osprofiler import _utils, web

from zaqar_otel.bridge import sampling
from zaqar_otel.bridge.logs import LOG

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ORIGIN = "zaqar_otel.trace.origin"
# the configurations whose reloads re-apply the options, by id (ConfigOpts is unhashable)
_configured: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def configure(conf: Any) -> None:
    """Apply ``conf``'s ``[profiler]`` sampling options now and on each reload."""
    if not conf.profiler.enabled:
        return
    sampling.configure(conf.profiler)
    if _configured.get(id(conf)) is conf or not hasattr(conf, "register_mutate_hook"):
        return
    _configured[id(conf)] = conf
    conf.register_mutate_hook(lambda conf, fresh: sampling.configure(conf.profiler))


def validly_signed(environ: dict[str, Any], tracer: Any) -> bool:
    """Whether OSProfiler's ``tracer`` would trace this request (a valid signature)."""
    info, mac = environ.get("HTTP_X_TRACE_INFO"), environ.get("HTTP_X_TRACE_HMAC")
    if not info or not mac:
        return False
    keys = web._HMAC_KEYS or getattr(tracer, "hmac_keys", None)
    return bool(tracer._trace_is_valid(_utils.signed_unpack(info, mac, keys)))


def trace_info(decision: sampling.Decision) -> dict[str, Any]:
    """OSProfiler's trace info for a chosen request: the decision's ids, no HMAC key."""
    return {"hmac_key": "", "base_id": decision.base_id, "parent_id": decision.parent_id}


def attach_caller(decision: sampling.Decision | None) -> object | None:
    """The trusted caller's span (and tracestate) as the current context; a detach token."""
    if decision is None or decision.parent is None:
        return None
    return context_api.attach(trace.set_span_in_context(NonRecordingSpan(decision.parent)))


def detach_caller(token: object | None) -> None:
    if token is not None:
        context_api.detach(token)  # type: ignore[arg-type]


@contextmanager
def profiled(decision: sampling.Decision) -> Iterator[None]:
    """The OSProfiler profiler of one chosen request, under the caller's span."""
    from osprofiler import profiler

    token = attach_caller(decision)
    info = trace_info(decision)
    profiler.init(info["hmac_key"], base_id=info["base_id"], parent_id=info["parent_id"])
    try:
        yield
    finally:
        profiler.clean()
        detach_caller(token)


def mark_origin(decision: sampling.Decision | None) -> None:
    """``zaqar_otel.trace.origin`` on the request span just started (if chosen here)."""
    if decision is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(ORIGIN, decision.reason)


class SamplingTracer:
    """WSGI middleware around OSProfiler's tracer ``tracer`` (which wraps ``app``)."""

    def __init__(self, tracer: Any, app: WSGIApp) -> None:
        self.tracer = tracer
        self.app = app

    def _enabled(self) -> bool:
        """The tracer's own rule: OSProfiler's global switch, else its flag."""
        return bool(web._ENABLED if web._ENABLED is not None else self.tracer.enabled)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        decision = None
        if sampling.ADMISSION.policy.active:
            try:
                if self._enabled() and not validly_signed(environ, self.tracer):
                    decision = sampling.ADMISSION.decide(
                        environ.get("HTTP_TRACEPARENT"), environ.get("HTTP_TRACESTATE")
                    )
            except Exception:
                LOG.debug("zaqar-otel: sampling decision failed", exc_info=True)
        if decision is None:
            return self.tracer(environ, start_response)
        return self._traced(decision, environ, start_response)

    def _traced(
        self, decision: sampling.Decision, environ: dict[str, Any], start_response: Any
    ) -> Any:
        """What OSProfiler's tracer does for a signed request, with the decision's ids."""
        import webob
        from osprofiler import profiler

        request = webob.Request(environ)
        info = {
            "request": {
                "path": request.path,
                "query": request.query_string,
                "method": request.method,
                "scheme": request.scheme,
            }
        }
        with profiled(decision), profiler.Trace("wsgi", info=info):
            mark_origin(decision)
            response = request.get_response(self.app)
        return response(environ, start_response)
