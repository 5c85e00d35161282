"""Log a failure once, not once per span.

Exporters and the batch processor log every failed export and every dropped
span. With a collector down that is a flood in Zaqar's log. ``OnceFilter``
lets the first record of each kind through, then counts the repeats and lets
one through again (with the count) at most every ``interval`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time

LOG = logging.getLogger("zaqar_otel")

# Loggers of the OTel SDK and exporters that log per batch or per span.
NOISY_LOGGERS = (
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)


class OnceFilter(logging.Filter):
    """Pass the first record of each message template, then one per ``interval``."""

    def __init__(self, interval: float = 300.0) -> None:
        super().__init__("zaqar_otel.once")
        self.interval = interval
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = time.monotonic()
        with self._lock:
            last, repeats = self._seen.get(key, (0.0, -1))
            if repeats >= 0 and now - last < self.interval:
                self._seen[key] = (last, repeats + 1)
                return False
            self._seen[key] = (now, 0)
        if repeats > 0:
            record.msg = f"{record.msg} (repeated {repeats} times since last logged)"
        return True


_INSTALLED: OnceFilter | None = None
_INSTALL_LOCK = threading.Lock()


def install(interval: float = 300.0) -> OnceFilter:
    """Attach one ``OnceFilter`` to every noisy OTel logger (idempotent)."""
    global _INSTALLED
    with _INSTALL_LOCK:
        if _INSTALLED is None:
            _INSTALLED = OnceFilter(interval)
            for name in NOISY_LOGGERS:
                logging.getLogger(name).addFilter(_INSTALLED)
        return _INSTALLED


class LogOnce:
    """``warning(key, msg, *args)`` logs each key once per process."""

    def __init__(self, logger: logging.Logger = LOG) -> None:
        self._logger = logger
        self._keys: set[str] = set()

    def warning(self, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        if key in self._keys:
            return
        self._keys.add(key)
        self._logger.warning(msg, *args, exc_info=exc_info)


log_once = LogOnce()
