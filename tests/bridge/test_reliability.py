"""Faults: collector down, blackholed, back again; full queues; SIGTERM. Nothing breaks."""

from __future__ import annotations

import signal
import time

import pytest

from tests.subproc import result_of, run_profiled, start_profiled
from tests.waiting import wait_until
from zaqar_otel.bridge import ids
from zaqar_otel.demo.process import http_get, pick_port

pytestmark = pytest.mark.servers

FAST_FAIL = {"OTEL_EXPORTER_OTLP_TIMEOUT": "1", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1"}


def test_collector_down_then_back_spans_resume_and_one_warning_each_way(otlp_receiver):
    otlp_receiver.fail_with(503, count=3)  # three export attempts refused, then healthy
    result = run_profiled(
        "--requests", "30", "--interval", "0.1",
        "--force-flush",  # status() after the last export, not while it is under way
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            **FAST_FAIL,
        },
    )  # fmt: skip
    assert len(result["base_ids"]) == 30
    spans = otlp_receiver.spans()
    arrived = {s.trace_id for s in spans}
    assert ids.trace_hex(result["base_ids"][-1]) in arrived  # spans resumed
    assert result["stderr"].count("cannot export spans") == 1
    assert result["stderr"].count("span export works again") == 1
    status = result["status"]
    assert status["export_failed"] > 0
    assert status["exported"] == len(spans)
    assert "Traceback" not in result["stderr"]


def test_collector_down_for_the_whole_run(otlp_receiver):
    port = pick_port()  # nothing listens: connection refused
    result = run_profiled(
        "--requests", "50",
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", **FAST_FAIL},
    )  # fmt: skip
    assert len(result["base_ids"]) == 50
    assert result["stderr"].count("cannot export spans") == 1
    assert "Traceback" not in result["stderr"]


def test_burst_larger_than_the_queue_drops_are_counted_and_said_once(otlp_receiver):
    otlp_receiver.hang()  # blackholed: accepts, never answers
    try:
        result = run_profiled(
            "--requests", "100",
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
                "OTEL_BSP_MAX_QUEUE_SIZE": "20",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10",
                **FAST_FAIL,
            },
            timeout=60,
        )  # fmt: skip
    finally:
        otlp_receiver.heal()
    status = result["status"]
    total = 200  # two spans per request
    # at most one queue plus one batch in flight can have escaped dropping
    assert status["dropped_queue_full"] >= total - 20 - 10
    assert status["dropped_queue_full"] + status["queued"] <= total
    assert result["stderr"].count("the span queue is full") == 1
    assert result["stderr"].count("Queue full, dropping") <= 1


def test_no_span_left_open_after_many_threads(otlp_receiver):
    result = run_profiled(
        "--requests", "400", "--threads", "16",
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint},
    )  # fmt: skip
    assert result["status"]["open_spans"] == 0
    spans = otlp_receiver.wait_for(800, timeout=30)
    assert len({s.trace_id for s in spans}) == 400


def test_sigterm_flushes_every_queued_span(otlp_receiver):
    proc = start_profiled(
        "--requests", "20", "--hold", "60",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "600000",  # nothing leaves until a flush
        },
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once the requests are done
    assert otlp_receiver.spans() == []
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert proc.returncode == -signal.SIGTERM
    spans = otlp_receiver.wait_for(40, timeout=5)
    assert len(spans) == 40
    assert {s.trace_id for s in spans} == {ids.trace_hex(b) for b in result_of(line)["base_ids"]}


def test_sigterm_with_a_blackholed_collector_ends_in_bounded_time(otlp_receiver):
    otlp_receiver.hang()
    try:
        proc = start_profiled(
            "--requests", "20", "--hold", "60",
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "600000",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
            },
        )  # fmt: skip
        assert proc.stdout is not None
        proc.stdout.readline()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        took = time.monotonic() - started
    finally:
        otlp_receiver.heal()
    assert proc.returncode == -signal.SIGTERM
    assert took < 15, took


def test_normal_exit_with_a_blackholed_collector_ends_in_bounded_time(otlp_receiver):
    otlp_receiver.hang()
    try:
        result = run_profiled(
            "--requests", "20",
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
                "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
            },
            timeout=60,
        )  # fmt: skip
    finally:
        otlp_receiver.heal()
    assert result["wall"] < 30, result["wall"]


def test_jaeger_restarting_during_load(tmp_path):
    from tests.servers import JaegerServer

    jaeger = JaegerServer().start()  # a private one: this test stops it
    log = tmp_path / "stderr.log"
    try:
        with log.open("w") as stderr:
            proc = start_profiled(
                "--requests", "60", "--interval", "0.1",
                env={
                    "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http_endpoint,
                    "OTEL_BSP_SCHEDULE_DELAY": "100",
                    **FAST_FAIL,
                },
                stderr=stderr,
            )  # fmt: skip
        services = f"{jaeger.query_url}/api/services"
        wait_until(lambda: b"zaqar-api" in http_get(services)[1], "first spans in Jaeger")
        jaeger.stop()
        wait_until(lambda: "cannot export spans" in log.read_text(), "the export failing")
        jaeger.start()  # same ports, empty store
        out, _ = proc.communicate(timeout=60)
        err = log.read_text()
        assert proc.returncode == 0, err
        bases = result_of(out)["base_ids"]
        assert len(bases) == 60
        # the last requests were made after the restart: their traces are complete
        for base in bases[-5:]:
            trace = jaeger.wait_for_trace(ids.trace_hex(base), 2, timeout=20)
            assert len(jaeger.trace_spans(trace)) == 2
        assert "Traceback" not in err
        assert err.count("cannot export spans") <= 1
    finally:
        jaeger.close()
