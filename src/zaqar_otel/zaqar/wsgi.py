"""``zaqar_otel.zaqar.wsgi:application``: Zaqar's WSGI app with the bridge, for uWSGI or gunicorn.

A drop-in for ``zaqar.transport.wsgi.app:application``. The app is built on the
first request *in each worker*, after the fork, so the exporter thread, the
Redis and MongoDB clients and the span queue all live in the worker::

    uwsgi --http 127.0.0.1:8888 --module zaqar_otel.zaqar.wsgi:application \\
          --processes 4 --env ZAQAR_CONFIG_FILE=/etc/zaqar/zaqar.conf

``ZAQAR_CONFIG_FILE`` (comma-separated) names the config files; without it
Zaqar's default search path applies (``/etc/zaqar/zaqar.conf``, ...).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def build(config_files: list[str] | None = None) -> WSGIApp:
    """Zaqar's WSGI app, bootstrapped with the bridge installed."""
    from oslo_config import cfg
    from oslo_log import log
    from zaqar.common import consts

    from zaqar import bootstrap
    from zaqar_otel import zaqar
    from zaqar_otel.bridge import options

    zaqar.install()
    conf = cfg.CONF
    log.register_options(conf)
    options.register_opts(conf)
    files = config_files
    if files is None and os.environ.get("ZAQAR_CONFIG_FILE"):
        files = [f for f in os.environ["ZAQAR_CONFIG_FILE"].split(",") if f]
    conf(project="zaqar", prog="zaqar-queues", args=[], default_config_files=files)
    log.setup(conf, "zaqar")
    boot = bootstrap.Bootstrap(conf)
    conf.set_override("transport", consts.TRANSPORT_WSGI, "drivers")
    app: WSGIApp = boot.transport.app
    return app


class LazyApplication:
    """Builds the app on first call in this process (after a fork), then delegates."""

    def __init__(self, factory: Callable[[], WSGIApp] = build) -> None:
        self._factory = factory
        self._app: WSGIApp | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self._app is None or self._pid != os.getpid():
            with self._lock:
                if self._app is None or self._pid != os.getpid():
                    self._app = self._factory()
                    self._pid = os.getpid()
        return self._app(environ, start_response)


application = LazyApplication()
