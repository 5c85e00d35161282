"""Shared fixtures: real servers on 127.0.0.1 (see tests/servers.py).

Session-scoped: ``redis_server``, ``postgres_server``, ``ferretdb_server``, ``jaeger_server``,
``keystone_server`` (each started on first use). Function-scoped: ``otlp_receiver`` (a fresh
one per test).

A missing server binary skips the test, except when ``$CI`` is set: then it fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from tests.keystone_server import KeystoneServer
from tests.servers import (
    BinaryNotFoundError,
    FerretDBServer,
    JaegerServer,
    OTLPReceiver,
    PostgresServer,
    ProcessServer,
    RedisServer,
)

S = TypeVar("S", bound=ProcessServer)


def in_ci() -> bool:
    """True when ``$CI`` is set (to anything but '', 0, false, no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _serve(factory: Callable[[], S]) -> Iterator[S]:
    """Create, start, yield and close a server; skip (fail under $CI) if it is not installed."""
    missing = ""
    try:
        server = factory()
    except BinaryNotFoundError as err:
        missing = str(err)
    if missing:  # outside the except block: no exception chain in the report
        if in_ci():
            pytest.fail(f"server binary missing under CI: {missing}", pytrace=False)
        pytest.skip(missing)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Redis on 127.0.0.1; ``.url`` is ``redis://127.0.0.1:N/0``."""
    yield from _serve(RedisServer)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """PostgreSQL with database ``zaqar``; ``.url`` (SQLAlchemy), ``.create_database(name)``."""
    yield from _serve(PostgresServer)


@pytest.fixture(scope="session")
def ferretdb_server() -> Iterator[FerretDBServer]:
    """FerretDB (MongoDB wire protocol, SQLite backend); ``.url`` is ``mongodb://...``."""
    yield from _serve(FerretDBServer)


@pytest.fixture(scope="session")
def jaeger_server() -> Iterator[JaegerServer]:
    """Jaeger v2, memory storage, shared by the session (use unique trace ids).

    A test that calls ``stop()`` must ``start()`` it again before it ends (the restarted
    instance keeps its ports but starts with an empty store).
    """
    yield from _serve(JaegerServer)


@pytest.fixture(scope="session")
def keystone_server(jaeger_server: JaegerServer) -> Iterator[KeystoneServer]:
    """Keystone (SQLite, uWSGI) traced by the bridge into the session's Jaeger: its
    ``[profiler]`` has ``connection_string = otel://``, ``trace_sqlalchemy = true`` and the
    e2e HMAC key. Users: ``SERVICE_USER`` (for keystonemiddleware), ``CLIENT_USER``."""
    from tests.zaqar_server import HMAC_KEY

    profiler = {
        "enabled": "true",
        "hmac_keys": HMAC_KEY,
        "connection_string": "otel://",
        "trace_sqlalchemy": "true",
    }
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger_server.otlp_http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    yield from _serve(lambda: KeystoneServer(profiler=profiler, env=env))


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    """A fresh in-process OTLP/HTTP receiver; ``.endpoint``, ``.traces_url``, ``.spans()``."""
    with OTLPReceiver() as receiver:
        yield receiver
