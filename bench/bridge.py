"""The bridge as a benchmark drives it: an ``otel://`` driver, OSProfiler spans through it.

Usage::

    from bench import bridge

    driver = bridge.driver(exporter=bridge.NullExporter())   # the real processor, no I/O
    bridge.activate(driver)                                   # OSProfiler notifies it
    bridge.profiled_span()                                    # one start + stop
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from oslo_config import cfg
from osprofiler import notifier, profiler

HMAC_KEY = "bench-secret"
SPAN_NAME = "redis_message_controller"
FUNCTION = "zaqar.storage.redis.messages.MessageController.post"
ARGS = "(<zaqar.storage.redis.messages.MessageController object at 0x7f0>, 'q-bench')"
KWARGS = "{'messages': [{'ttl': 300, 'body': {'n': 1}}], 'project': 'bench-project'}"
# what OSProfiler's WSGI middleware puts in the request span's info
REQUEST = {
    "request": {
        "path": "/v2/queues/q-bench/messages",
        "query": "",
        "method": "POST",
        "scheme": "http",
    }
}


class NullExporter(SpanExporter):
    """Accepts every batch at once and counts the spans."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def driver(
    connection_string: str = "otel://", exporter: SpanExporter | None = None, **flags: Any
) -> Any:
    """An ``OTelDriver`` with ``[profiler] enabled = true`` and the bridge's own provider.

    ``exporter`` replaces the one ``connection_string`` would build (the batch
    processor and the guard around it stay the bridge's). Backend flags default
    to false (no Redis or SQL here); ``flags`` overrides any ``[profiler]`` option.
    """
    from zaqar_otel import driver as driver_module
    from zaqar_otel.bridge import export, options

    conf = cfg.ConfigOpts()
    options.register_opts(conf)
    conf([], project="bench")
    values = {"enabled": True, "hmac_keys": HMAC_KEY, "connection_string": connection_string}
    values.update(flags)
    for name, value in values.items():
        conf.set_override(name, value, "profiler")
    if exporter is None:
        return driver_module.OTelDriver(connection_string, "zaqar", "bench", "bench", conf=conf)
    original = export.build_exporter
    export.build_exporter = lambda endpoint: exporter  # type: ignore[assignment]
    try:
        return driver_module.OTelDriver(connection_string, "zaqar", "bench", "bench", conf=conf)
    finally:
        export.build_exporter = original  # type: ignore[assignment]


def activate(notify: Any) -> None:
    """Make ``notify`` (a driver, or a callable) OSProfiler's notifier; start a trace."""
    notifier.set(getattr(notify, "notify", notify))
    profiler.clean()
    profiler.init(HMAC_KEY)


def open_request(notify: Any) -> None:
    """Make ``notify`` OSProfiler's notifier and start a trace whose request span stays open:
    the spans of ``profiled_span()`` then join it, as a request's storage calls do."""
    activate(notify)
    profiler.start("wsgi", dict(REQUEST))


def close_request() -> None:
    profiler.stop()


def profiled_span() -> None:
    """One OSProfiler span as Zaqar's traced storage controllers make it (start + stop)."""
    profiler.start(SPAN_NAME, {"function": {"name": FUNCTION, "args": ARGS, "kwargs": KWARGS}})
    profiler.stop()


def status(drv: Any) -> dict[str, int]:
    """The driver's counters: exported, dropped, ... (``{}`` if it has none)."""
    method = getattr(drv, "status", None)
    return dict(method()) if callable(method) else {}
