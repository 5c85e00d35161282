"""ServerProcess (zaqar_otel.demo.process): ports, missing programs, failed starts, port races."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from tests.servers import JaegerServer, RedisServer
from zaqar_otel.demo.process import Missing, ServerProcess, StartFailed, find_binary, pick_port

# --------------------------------------------------------------------------- helpers


def test_free_port_is_unique_and_bindable() -> None:
    ports = {pick_port() for _ in range(20)}
    assert len(ports) == 20
    assert all(1024 < p < 65536 for p in ports)


def test_missing_binary_says_how_to_build_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ZAQAR_OTEL_TOOLS", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Missing, match=r"\.ci/build-go-tools"):
        find_binary("jaeger")
    tool = tmp_path / "jaeger"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert find_binary("jaeger") == str(tool)


@pytest.mark.servers
def test_start_failure_reports_the_log_tail(redis_server: RedisServer) -> None:
    clash = RedisServer(port=redis_server.port, startup_timeout=10)
    try:
        with pytest.raises(StartFailed, match=r"(?s)exited with code.*in use"):
            clash.start()
        assert not clash.running
    finally:
        clash.close()


class _NeverReady(ServerProcess):
    name = "never-ready"

    def _command(self) -> list[str]:
        return ["sh", "-c", "echo hello-from-the-server; exec sleep 30"]

    def _is_ready(self) -> bool:
        return False


@pytest.mark.servers  # a process, if only sh
def test_startup_timeout_reports_the_log_tail() -> None:
    server = _NeverReady(startup_timeout=0.5)
    try:
        with pytest.raises(StartFailed, match=r"(?s)not ready after.*hello-from-the-server"):
            server.start()
        assert not server.running and server.pid is None
    finally:
        server.close()
    assert not server.workdir.exists()


@pytest.mark.servers
@pytest.mark.parametrize("kind", ["redis", "jaeger"])
def test_port_race_is_retried_with_fresh_ports(kind: str, request: pytest.FixtureRequest) -> None:
    """Another process took a chosen port between pick_port() and the server's bind."""
    request.getfixturevalue(f"{kind}_server")  # skip (or fail under CI) like the fixture
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        server: RedisServer | JaegerServer
        if kind == "redis":
            server = RedisServer()
            server.port = taken
        else:
            server = JaegerServer()
            server.jaeger_ports = dataclasses.replace(server.jaeger_ports, otlp_http=taken)
        try:
            server.start()
            assert server.running
            assert taken not in server.ports
            assert "already in use" in server.log(200).lower()
        finally:
            server.close()
