"""Message ids, ages and producer links on the spans of profiled posts, claims, lists, gets.

A transport (the Falcon middleware, the websocket handler) calls:

* ``record_posted(span, ids)`` after a post: ``messaging.message.id`` for one
  message, ``messaging.zaqar.batch.message_ids`` for several (the messaging
  conventions put per-message attributes of a batch on links or on system
  specific ``messaging.{system}.batch.*`` attributes; each message also has its
  own ``create`` span, see ``zaqar_otel.zaqar.producer``);
* ``start_receiving()`` before a receive operation and ``record_received(span,
  messages, stop_receiving())`` after it: the ids and ages (seconds since the
  message was created, as Zaqar reports them) of the messages returned, and a
  link to the creation context the store hooks read back for each of them
  (link attributes ``messaging.message.id`` and ``messaging.zaqar.message.age``).

``posted_ids`` and ``messages_in`` read the ids and ages out of a response body
(the WSGI JSON or the websocket dict); no message body is ever recorded.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging

from zaqar_otel.bridge.gate import in_profiled_request
from zaqar_otel.zaqar import producer

AGE = "messaging.zaqar.message.age"
BATCH_IDS = "messaging.zaqar.batch.message_ids"
BATCH_AGES = "messaging.zaqar.batch.message_ages"

_SINK: contextvars.ContextVar[dict[str, bytes] | None] = contextvars.ContextVar(
    "zaqar_otel_receiving", default=None
)


def start_receiving() -> None:
    """From now on (this request), creation contexts read by the stores are kept."""
    _SINK.set({})


def stop_receiving() -> dict[str, bytes]:
    """The creation contexts read since ``start_receiving`` ({message id: stored value})."""
    sink = _SINK.get()
    if sink is not None:
        _SINK.set(None)
    return sink or {}


def receiving_sink() -> dict[str, bytes] | None:
    """Where the store hooks put what they read, in a profiled receive; else None."""
    sink = _SINK.get()
    if sink is None or not in_profiled_request():
        return None
    return sink


# -- response bodies


def _message_id(href: object) -> str | None:
    if not isinstance(href, str) or not href:
        return None
    return href.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or None


def posted_ids(body: object) -> list[str]:
    """The ids of a post's response: WSGI ``resources`` (hrefs) or websocket ``message_ids``."""
    if not isinstance(body, Mapping):
        return []
    hrefs = body.get("resources")
    if isinstance(hrefs, list):
        return [i for i in (_message_id(href) for href in hrefs) if i]
    ids = body.get("message_ids")
    if isinstance(ids, list):
        return [str(i) for i in ids if isinstance(i, str | int)]
    return []


def _one(item: object) -> tuple[str, int | None] | None:
    if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
        return None
    age = item.get("age")
    return item["id"], age if isinstance(age, int) and not isinstance(age, bool) else None


def messages_in(body: object) -> list[tuple[str, int | None]]:
    """(id, age) of each message a response returns (list, claim, get, pop)."""
    if not isinstance(body, Mapping):
        return []
    items = body.get("messages")
    if isinstance(items, Mapping):  # websocket message_get: one message
        items = [items]
    if not isinstance(items, list):
        items = [body] if "id" in body and "body" in body else []
    return [found for found in (_one(item) for item in items) if found is not None]


# -- span annotations


def record_posted(span: trace.Span, ids: Sequence[str]) -> None:
    if len(ids) == 1:
        span.set_attribute(messaging.MESSAGING_MESSAGE_ID, ids[0])
    elif ids:
        span.set_attribute(BATCH_IDS, list(ids))


def record_received(
    span: trace.Span,
    messages: Sequence[tuple[str, int | None]],
    contexts: Mapping[str, bytes],
) -> int:
    """Ids, ages and producer links of the messages returned; the number of links."""
    if not messages:
        return 0
    ages = [age for _, age in messages if age is not None]
    if len(messages) == 1:
        message_id, age = messages[0]
        span.set_attribute(messaging.MESSAGING_MESSAGE_ID, message_id)
        if age is not None:
            span.set_attribute(AGE, age)
    else:
        span.set_attribute(BATCH_IDS, [message_id for message_id, _ in messages])
        if len(ages) == len(messages):
            span.set_attribute(BATCH_AGES, ages)
    links = 0
    for message_id, age in messages:
        creation = producer.unpack(contexts.get(message_id))
        if creation is None:
            continue
        attributes: dict[str, str | int] = {messaging.MESSAGING_MESSAGE_ID: message_id}
        if age is not None:
            attributes[AGE] = age
        span.add_link(creation, attributes)
        links += 1
    return links
