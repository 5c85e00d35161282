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
