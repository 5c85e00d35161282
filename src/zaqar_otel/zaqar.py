"""What Zaqar itself needs: a startup fix, routes, status and messaging attributes.

``install()`` (idempotent, before Zaqar's ``Bootstrap`` builds its transport):

* fixes ``zaqar.storage.utils.load_storage_driver``, which returns None (and
  Zaqar crashes at startup) when ``[profiler] enabled = true`` but
  ``trace_message_store`` / ``trace_management_store`` is false: in exactly
  that case the driver is loaded untraced, as the flag asks;
* makes ``[profiler] enabled = false`` authoritative: Zaqar's profiler setup
  enables OSProfiler's WSGI middleware for any signed request whatever
  ``enabled`` says; the middleware is switched off again;
* adds a Falcon middleware to Zaqar's WSGI app that gives the request span of a
  profiled request its route (``POST /v2/queues/{queue_name}/messages``),
  status code and messaging attributes (``messaging.system = zaqar``,
  ``messaging.destination.name``, ``messaging.operation.name``,
  ``messaging.batch.message_count``, ``zaqar.project_id``);
* traces Zaqar's websocket transport, which OSProfiler never did: a websocket
  request whose ``headers`` carry a valid ``X-Trace-Info`` / ``X-Trace-HMAC``
  pair becomes a SERVER span ``websocket <action>`` with the storage and DB
  spans under it, exactly as over HTTP.
"""

from __future__ import annotations

import functools
import json
import signal
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from zaqar_otel.provider import in_profiled_request
from zaqar_otel.quiet import LOG

# (method, route suffix) -> (messaging.operation.name, messaging.operation.type)
_OPERATIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("POST", "/messages"): ("post", "send"),
    ("GET", "/messages"): ("list", "receive"),
    ("DELETE", "/messages"): ("delete", "settle"),
    ("GET", "/messages/{message_id}"): ("get", "receive"),
    ("DELETE", "/messages/{message_id}"): ("delete", "settle"),
    ("POST", "/claims"): ("claim", "receive"),
    ("GET", "/claims/{claim_id}"): ("get_claim", "receive"),
    ("PATCH", "/claims/{claim_id}"): ("update_claim", "receive"),
    ("DELETE", "/claims/{claim_id}"): ("release_claim", "settle"),
    ("PUT", "/queues/{queue_name}"): ("create_queue", "create"),
    ("DELETE", "/queues/{queue_name}"): ("delete_queue", "settle"),
    ("GET", "/queues/{queue_name}/stats"): ("stats", "receive"),
}
# response keys that list messages
_MESSAGE_LISTS = ("resources", "messages")


def operation_for(method: str, route: str) -> tuple[str, str] | None:
    for (verb, suffix), operation in _OPERATIONS.items():
        if verb == method and route.endswith(suffix):
            return operation
    return None


def _message_count(resp: Any) -> int | None:
    text = getattr(resp, "text", None)
    if not text:
        return None
    try:
        body = json.loads(text)
    except (TypeError, ValueError):
        return None
    if isinstance(body, list):
        return len(body)
    if isinstance(body, dict):
        for key in _MESSAGE_LISTS:
            if isinstance(body.get(key), list):
                return len(body[key])
    return None


class TraceAttributesMiddleware:
    """Falcon middleware: route, status, messaging attributes on the request span."""

    def process_resource(self, req: Any, resp: Any, resource: Any, params: dict[str, Any]) -> None:
        if not in_profiled_request():
            return
        try:
            span = trace.get_current_span()
            if not span.is_recording():
                return
            route = req.uri_template
            if route:
                span.update_name(f"{req.method} {route}")
                span.set_attribute("http.route", route)
            queue = params.get("queue_name")
            project = req.get_header("X-Project-ID")
            if project:
                span.set_attribute("zaqar.project_id", project)
            if queue:
                span.set_attribute("messaging.system", "zaqar")
                span.set_attribute("messaging.destination.name", queue)
                operation = operation_for(req.method, route or "")
                if operation:
                    span.set_attribute("messaging.operation.name", operation[0])
                    span.set_attribute("messaging.operation.type", operation[1])
        except Exception:
            LOG.debug("zaqar-otel: could not annotate the request span", exc_info=True)

    def process_response(self, req: Any, resp: Any, resource: Any, req_succeeded: bool) -> None:
        if not in_profiled_request():
            return
        try:
            span = trace.get_current_span()
            if not span.is_recording():
                return
            status = int(str(resp.status).split()[0])
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, str(resp.status)))
            if req.method in ("POST", "GET") and 200 <= status < 300:
                count = _message_count(resp)
                if count is not None and "messaging.operation.name" in getattr(
                    span, "attributes", {}
                ):
                    span.set_attribute("messaging.batch.message_count", count)
        except Exception:
            LOG.debug("zaqar-otel: could not annotate the response", exc_info=True)


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, dict):
        return None
    lowered = name.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == lowered and isinstance(value, str):
            return value
    return None


