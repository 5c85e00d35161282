"""The creation context stored with each message, in Zaqar's Redis and MongoDB stores.

Writing (only while ``producer.pending()`` has a batch, i.e. in a profiled post):

* Redis: ``Message.to_redis`` queues ``HSET <message id> otel <24 bytes>`` in the
  same transactional pipeline as the message itself (same key, same TTL);
* MongoDB: the message collection handed to the post adds the field ``otel``
  (binary, 24 bytes) to each document given to ``insert_many``; the ``_id`` is
  chosen just before (as pymongo would) so that the span knows the message id.

Reading: ``Message.from_hmap`` (Redis) and ``_basic_message`` (MongoDB), through
which every claim, list and get passes, hand the stored value to the receive
sink of a profiled request (``consumer.receiving_sink()``). What Zaqar returns
to clients is built from named fields only, so the extra field never leaves.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from zaqar_otel.bridge.logs import LOG
from zaqar_otel.zaqar import consumer, producer

FIELD_BYTES = producer.FIELD.encode()


def _patched(original: Any) -> bool:
    return bool(getattr(original, "__zaqar_otel__", False))


def _context_for(message_id: Any) -> bytes | None:
    batch = producer.pending()
    if batch is None:
        return None
    try:
        return batch.context_for(str(message_id))
    except Exception:
        LOG.debug("zaqar-otel: no creation context for a message", exc_info=True)
        return None


# -- Redis


def redis_to_redis(original: Any) -> Any:
    @functools.wraps(original)
    def to_redis(self: Any, pipe: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, pipe, *args, **kwargs)
        raw = _context_for(self.id)
        if raw is not None:
            pipe.hset(self.id, producer.FIELD, raw)
        return result

    to_redis.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return to_redis


def redis_from_hmap(original: Any) -> Any:
    @functools.wraps(original)
    def from_hmap(hmap: Any) -> Any:
        message = original(hmap)
        sink = consumer.receiving_sink()
        if sink is not None:
            raw = hmap.get(FIELD_BYTES)
            if raw:
                sink[str(message.id)] = bytes(raw)
        return message

    from_hmap.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return from_hmap


def install_redis() -> bool:
    try:
        from zaqar.storage.redis import messages, models
    except ImportError:
        return False
    if not _patched(models.Message.to_redis):
        models.Message.to_redis = redis_to_redis(models.Message.to_redis)
    if not _patched(models.Message.from_hmap):
        models.Message.from_hmap = staticmethod(redis_from_hmap(models.Message.from_hmap))
    if not _patched(messages.MessageController.post):
        messages.MessageController.post = producer.traced_post(messages.MessageController.post)
    return True


# -- MongoDB


class StampingCollection:
    """A pymongo collection whose ``insert_many`` stores each document's creation context."""

    def __init__(self, inner: Any, batch: producer.PostedBatch) -> None:
        self.inner = inner
        self.batch = batch

    def insert_many(self, documents: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
        documents = list(documents)
        for document in documents:
            if isinstance(document, dict) and producer.FIELD not in document:
                self._stamp(document)
        return self.inner.insert_many(documents, *args, **kwargs)

    def _stamp(self, document: dict[str, Any]) -> None:
        try:
            from bson import objectid

            message_id = document.setdefault("_id", objectid.ObjectId())
            raw = self.batch.context_for(str(message_id))
        except Exception:
            LOG.debug("zaqar-otel: no creation context for a message", exc_info=True)
            return
        if raw is not None:
            document[producer.FIELD] = raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def mongo_collection(original: Any) -> Any:
    @functools.wraps(original)
    def _collection(self: Any, *args: Any, **kwargs: Any) -> Any:
        collection = original(self, *args, **kwargs)
        batch = producer.pending()
        return collection if batch is None else StampingCollection(collection, batch)

    _collection.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return _collection


def mongo_basic_message(original: Any) -> Any:
    @functools.wraps(original)
    def _basic_message(msg: Any, now: Any) -> Any:
        result = original(msg, now)
        sink = consumer.receiving_sink()
        if sink is not None:
            raw = msg.get(producer.FIELD)
            if raw:
                sink[str(result["id"])] = bytes(raw)
        return result

    _basic_message.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return _basic_message


def install_mongodb() -> bool:
    try:
        from zaqar.storage.mongodb import messages
    except ImportError:
        return False
    controllers = (messages.MessageController, messages.FIFOMessageController)
    for controller in controllers:
        if "post" in vars(controller) and not _patched(controller.post):
            controller.post = producer.traced_post(controller.post)
    if not _patched(messages.MessageController._collection):
        messages.MessageController._collection = mongo_collection(
            messages.MessageController._collection
        )
    if not _patched(messages._basic_message):
        messages._basic_message = mongo_basic_message(messages._basic_message)
    return True


def install() -> dict[str, bool]:
    """Apply the store hooks (idempotent): {store: hooked}."""
    return {"redis": install_redis(), "mongodb": install_mongodb()}
