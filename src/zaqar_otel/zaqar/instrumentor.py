"""The OpenTelemetry entry point: ``opentelemetry-instrument zaqar-server ...``.

Usage::

    pip install 'zaqar-otel[all]' opentelemetry-distro
    export OTEL_SERVICE_NAME=zaqar OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318
    opentelemetry-instrument zaqar-server --config-file zaqar.conf   # connection_string = otel://

or by hand, before Zaqar builds its transport::

    from zaqar_otel.zaqar.instrumentor import ZaqarInstrumentor
    ZaqarInstrumentor().instrument()

``instrument()`` registers ``otel://`` with OSProfiler and applies the Zaqar
fixes and hooks of ``zaqar_otel.zaqar``. Spans then go through the provider
``opentelemetry-instrument`` set up (``OTEL_*``); the ``[profiler]`` flags decide
which database backends are traced, even if the distro instrumented them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)


class ZaqarInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces Zaqar's OSProfiler events as OpenTelemetry spans."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("zaqar >= 20",)  # the oldest release of the matrix (noxfile.py COMPAT_ROWS)

    def _instrument(self, **kwargs: Any) -> None:
        from zaqar_otel import zaqar

        zaqar.install()

    def _uninstrument(self, **kwargs: Any) -> None:
        # The Zaqar fixes stay: they only repair Zaqar and are harmless.
        from zaqar_otel.bridge import backends

        backends.reset()
