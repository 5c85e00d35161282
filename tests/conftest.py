"""Shared fixtures: real servers on 127.0.0.1 (see tests/servers.py).

Session-scoped: ``redis_server``, ``postgres_server``, ``ferretdb_server``, ``jaeger_server``,
``keystone_server`` (each started on first use). Function-scoped: ``otlp_receiver`` (a fresh
one per test).

* A test that uses one of those servers is marked ``servers`` here; one that starts a server
  process any other way must carry the mark itself: unmarked, it fails (``nox -s unit``
  runs ``-m "not servers"``, and must not start any).
* When server tests are selected and the Go servers (Jaeger v2, FerretDB) are not built yet,
  ``.ci/build-go-tools`` builds them first, with progress lines (as ``nox -s demo`` does).
* A missing server binary skips the test, except when ``$CI`` is set: then it fails.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.keystone_server import KeystoneServer
from tests.receiver import ControlledReceiver
from tests.servers import FerretDBServer, JaegerServer, PostgresServer, RedisServer
from zaqar_otel.demo import build, process


def _hangup_ignored_here(signum: int, frame: object) -> None:
    """Under ``nohup`` this run survives a hangup; its servers must not ignore SIGHUP."""


if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
    # An ignored signal stays ignored across exec, a handled one is reset to its default:
    # the servers the tests reload with SIGHUP (Zaqar, Keystone) would never reload.
    signal.signal(signal.SIGHUP, _hangup_ignored_here)

S = TypeVar("S", bound=process.ServerProcess)
ROOT = Path(__file__).resolve().parent.parent
SERVER_FIXTURES = {
    "redis_server", "postgres_server", "ferretdb_server", "jaeger_server", "keystone_server",
}  # fmt: skip
GO_TOOLS = ("jaeger", "ferretdb")


def in_ci() -> bool:
    """True when ``$CI`` is set (to anything but '', 0, false, no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# --------------------------------------------------------------------------- marks, build


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the Go servers the selected server tests need, once (cached afterwards)."""
    if session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("servers") for item in session.items):
        return
    missing = [tool for tool in GO_TOOLS if not (process.tools_dir() / tool).is_file()]
    if not missing:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    if process.find_go() is None:
        say(f"==> {', '.join(missing)} not built and no Go toolchain (>= {build.GO_MINIMUM})")
        return
    say(f"==> building {' and '.join(missing)} into {process.tools_dir()} (minutes, once)")
    if not build.build_tools(ROOT / ".ci" / "build-go-tools", missing, say):
        say("==> the build failed: the tests that need it will say so")


@pytest.fixture(autouse=True)
def _no_server_unless_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A test without the ``servers`` mark that starts a server process fails at once."""
    if request.node.get_closest_marker("servers") is None:

        def refuse(self: process.ServerProcess) -> None:
            raise AssertionError(
                f"{request.node.nodeid} starts a {self.name} server: mark it "
                "@pytest.mark.servers (nox -s unit runs only the tests without it)"
            )

        monkeypatch.setattr(process.ServerProcess, "_launch", refuse)
    yield


# --------------------------------------------------------------------------- servers


def _serve(factory: Callable[[], S]) -> Iterator[S]:
    """Create, start, yield and close a server; skip (fail under $CI) if it is not installed."""
    missing = ""
    try:
        server = factory()
    except process.Missing as err:
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
    """Redis on 127.0.0.1; ``.url`` is ``redis://127.0.0.1:N``."""
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
def otlp_receiver() -> Iterator[ControlledReceiver]:
    """A fresh in-process OTLP/HTTP receiver; ``.endpoint``, ``.traces_url``, ``.spans()``."""
    with ControlledReceiver() as receiver:
        yield receiver
