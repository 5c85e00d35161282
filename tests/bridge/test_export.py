import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from zaqar_otel.bridge import export


@pytest.fixture(autouse=True)
def _no_protocol_env(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)


def test_bare_otel_leaves_everything_to_the_environment():
    assert export.parse_connection_string("otel://") == export.Endpoint(None, export.HTTP)


def test_bare_otel_takes_the_protocol_from_the_environment(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert export.parse_connection_string("otel://").protocol == export.GRPC


@pytest.mark.parametrize(
    ("text", "url", "protocol"),
    [
        ("otel://collector:4318", "http://collector:4318", export.HTTP),
        ("otel://collector:4317", "http://collector:4317", export.GRPC),
        ("otel://collector", "http://collector:4318", export.HTTP),
        ("otel://collector:9999?protocol=grpc", "http://collector:9999", export.GRPC),
        ("otel://collector:4317?protocol=http/protobuf", "http://collector:4317", export.HTTP),
        ("otel://collector:4318?tls=true", "https://collector:4318", export.HTTP),
        ("otel://[::1]:4318", "http://[::1]:4318", export.HTTP),
    ],
)
def test_explicit_endpoint(text, url, protocol):
    endpoint = export.parse_connection_string(text)
    assert (endpoint.url, endpoint.protocol) == (url, protocol)


def test_query_protocol_beats_the_environment(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    assert (
        export.parse_connection_string("otel://c:1?protocol=http/protobuf").protocol
        == "http/protobuf"
    )


@pytest.mark.parametrize(
    "text",
    ["jaeger://x", "otel://c:notaport", "otel://c:1?protocol=carrier-pigeon", "otel://c?x=1"],
)
def test_bad_connection_strings_raise_a_clear_error(text):
    with pytest.raises(ValueError):
        export.parse_connection_string(text)


def test_traces_exporter_none(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert export.build_exporter(export.Endpoint(None, export.HTTP)) is None


class _Broken:
    def __init__(self):
        self.calls = 0

    def export(self, spans):
        self.calls += 1
        raise ConnectionError("collector down")

    def shutdown(self):
        raise RuntimeError("no")

    def force_flush(self, timeout_millis=0):
        raise RuntimeError("no")


def test_guarded_exporter_never_raises_and_counts(caplog):
    guarded = export.GuardedExporter(_Broken())
    for _ in range(5):
        assert guarded.export([object(), object()]) is SpanExportResult.FAILURE
    guarded.shutdown()
    assert guarded.force_flush() is False
    assert guarded.failed == 10
    warnings = [r for r in caplog.records if "cannot export" in r.getMessage()]
    assert len(warnings) == 1
