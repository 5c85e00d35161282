"""What differs between the Zaqar releases we support (20.x to 23.x), levelled here.

Zaqar 20 and 21 set OSProfiler up by hand in
``zaqar.transport.middleware.profile``; Zaqar 22 replaced that with OSProfiler's
own helpers. The hand-made version differs in two ways that break tracing:

* its ``ProfileWSGIMiddleware`` never calls ``profiler.clean()``: the first signed request
  leaves its profiler in the thread, so every later request served by that thread (signed
  or not) lands in the first request's trace (``profiler.init`` keeps an existing profiler);
* its ``setup`` builds the notifier without ``conf`` (the driver then reads ``cfg.CONF``,
  not the configuration Zaqar was bootstrapped with) and ignores ``[profiler]
  trace_requests``.

``wsgi_tracer`` (every release; ``request_span`` installs it outermost) and
``osprofiler_setup`` (Zaqar 20 and 21 only) make all releases behave as documented.
"""

from __future__ import annotations

from typing import Any


def sets_up_profiler_by_hand(profile: Any) -> bool:
    """True for Zaqar 20 and 21 (``profile`` is ``zaqar.transport.middleware.profile``)."""
    return hasattr(profile, "ProfileWSGIMiddleware")


def osprofiler_setup(conf: Any, binary: str, host: str) -> None:
    """Zaqar 22's ``profile.setup`` for Zaqar 20 and 21, without its flaw: OSProfiler is
    only initialised when ``[profiler] enabled`` (Zaqar 22 always initialised it)."""
    from osprofiler import initializer, web

    if not conf.profiler.enabled:
        web.disable()
        return
    initializer.init_from_conf(conf=conf, context=None, project="Zaqar", service=binary, host=host)


def wsgi_tracer(app: Any, conf: Any) -> Any:
    """``profile.install_wsgi_tracer`` as ``[profiler] trace_wsgi_transport`` documents it.

    OSProfiler's WSGI middleware (which cleans the thread's profiler after each request)
    when ``enabled`` and ``trace_wsgi_transport`` are both true, else no tracing
    middleware at all. Zaqar 22 and 23 install OSProfiler's middleware with
    ``enabled=trace_wsgi_transport``, which OSProfiler ignores once profiling is enabled:
    there ``trace_wsgi_transport = false`` traced every signed request anyway.
    """
    from osprofiler import web

    if not (conf.profiler.enabled and conf.profiler.trace_wsgi_transport):
        return app
    return web.WsgiMiddleware(app, hmac_keys=conf.profiler.hmac_keys, enabled=True)
