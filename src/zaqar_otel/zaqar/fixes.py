"""Fixes to Zaqar itself, so that ``[profiler]`` means what it says.

* ``fixed_loader``: ``zaqar.storage.utils.load_storage_driver`` returns None (and Zaqar
  crashes at startup) when ``[profiler] enabled = true`` but ``trace_message_store`` /
  ``trace_management_store`` is false: in exactly that case the driver is loaded
  untraced, as the flag asks.
* ``authoritative_setup``: Zaqar's profiler setup enables OSProfiler's WSGI middleware
  for any signed request whatever ``enabled`` says; the middleware is switched off
  again when ``enabled = false``; the sampling options are applied
  (``sampled_requests.configure``); and SIGHUP re-reads the mutable flags.
"""

from __future__ import annotations

import functools
import signal
import threading
from typing import Any

from zaqar_otel.bridge.logs import LOG


def fixed_loader(original: Any) -> Any:
    @functools.wraps(original)
    def load_storage_driver(
        conf: Any,
        cache: Any,
        storage_type: str | None = None,
        control_mode: bool = False,
        control_driver: Any = None,
    ) -> Any:
        flag = "trace_management_store" if control_mode else "trace_message_store"
        if not (conf.profiler.enabled and not getattr(conf.profiler, flag)):
            return original(conf, cache, storage_type, control_mode, control_driver)
        # Zaqar 20 to 23 return None here; load the driver untraced instead.
        import stevedore
        from zaqar.common import errors

        mode = "control" if control_mode else "data"
        drivers = conf["drivers"]
        name = storage_type or (drivers.management_store if control_mode else drivers.message_store)
        args = (conf, cache) if control_driver is None else (conf, cache, control_driver)
        try:
            manager: Any = stevedore.DriverManager(
                namespace=f"zaqar.{mode}.storage",
                name=name,
                invoke_on_load=True,
                invoke_args=args,
            )
        except Exception as exc:
            LOG.exception('Failed to load "zaqar.%s.storage" driver for "%s"', mode, name)
            raise errors.InvalidDriver(exc) from exc
        return manager.driver

    load_storage_driver.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return load_storage_driver


def authoritative_setup(original: Any) -> Any:
    @functools.wraps(original)
    def setup(conf: Any, binary: str, host: str) -> None:
        from zaqar_otel.bridge.options import register_opts

        register_opts(conf)
        original(conf, binary, host)
        if not conf.profiler.enabled:
            from osprofiler import web

            web.disable()
        from zaqar_otel.zaqar import sampled_requests

        sampled_requests.configure(conf)  # trace_sample_ratio, trust_traceparent, ...
        reload_on_sighup(conf)

    setup.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return setup


def reload_on_sighup(conf: Any) -> bool:
    """SIGHUP re-reads the config files and applies the mutable ``[profiler]`` flags.

    Only where SIGHUP would otherwise kill the process (``zaqar-server``'s
    wsgiref loop): uWSGI and gunicorn keep their own SIGHUP (a graceful reload).
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL:
        return False

    def handler(signum: int, frame: Any) -> None:
        try:
            conf.mutate_config_files()
        except Exception:
            LOG.warning("zaqar-otel: reloading the configuration failed", exc_info=True)

    signal.signal(signal.SIGHUP, handler)
    return True
