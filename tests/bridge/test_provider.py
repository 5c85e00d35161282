"""provider: the resource of the provider the bridge builds (who exports: once, not per span)."""

from zaqar_otel.bridge import provider


def test_resource_has_host_and_process(monkeypatch):
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    attributes = provider.resource_for("zaqar-api", "node-1").attributes
    assert attributes["service.name"] == "zaqar-api"
    assert attributes["host.name"] == "node-1"
    assert isinstance(attributes["process.pid"], int)
    assert attributes["process.runtime.name"]
    assert "process.command_line" not in attributes  # may hold secrets
    assert "process.command_args" not in attributes


def test_operator_resource_attributes_win(monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "host.name=public-name,deployment.env=prod")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "zaqar")
    attributes = provider.resource_for("zaqar-api", "node-1").attributes
    assert attributes["host.name"] == "public-name"
    assert attributes["service.name"] == "zaqar"
    assert attributes["deployment.env"] == "prod"


def test_without_a_host_the_machine_name(monkeypatch):
    import socket

    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert provider.resource_for("zaqar-api").attributes["host.name"] == socket.gethostname()


def test_outside_uwsgi_no_exit_hook():
    from opentelemetry.sdk.trace import TracerProvider

    assert provider.flush_at_uwsgi_exit(TracerProvider()) is False


def test_under_uwsgi_the_worker_exit_flushes_then_calls_the_app_hook(monkeypatch):
    """uWSGI calls ``uwsgi.atexit`` when a worker ends; a stand-in module plays uWSGI's part
    here (the real worker exit is tests/zaqar/test_uwsgi.py)."""
    import sys
    import types

    from opentelemetry.sdk.trace import TracerProvider

    calls = []

    class Recording(TracerProvider):
        def force_flush(self, timeout_millis: int = 30000) -> bool:
            calls.append(("flush", timeout_millis))
            return True

    fake = types.ModuleType("uwsgi")
    fake.atexit = lambda: calls.append(("app",))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uwsgi", fake)
    recording = Recording()
    assert provider.flush_at_uwsgi_exit(recording, timeout_millis=1234) is True
    assert provider.flush_at_uwsgi_exit(recording) is False  # once
    fake.atexit()  # type: ignore[attr-defined]
    assert calls == [("flush", 1234), ("app",)]
