"""``install()``: apply the fixes and hooks to Zaqar (idempotent), before Zaqar's
``Bootstrap`` builds its transport."""

from __future__ import annotations

import threading
from typing import Any

from zaqar_otel.bridge import conventions
from zaqar_otel.zaqar import (
    fixes,
    lazy,
    middleware,
    notifications,
    releases,
    request_span,
    stores,
    websocket,
)

_installed = False
_install_lock = threading.Lock()


def _patch(owner: Any, name: str, wrapper: Any) -> None:
    current = getattr(owner, name)
    if not getattr(current, "__zaqar_otel__", False):
        setattr(owner, name, wrapper(current))


def _init_middleware_hooks(original: Any) -> Any:
    """``Driver._init_middleware``: the Falcon middleware added, the tracer outermost."""
    return request_span.outermost_tracer(middleware.add_to_transport(original))


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

        _patch(storage_utils, "load_storage_driver", fixes.fixed_loader)
        if releases.sets_up_profiler_by_hand(profile):  # Zaqar 20 and 21
            _patch(profile, "setup", lambda _: fixes.authoritative_setup(releases.osprofiler_setup))
        else:
            _patch(profile, "setup", fixes.authoritative_setup)
        # every release: releases.wsgi_tracer, installed outermost by _init_middleware_hooks
        _patch(
            profile,
            "install_wsgi_tracer",
            lambda _: request_span.deferred_tracer(releases.wsgi_tracer),
        )
        _patch(wsgi_driver.Driver, "_init_middleware", _init_middleware_hooks)
        _patch(handler.Handler, "process_request", websocket.traced_handler)
        lazy.install()
        stores.install()
        notifications.install()
        conventions.SCRIPT_NAMES.update(redis_script_names())
        _installed = True


def redis_script_names() -> dict[str, str]:
    """sha1 -> name of Zaqar's Redis Lua scripts (``EVALSHA claim_messages`` in a trace)."""
    import hashlib
    from pathlib import Path

    try:
        from zaqar.storage.redis import scripting
    except ImportError:  # Zaqar without its Redis driver's dependencies
        return {}
    folder = Path(scripting.__file__).parent / "scripts"
    return {
        hashlib.sha1(path.read_bytes(), usedforsecurity=False).hexdigest(): path.stem
        for path in sorted(folder.glob("*.lua"))
    }
