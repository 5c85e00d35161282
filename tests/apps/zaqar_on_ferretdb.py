"""zaqar-otel-server for FerretDB v1, which has no TTL indexes.

Zaqar's MongoDB driver creates TTL indexes at startup; FerretDB v1 answers
"Index option expireAfterSeconds is not implemented yet" and Zaqar refuses to
start; its findAndModify has no projection ("fields") either. This test-only
launcher drops those two options (expired messages are still filtered by
Zaqar's queries; a whole document instead of a projection reads the same),
then runs ``zaqar-otel-server`` (``zaqar-server`` if that is the first
argument) as ``tests.apps.zaqar_status`` does (status on SIGUSR1).
"""

from __future__ import annotations

import functools
from typing import Any

from pymongo.collection import Collection


def _without_ttl(original: Any) -> Any:
    @functools.wraps(original)
    def create_index(self: Collection[Any], keys: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("expireAfterSeconds", None)
        return original(self, keys, *args, **kwargs)

    return create_index


def _without_projection(original: Any) -> Any:
    @functools.wraps(original)
    def find_one_and_update(self: Collection[Any], *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("projection", None)  # FerretDB v1: findAndModify "fields" not implemented
        return original(self, *args, **kwargs)

    return find_one_and_update


Collection.create_index = _without_ttl(Collection.create_index)  # type: ignore[method-assign]
Collection.find_one_and_update = _without_projection(  # type: ignore[method-assign]
    Collection.find_one_and_update
)

if __name__ == "__main__":
    from tests.apps import zaqar_status

    zaqar_status.run()
