"""Which exceptions of Zaqar's storage layer are answers, not failures.

Zaqar's storage controllers answer "no such queue / message / claim" by raising
(``QueueDoesNotExist``, ``MessageDoesNotExist``, ``ClaimDoesNotExist``...); the
transport turns those into 4xx responses. OSProfiler reports any exception that
leaves a traced method, so the controller's span would be red for a healthy
``404``. ``is_answer(etype)`` tells the bridge which ones are answers: the span keeps
an ``exception`` event with the type and no error status. Everything else
(``ConnectionError``, ``MessageConflict`` = 503, any non-Zaqar exception) stays an
error.
"""

from __future__ import annotations

import functools
import sys

# zaqar.storage.errors classes (and their subclasses) that become 4xx responses, or
# that Zaqar raises and catches inside the storage layer (QueueIsEmpty)
ANSWERS = (
    "DoesNotExist",  # 404: queue, message, claim, pool, flavor, subscription, topic
    "NotPermitted",  # 403/400: message claimed / not claimed by this claim
    "ClaimDoesNotMatch",  # 400
    "QueueIsEmpty",  # caught by the callers of first()/last()
    "TopicIsEmpty",
    "PoolAlreadyExists",  # 409
    "SubscriptionAlreadyExists",  # 409
    "PoolCapabilitiesMismatch",  # 400
    "PoolRedisNotSupportGroup",  # 400
)
ERRORS_MODULE = "zaqar.storage.errors"


@functools.lru_cache(maxsize=256)
def is_answer(etype: str) -> bool:
    """``etype`` is OSProfiler's ``module.Class`` name of the exception."""
    module_name, _, class_name = etype.rpartition(".")
    if not module_name.startswith("zaqar."):
        return False
    errors = sys.modules.get(ERRORS_MODULE)
    module = sys.modules.get(module_name)
    cls = getattr(module, class_name, None)
    if errors is None or not isinstance(cls, type):
        return False
    bases = tuple(b for b in (getattr(errors, name, None) for name in ANSWERS) if b is not None)
    return issubclass(cls, bases)
