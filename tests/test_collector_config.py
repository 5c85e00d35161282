"""collector-config/ (and docker/jaeger.yaml) checked by a real collector binary.

Jaeger v2 is an OpenTelemetry Collector distribution with the components these files use
(otlp receiver and exporter, memory_limiter, batch, tail_sampling, healthcheckv2), so its
``validate`` command checks them, and a collector process started from each file must pass a
span sent to it on to a second Jaeger (the session's ``jaeger_server``).
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode

from tests.conftest import in_ci
from tests.servers import JaegerServer
from tests.waiting import assert_absent_after_control
from zaqar_otel.demo import process

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR_CONFIGS = sorted((ROOT / "collector-config").glob("*.yaml"))
ALL_CONFIGS = [*COLLECTOR_CONFIGS, ROOT / "docker" / "jaeger.yaml"]


def ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.fixture(scope="module")
def jaeger_binary() -> str:
    try:
        return process.find_binary("jaeger")
    except process.Missing as err:
        message = str(err)
    if in_ci():
        pytest.fail(f"jaeger binary missing under CI: {message}", pytrace=False)
    pytest.skip(message)


def validate(binary: str, config: Path, *sets: str) -> subprocess.CompletedProcess[str]:
    command = [binary, "validate", "--config", str(config), *(f"--set={s}" for s in sets)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


# -- the files as written


def test_there_is_a_config_and_a_tail_sampling_variant() -> None:
    names = {p.name for p in COLLECTOR_CONFIGS}
    assert {"otel-collector.yaml", "otel-collector-tail-sampling.yaml"} <= names


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=ids(ALL_CONFIGS))
def test_pipeline_has_otlp_in_memory_limiter_first_and_batching(config: Path) -> None:
    data = load(config)
    protocols = data["receivers"]["otlp"]["protocols"]
    assert set(protocols) == {"grpc", "http"}
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    pipelines = data["service"]["pipelines"]
    assert pipelines, "no pipeline"
    for name, pipeline in pipelines.items():
        assert pipeline["processors"][0] == "memory_limiter", name
        assert "batch" in pipeline["processors"], name
        assert "otlp" in pipeline["receivers"], name
    assert "healthcheckv2" in data["service"]["extensions"]
    assert data["extensions"]["healthcheckv2"]["http"]["endpoint"].endswith(":13133")


@pytest.mark.parametrize("config", COLLECTOR_CONFIGS, ids=ids(COLLECTOR_CONFIGS))
def test_collector_exports_to_jaeger_by_otlp(config: Path) -> None:
    data = load(config)
    [exporters] = [p["exporters"] for p in data["service"]["pipelines"].values()]
    assert exporters == ["otlp/jaeger"]
    assert data["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"


@pytest.mark.servers
@pytest.mark.parametrize("config", ALL_CONFIGS, ids=ids(ALL_CONFIGS))
def test_real_collector_validates_it(jaeger_binary: str, config: Path) -> None:
    result = validate(jaeger_binary, config)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.servers
@pytest.mark.parametrize(
    "sets, error",
    [
        (["service::pipelines::traces::processors=[memory_limiter,nosuch]"], "nosuch"),
        (["processors::memory_limiter::limit_mib=0"], "limit_mib"),
    ],
    ids=["unknown-processor", "no-memory-limit"],
)
def test_validation_can_fail(jaeger_binary: str, sets: list[str], error: str) -> None:
    result = validate(jaeger_binary, ROOT / "collector-config" / "otel-collector.yaml", *sets)
    assert result.returncode != 0
    assert error in result.stderr


# -- the files at work: a collector process between an SDK and a Jaeger


class Collector(process.ServerProcess):
    """A collector process from a config file, its endpoints moved to free local ports."""

    name = "collector"

    def __init__(self, binary: str, config: Path, target_grpc: str, *extra: str) -> None:
        self.binary, self.config = binary, config
        super().__init__(startup_timeout=60)
        self.grpc_port, self.http_port, self.health_port = (process.pick_port() for _ in "ghs")
        self.sets = [
            f"receivers::otlp::protocols::grpc::endpoint=127.0.0.1:{self.grpc_port}",
            f"receivers::otlp::protocols::http::endpoint=127.0.0.1:{self.http_port}",
            f"extensions::healthcheckv2::http::endpoint=127.0.0.1:{self.health_port}",
            f"exporters::otlp/jaeger::endpoint={target_grpc}",
            "service::telemetry::metrics::level=none",  # no :8888 shared by instances
            *extra,
        ]

    def _command(self) -> list[str]:
        return [self.binary, "--config", str(self.config), *(f"--set={s}" for s in self.sets)]

    def _ports(self) -> list[int]:
        return [self.grpc_port, self.http_port, self.health_port]

    def _is_ready(self) -> bool:
        status, _ = process.http_get(f"http://127.0.0.1:{self.health_port}/status", timeout=1)
        return (
            status == 200
            and process.port_open(self.grpc_port)
            and process.port_open(self.http_port)
        )


def send_span(exporter: SpanExporter, name: str, *, error: bool = False) -> str:
    """One span, exported at once; its trace id (hex)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "collector-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with provider.get_tracer("test").start_as_current_span(name) as span:
            if error:
                span.set_status(Status(StatusCode.ERROR, "boom"))
            trace_id = f"{span.get_span_context().trace_id:032x}"
    finally:
        provider.shutdown()
    return trace_id


def http_exporter(collector: Collector) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"http://127.0.0.1:{collector.http_port}/v1/traces")


def grpc_exporter(collector: Collector) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True)


def operation(jaeger: JaegerServer, trace_id: str) -> str:
    [span] = jaeger.trace_spans(jaeger.wait_for_trace(trace_id, 1, timeout=20))
    return str(span["operationName"])


@pytest.mark.servers
def test_collector_passes_http_and_grpc_spans_to_jaeger(
    jaeger_binary: str, jaeger_server: JaegerServer
) -> None:
    config = ROOT / "collector-config" / "otel-collector.yaml"
    with Collector(jaeger_binary, config, jaeger_server.otlp_grpc_endpoint) as collector:
        name = f"via-collector-{uuid.uuid4().hex[:8]}"
        over_http = send_span(http_exporter(collector), f"{name}-http")
        over_grpc = send_span(grpc_exporter(collector), f"{name}-grpc")
        assert operation(jaeger_server, over_http) == f"{name}-http"
        assert operation(jaeger_server, over_grpc) == f"{name}-grpc"


@pytest.mark.servers
def test_tail_sampling_keeps_errors_and_drops_the_unsampled_rest(
    jaeger_binary: str, jaeger_server: JaegerServer, tmp_path: Path
) -> None:
    data = load(ROOT / "collector-config" / "otel-collector-tail-sampling.yaml")
    sampling = data["processors"]["tail_sampling"]
    sampling["decision_wait"] = "1s"
    [baseline] = [p for p in sampling["policies"] if p["type"] == "probabilistic"]
    baseline["probabilistic"]["sampling_percentage"] = 0  # only a policy can keep a span now
    config = tmp_path / "tail-sampling.yaml"
    config.write_text(yaml.safe_dump(data))
    with Collector(jaeger_binary, config, jaeger_server.otlp_grpc_endpoint) as collector:
        dropped = send_span(http_exporter(collector), "fast-and-fine")
        kept = send_span(http_exporter(collector), "failed", error=True)
        assert operation(jaeger_server, kept) == "failed"
        # decided a decision_wait later than both: once it is in Jaeger, so is what was kept
        control = send_span(http_exporter(collector), "control", error=True)
        assert_absent_after_control(jaeger_server, control, [dropped])
