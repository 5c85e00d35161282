"""A Falcon middleware that names the request span of a profiled request.

It gives the span its route (``POST /v2/queues/{queue_name}/messages``), the status
code and the messaging attributes (``messaging.system = zaqar``,
``messaging.destination.name``, ``messaging.operation.name`` and ``.type``,
``messaging.batch.message_count``, ``zaqar.project_id``), the ids of the messages
posted or returned, their ages and links to their producers
(``zaqar_otel.zaqar.consumer``). ``add_to_transport`` is the hook that adds it to
Zaqar's WSGI app.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes.messaging_attributes import (
    MESSAGING_BATCH_MESSAGE_COUNT,
    MESSAGING_DESTINATION_NAME,
    MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_SYSTEM,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.trace import Status, StatusCode

from zaqar_otel.bridge import options
from zaqar_otel.bridge.attributes import ZAQAR_PROJECT_ID
from zaqar_otel.bridge.gate import in_profiled_request
from zaqar_otel.bridge.logs import LOG
from zaqar_otel.zaqar import consumer

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


def receives_messages(method: str, route: str, operation: tuple[str, str] | None) -> bool:
    """Whether a response of this operation may list messages (receive, or pop)."""
    if operation is None or operation[0] == "stats":
        return False
    return operation[1] == "receive" or (method == "DELETE" and route.endswith("/messages"))


def _body(resp: Any) -> Any:
    text = getattr(resp, "text", None)
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _message_count(body: Any) -> int | None:
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
                span.set_attribute(HTTP_ROUTE, route)
            queue = params.get("queue_name")
            project = req.get_header("X-Project-ID")
            if project:
                span.set_attribute(ZAQAR_PROJECT_ID, project)
            if queue:
                span.set_attribute(MESSAGING_SYSTEM, "zaqar")
                span.set_attribute(MESSAGING_DESTINATION_NAME, queue)
                operation = operation_for(req.method, route or "")
                if operation:
                    span.set_attribute(MESSAGING_OPERATION_NAME, operation[0])
                    span.set_attribute(MESSAGING_OPERATION_TYPE, operation[1])
                if isinstance(params.get("message_id"), str):
                    span.set_attribute(MESSAGING_MESSAGE_ID, params["message_id"])
                if receives_messages(req.method, route or "", operation) and options.flag(
                    "link_messages", True
                ):
                    consumer.start_receiving()
        except Exception:
            LOG.debug("zaqar-otel: could not annotate the request span", exc_info=True)

    def process_response(self, req: Any, resp: Any, resource: Any, req_succeeded: bool) -> None:
        if not in_profiled_request():
            return
        contexts = consumer.stop_receiving()
        try:
            span = trace.get_current_span()
            if not span.is_recording():
                return
            status = int(str(resp.status).split()[0])
            span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
            if status >= 500:
                # HTTP semantic conventions, server side: 5xx is an error, 4xx is
                # the client's (a 404 for a missing queue is a correct answer)
                span.set_attribute(ERROR_TYPE, str(status))
                span.set_status(Status(StatusCode.ERROR, str(resp.status)))
            route = req.uri_template or ""
            operation = operation_for(req.method, route)
            if (
                operation is None
                or not 200 <= status < 300
                or MESSAGING_OPERATION_NAME not in (getattr(span, "attributes", None) or {})
            ):
                return
            body = _body(resp) if req.method in ("POST", "GET", "DELETE") else None
            count = _message_count(body) if req.method in ("POST", "GET") else None
            if count is not None:
                span.set_attribute(MESSAGING_BATCH_MESSAGE_COUNT, count)
            if operation[0] == "post":
                consumer.record_posted(span, consumer.posted_ids(body))
            elif receives_messages(req.method, route, operation):
                consumer.record_received(span, consumer.messages_in(body), contexts)
        except Exception:
            LOG.debug("zaqar-otel: could not annotate the response", exc_info=True)


def add_to_transport(original: Any) -> Any:
    @functools.wraps(original)
    def _init_middleware(self: Any) -> Any:
        try:
            self.app.add_middleware(TraceAttributesMiddleware())
        except Exception:
            LOG.warning("zaqar-otel: could not add the trace middleware", exc_info=True)
        return original(self)

    _init_middleware.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return _init_middleware
