"""Tracing of Zaqar's websocket transport, which OSProfiler never did.

A websocket request whose ``headers`` carry a valid ``X-Trace-Info`` / ``X-Trace-HMAC``
pair becomes a SERVER span ``websocket <action>`` with the storage and DB spans under
it, exactly as over HTTP, with the ids, ages and producer links of the messages
posted or returned (``zaqar_otel.zaqar.consumer``). ``traced_handler`` wraps
``zaqar.api.handler.Handler.process_request``.
"""

from __future__ import annotations

import functools
from typing import Any

from opentelemetry import trace

from zaqar_otel.bridge import options
from zaqar_otel.bridge.logs import LOG
from zaqar_otel.zaqar import consumer

_RECEIVING = frozenset(
    {
        "message_list",
        "message_get",
        "message_get_many",
        "message_delete_many",  # pop returns the messages
        "claim_create",
        "claim_get",
    }
)


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


def _annotate(action: str, resp: Any, contexts: dict[str, bytes]) -> None:
    try:
        span = trace.get_current_span()
        body = getattr(resp, "_body", None)
        if not span.is_recording() or not isinstance(body, dict):
            return
        if action == "message_post":
            consumer.record_posted(span, consumer.posted_ids(body))
        elif action in _RECEIVING:
            consumer.record_received(span, consumer.messages_in(body), contexts)
    except Exception:
        LOG.debug("zaqar-otel: could not annotate the websocket response", exc_info=True)


def traced_handler(original: Any) -> Any:
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
        action = str(getattr(req, "_action", "") or "")
        try:
            profiler.start("websocket", info=_websocket_info(req))
            if action in _RECEIVING and options.flag("link_messages", True):
                consumer.start_receiving()
            resp = original(self, req, protocol)
            status = getattr(resp, "_headers", {}).get("status")
            stop_info = {"websocket": {"status": status}} if isinstance(status, int) else None
            _annotate(action, resp, consumer.stop_receiving())
            return resp
        except Exception as exc:
            stop_info = {"etype": type(exc).__name__, "message": str(exc)}
            raise
        finally:
            consumer.stop_receiving()
            profiler.stop(info=stop_info)
            profiler.clean()

    process_request.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return process_request
