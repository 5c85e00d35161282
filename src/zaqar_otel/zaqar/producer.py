"""The producer side of a message: where it came from, kept with the message.

For each message posted in a profiled request, a PRODUCER span ``create <queue>``
(``messaging.operation.type = create``, ``messaging.message.id``) is started as a
child of the store's post, and its span context is stored with the message by
the store hooks (``zaqar_otel.zaqar.stores``); a profiled claim, list or get later
links to it (``zaqar_otel.zaqar.consumer``). This is the messaging conventions'
"creation context", one per message, so a batch post gives each message its own.

``traced_post`` wraps a store's ``MessageController.post``: while it runs in a
profiled request (and ``[profiler] link_messages`` is on), ``pending()`` is the
``PostedBatch`` the store hooks ask for a context per message id. Anywhere else
``pending()`` is None and the stores write exactly what Zaqar writes.

Stored form (``FIELD``): 24 bytes, the trace id (16 bytes) then the span id (8),
big-endian. Only sampled contexts are stored, so there is no flags byte.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from zaqar_otel.bridge import options, provider
from zaqar_otel.bridge.gate import in_profiled_request
from zaqar_otel.bridge.logs import LOG

FIELD = "otel"
CONTEXT_BYTES = 24
SYSTEM = "zaqar"
TRACER = "zaqar_otel.messaging"
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
F = TypeVar("F", bound=Callable[..., Any])


def pack(context: SpanContext) -> bytes | None:
    """The stored form of a sampled, valid span context; None for anything else."""
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return context.trace_id.to_bytes(16, "big") + context.span_id.to_bytes(8, "big")


def unpack(raw: object) -> SpanContext | None:
    """The span context of a stored value (bytes-like, 24 bytes); None if it is not one."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        return None
    data = bytes(raw)
    if len(data) != CONTEXT_BYTES:
        return None
    context = SpanContext(
        int.from_bytes(data[:16], "big"),
        int.from_bytes(data[16:], "big"),
        is_remote=True,
        trace_flags=_SAMPLED,
    )
    return context if context.is_valid else None


class PostedBatch:
    """The messages of one post in a profiled request: a PRODUCER span per message."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.spans: dict[str, trace.Span] = {}
        self.stored: dict[str, bytes] = {}

    def context_for(self, message_id: str) -> bytes | None:
        """The stored form of message ``message_id``'s creation context (one span per id)."""
        found = self.stored.get(message_id)
        if found is not None or message_id in self.spans:
            return found
        attributes = {
            messaging.MESSAGING_SYSTEM: SYSTEM,
            messaging.MESSAGING_OPERATION_NAME: "create",
            messaging.MESSAGING_OPERATION_TYPE: "create",
            messaging.MESSAGING_DESTINATION_NAME: self.queue,
            messaging.MESSAGING_MESSAGE_ID: message_id,
        }
        span = provider.tracer(TRACER).start_span(
            f"create {self.queue}", kind=SpanKind.PRODUCER, attributes=attributes
        )
        self.spans[message_id] = span
        raw = pack(span.get_span_context())
        if raw is not None:
            self.stored[message_id] = raw
        return raw

    def close(self, error: BaseException | None) -> None:
        """End the spans; an error of the post is theirs too (the messages were not stored)."""
        for span in self.spans.values():
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()


_PENDING: contextvars.ContextVar[PostedBatch | None] = contextvars.ContextVar(
    "zaqar_otel_posted_batch", default=None
)


def pending() -> PostedBatch | None:
    """The batch of the post running in this context, if it is profiled and linked."""
    return _PENDING.get()


def _queue_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    queue = args[0] if args else kwargs.get("queue", kwargs.get("queue_name"))
    return queue if isinstance(queue, str) else None


def traced_post(original: F) -> F:
    """A store's ``MessageController.post(queue, messages, client_uuid, project=None)``
    that makes each message's creation context pending while it runs (profiled only)."""

    @functools.wraps(original)
    def post(self: Any, *args: Any, **kwargs: Any) -> Any:
        queue = _queue_of(args, kwargs)
        if (
            queue is None
            or _PENDING.get() is not None
            or not in_profiled_request()
            or not options.flag("link_messages", True)
        ):
            return original(self, *args, **kwargs)
        batch = PostedBatch(queue)
        token = _PENDING.set(batch)
        error: BaseException | None = None
        try:
            return original(self, *args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _PENDING.reset(token)
            try:
                batch.close(error)
            except Exception:
                LOG.debug("zaqar-otel: could not end the create spans", exc_info=True)

    post.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return post  # type: ignore[return-value]
