"""Counters of what was exported, lost and left open: zaqar_otel.status() and OTel metrics."""

import uuid

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import zaqar_otel
from tests import tracing


def _metric_values(reader: InMemoryMetricReader) -> dict[str, int]:
    values = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    values[metric.name] = point.value
    return values


def test_status_and_metrics_count_open_and_malformed():
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    driver = tracing.init_bridge()
    base = str(uuid.uuid4())
    element = str(uuid.uuid4())
    driver.notify({"name": "wsgi-start", "trace_id": element, "base_id": base, "parent_id": base})
    driver.notify({"name": "broken"})
    status = zaqar_otel.status()
    assert status["open_spans"] == 1
    assert status["malformed_notifications"] == 1
    values = _metric_values(reader)
    assert values["zaqar_otel.spans.open_spans"] == 1
    assert values["zaqar_otel.spans.malformed_notifications"] == 1
    driver.notify({"name": "wsgi-stop", "trace_id": element, "base_id": base, "parent_id": base})
    assert zaqar_otel.status()["open_spans"] == 0
    assert _metric_values(reader)["zaqar_otel.spans.open_spans"] == 0


def test_a_bad_timestamp_does_not_matter():
    driver = tracing.init_bridge()
    base = str(uuid.uuid4())
    for phase in ("start", "stop"):
        driver.notify(
            {"name": f"x-{phase}", "trace_id": base, "base_id": base, "parent_id": base,
             "timestamp": "not a time"}
        )  # fmt: skip
    assert [s.name for s in tracing.finished()] == ["x"]
    assert driver.bridge.malformed == 0
