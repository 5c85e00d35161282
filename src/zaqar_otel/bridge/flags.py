"""What the ``[profiler]`` flags say for one request, read once at its start.

A profiled request reads its flags when its outermost bridge span starts and keeps
them in its context (``FLAGS``): every span of the request, and every database span
the DB gate lets through, follows the same flags, and a request costs a handful of
oslo.config lookups (about 1.5 us each) instead of one or more per span. A flag
changed at run time (``mutate_config_files``, SIGHUP) applies from the next request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as context_api

FLAGS = context_api.create_key("zaqar_otel.flags")


@dataclass(frozen=True, slots=True)
class Flags:
    """One request's flags (the defaults: everything traced, nothing captured)."""

    enabled: bool = True  # [profiler] enabled: false exports nothing
    pooling: bool = True  # trace_pooling: Zaqar's pooling catalog/controllers
    osprofiler_sql: bool = True  # OSProfiler's own SQL events become spans
    statements: bool = False  # trace_db_statements: literal values in statements
    content: bool = False  # trace_message_content: arguments, results, claim ids

    def skips(self, name: str, info: Mapping[str, Any]) -> bool:
        """Whether the OSProfiler span ``name`` with ``info`` is left out."""
        if not self.enabled:
            return True
        if not self.pooling and name.startswith("pooling_"):
            return True
        return not self.osprofiler_sql and "db" in info


DEFAULT = Flags()


def request_flags(context: context_api.Context | None = None) -> Flags | None:
    """The flags of the profiled request of ``context`` (None outside bridge spans)."""
    value = context_api.get_value(FLAGS, context)
    return value if isinstance(value, Flags) else None
