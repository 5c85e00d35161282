"""The bridge's options in the ``[profiler]`` group.

OSProfiler owns ``enabled``, ``hmac_keys``, ``connection_string`` and
``trace_sqlalchemy``; Zaqar owns ``trace_wsgi_transport``, ``trace_message_store``
and ``trace_management_store``. The bridge adds one flag per database backend,
one for Zaqar's pooling catalog, two that let values out (``trace_db_statements``,
``trace_message_content``) and three for what a traced request sends on
(notifications, outgoing HTTP requests, the producer context stored with each
message). ``register_opts`` registers OSProfiler's options too, so that one call
prepares any ``ConfigOpts`` for the bridge; ``flag(name)`` reads a flag of the
configuration the ``otel://`` driver was initialised with.
"""

from __future__ import annotations

from oslo_config import cfg
from osprofiler import opts as osprofiler_opts

from zaqar_otel.bridge.logs import LOG

GROUP = "profiler"

BRIDGE_OPTS: list[cfg.Opt] = [
    cfg.BoolOpt(
        "trace_mongodb",
        default=False,
        mutable=True,
        help="Record a span for every MongoDB command sent inside a profiled request "
        "(OpenTelemetry pymongo instrumentation).",
    ),
    cfg.BoolOpt(
        "trace_redis",
        default=False,
        mutable=True,
        help="Record a span for every Redis command sent inside a profiled request "
        "(OpenTelemetry redis instrumentation).",
    ),
    cfg.BoolOpt(
        "trace_pooling",
        default=False,
        mutable=True,
        help="Record spans for Zaqar's pooling catalog (pool lookups and the "
        "pooling controllers) when pooling is configured.",
    ),
    cfg.BoolOpt(
        "trace_db_statements",
        default=False,
        mutable=True,
        help="Record full database statements with their literal values. Off by "
        "default: statements are sanitised (literals replaced by '?', Redis "
        "arguments hidden). Turning it on may export message bodies and secrets.",
    ),
    cfg.BoolOpt(
        "trace_message_content",
        default=False,
        mutable=True,
        help="Record what Zaqar's storage functions were called with and returned "
        "(message bodies, project and client ids), claim ids in URLs and the full "
        "text of exceptions. Off by default: a span names the function, queue, "
        "message count and message ids, never a body, argument or claim id. Read at "
        "the start of each request. For debugging only: turning it on exports "
        "message content.",
    ),
    cfg.BoolOpt(
        "trace_notifications",
        default=True,
        mutable=True,
        help="Record a CLIENT span for every webhook or email notification sent for "
        "messages posted in a profiled request, in that request's trace. Webhooks carry "
        "the W3C traceparent header (never OSProfiler's X-Trace-* headers), so an "
        "OpenTelemetry-instrumented subscriber continues the trace. Subscriber URLs are "
        "recorded without credentials, query values or token-like path segments, email "
        "addresses without their local part.",
    ),
    cfg.BoolOpt(
        "trace_outgoing_requests",
        default=True,
        mutable=True,
        help="Record a CLIENT span for every HTTP request Zaqar makes with python-requests "
        "inside a profiled request, and send the W3C traceparent header with it. The URL "
        "is recorded without credentials, query values or token-like path segments.",
    ),
    cfg.BoolOpt(
        "link_messages",
        default=True,
        mutable=True,
        help="For each message posted in a profiled request, record a PRODUCER span "
        "'create <queue>' and store its span context with the message (24 bytes in a "
        "Redis hash field or MongoDB document field 'otel'); profiled claims, lists and "
        "gets then link to the producing trace of every message they return. Messages "
        "posted outside profiled requests store nothing extra.",
    ),
]


def _osprofiler_opts() -> list[cfg.Opt]:
    return list(osprofiler_opts._PROFILER_OPTS)


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register OSProfiler's and the bridge's options in ``[profiler]`` of ``conf``.

    Safe to call many times and on any ``ConfigOpts`` (a fresh one or ``cfg.CONF``).
    ``trace_sqlalchemy`` is OSProfiler's own option; the bridge gives it a meaning
    for OpenTelemetry (SQLAlchemy spans) instead of OSProfiler "db" events.
    """
    group = cfg.OptGroup(GROUP, title="OSProfiler and zaqar-otel options")
    conf.register_group(group)
    for opt in _osprofiler_opts() + BRIDGE_OPTS:
        try:
            conf.register_opt(opt, group=GROUP)
        except cfg.DuplicateOptError:
            # Same name registered by someone else with other attributes
            # (e.g. Zaqar or another release of OSProfiler): theirs stays.
            continue


_active: cfg.ConfigOpts | None = None


def activate(conf: cfg.ConfigOpts | None) -> None:
    """Make ``conf`` the configuration ``flag()`` reads (the ``otel://`` driver's)."""
    global _active
    _active = conf


def flag(name: str, default: bool = False) -> bool:
    """The ``[profiler]`` flag ``name`` of the active configuration, read now (flags are
    mutable); ``default`` before ``activate()`` or if the option is unknown."""
    conf = _active
    if conf is None:
        return default
    try:
        return bool(getattr(conf.profiler, name))
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError, AttributeError):
        return default
    except Exception:  # a broken config file re-read at run time: keep serving
        LOG.debug("zaqar-otel: cannot read [profiler] %s", name, exc_info=True)
        return default


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Entry point for oslo-config-generator (namespace ``zaqar_otel``)."""
    return [(GROUP, _osprofiler_opts() + BRIDGE_OPTS)]