def websocket_trace_info(headers: Any) -> dict[str, Any] | None:
    """The verified OSProfiler trace info of a websocket request's headers, or None.

    Same rules as OSProfiler's WSGI middleware: profiling enabled, an HMAC by one
    of ``[profiler] hmac_keys``, a payload with ``base_id`` (and ``parent_id``)
    only.
    """
    from osprofiler import _utils, web

    if not web._ENABLED or not web._HMAC_KEYS:
        return None
    info = _utils.signed_unpack(
        _header(headers, web.X_TRACE_INFO), _header(headers, web.X_TRACE_HMAC), web._HMAC_KEYS
    )
    if not isinstance(info, dict) or "base_id" not in info:
        return None
    if set(info) - {"base_id", "parent_id", "hmac_key"}:
        return None
    return info


def _websocket_info(req: Any) -> dict[str, Any]:
    body = getattr(req, "_body", None)
    body = body if isinstance(body, dict) else {}
    messages = body.get("messages")
    return {
        "websocket": {
            "action": str(getattr(req, "_action", "") or "message"),
            "queue_name": body.get("queue_name"),
            "project_id": _header(getattr(req, "_headers", None), "X-Project-ID"),
            "message_count": len(messages) if isinstance(messages, list) else None,
        }
    }


def _traced_websocket(original: Any) -> Any:
    """Zaqar's websocket API handler, with a per-request trace for signed requests."""

    @functools.wraps(original)
    def process_request(self: Any, req: Any, protocol: Any) -> Any:
        try:
            trace_info = websocket_trace_info(getattr(req, "_headers", None))
        except Exception:
            trace_info = None
        if trace_info is None:
            return original(self, req, protocol)
        from osprofiler import profiler

        profiler.init(
            hmac_key=trace_info["hmac_key"],
            base_id=trace_info.get("base_id"),
            parent_id=trace_info.get("parent_id"),
        )
        stop_info: dict[str, Any] | None = None
        try:
            profiler.start("websocket", info=_websocket_info(req))
            resp = original(self, req, protocol)
            status = getattr(resp, "_headers", {}).get("status")
            stop_info = {"websocket": {"status": status}} if isinstance(status, int) else None
            return resp
        except Exception as exc:
            stop_info = {"etype": type(exc).__name__, "message": str(exc)}
            raise
        finally:
            profiler.stop(info=stop_info)
            profiler.clean()

    process_request.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return process_request


def _fixed_loader(original: Any) -> Any:
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
        # Zaqar 23 returns None here; load the driver untraced instead.
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


def _authoritative_setup(original: Any) -> Any:
    @functools.wraps(original)
    def setup(conf: Any, binary: str, host: str) -> None:
        from zaqar_otel.options import register_opts

        register_opts(conf)
        original(conf, binary, host)
        if not conf.profiler.enabled:
            from osprofiler import web

            web.disable()
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


def _with_trace_middleware(original: Any) -> Any:
    @functools.wraps(original)
    def _init_middleware(self: Any) -> Any:
        try:
            self.app.add_middleware(TraceAttributesMiddleware())
        except Exception:
            LOG.warning("zaqar-otel: could not add the trace middleware", exc_info=True)
        return original(self)

    _init_middleware.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return _init_middleware


_installed = False
_install_lock = threading.Lock()


def _patch(owner: Any, name: str, wrapper: Any) -> None:
    current = getattr(owner, name)
    if not getattr(current, "__zaqar_otel__", False):
        setattr(owner, name, wrapper(current))


def install() -> None:
    """Apply the Zaqar fixes and hooks (idempotent). Needs Zaqar importable."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from zaqar.api import handler
        from zaqar.storage import utils as storage_utils
        from zaqar.transport.middleware import profile
        from zaqar.transport.wsgi import driver as wsgi_driver

        import zaqar_otel  # noqa: F401  (registers otel://)

        _patch(storage_utils, "load_storage_driver", _fixed_loader)
        _patch(profile, "setup", _authoritative_setup)
        _patch(wsgi_driver.Driver, "_init_middleware", _with_trace_middleware)
        _patch(handler.Handler, "process_request", _traced_websocket)
        _installed = True
