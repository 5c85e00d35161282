"""Which unsigned requests are traced: the policy from [profiler] and OTEL_TRACES_SAMPLER, the
token bucket, the decision, and the sampler that keeps a chosen request's trace complete."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import context as context_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from oslo_config import cfg

import zaqar_otel
from zaqar_otel.bridge import gate, ids, provider, sampling
from zaqar_otel.bridge.logs import LogOnce

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
SAMPLED = f"00-{TRACE}-{SPAN}-01"
UNSAMPLED = f"00-{TRACE}-{SPAN}-00"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def conf_with(tmp_path: Path, text: str) -> cfg.ConfigOpts:
    path = tmp_path / "zaqar.conf"
    path.write_text("[profiler]\n" + text)
    conf = cfg.ConfigOpts()
    zaqar_otel.register_opts(conf)
    conf(["--config-file", str(path)])
    return conf


def admission(policy: sampling.Policy, clock: Clock | None = None) -> sampling.Admission:
    chosen = sampling.Admission(clock or Clock())
    chosen.configure(policy)
    return chosen


# -- the policy


def test_defaults_trace_no_unsigned_request(tmp_path: Path) -> None:
    policy = sampling.read_policy(conf_with(tmp_path, "").profiler, {})
    assert policy == sampling.Policy(0.0, 10.0, False, False, "default")
    assert not policy.active


def test_the_options_are_read(tmp_path: Path) -> None:
    conf = conf_with(
        tmp_path, "trace_sample_ratio = 0.25\ntrace_rate_limit = 3\ntrust_traceparent = true\n"
    )
    policy = sampling.read_policy(conf.profiler, {})
    assert (policy.ratio, policy.rate_limit, policy.trust_traceparent) == (0.25, 3.0, True)
    assert policy.active and policy.source == "[profiler] trace_sample_ratio"


@pytest.mark.parametrize(
    ("text", "option"),
    [
        ("trace_sample_ratio = 5\n", "trace_sample_ratio"),
        ("trace_sample_ratio = lots\n", "trace_sample_ratio"),
        ("trace_rate_limit = -1\n", "trace_rate_limit"),
    ],
)
def test_a_bad_value_is_logged_and_replaced_by_its_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str, option: str
) -> None:
    policy = sampling.read_policy(conf_with(tmp_path, text).profiler, {})
    assert (policy.ratio, policy.rate_limit) == (0.0, 10.0)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert f"[profiler] {option}" in record.getMessage()


@pytest.mark.parametrize(
    ("env", "ratio", "parent_based"),
    [
        ({"OTEL_TRACES_SAMPLER": "always_on"}, 1.0, False),
        ({"OTEL_TRACES_SAMPLER": "always_off"}, 0.0, False),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.2"}, 0.2, False),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, 1.0, True),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, 0.0, True),
        (
            {"OTEL_TRACES_SAMPLER": "ParentBased_TraceIdRatio", "OTEL_TRACES_SAMPLER_ARG": " 0.5"},
            0.5,
            True,
        ),
    ],
)
def test_otel_traces_sampler_stands_in_for_an_unset_ratio(
    tmp_path: Path, env: dict[str, str], ratio: float, parent_based: bool
) -> None:
    policy = sampling.read_policy(conf_with(tmp_path, "").profiler, env)
    assert (policy.ratio, policy.parent_based) == (ratio, parent_based)
    assert policy.source.startswith("OTEL_TRACES_SAMPLER=")


def test_a_set_ratio_wins_over_otel_traces_sampler(tmp_path: Path) -> None:
    conf = conf_with(tmp_path, "trace_sample_ratio = 0.0\n")
    policy = sampling.read_policy(conf.profiler, {"OTEL_TRACES_SAMPLER": "always_on"})
    assert policy.ratio == 0.0 and not policy.parent_based


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "5"},
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "nan"},
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "lots"},
        {"OTEL_TRACES_SAMPLER": "traceidratio"},  # the SDK would take 1.0 here
        {"OTEL_TRACES_SAMPLER": "jaeger_remote"},
    ],
)
def test_bad_sampler_values_are_logged_and_sample_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, env: dict[str, str]
) -> None:
    policy = sampling.read_policy(conf_with(tmp_path, "").profiler, env)
    assert policy.ratio == 0.0
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "OTEL_TRACES_SAMPLER" in record.getMessage()
    assert "no unsigned request is sampled" in record.getMessage()


def test_a_policy_without_a_rate_is_inactive() -> None:
    assert not sampling.Policy(1.0, 0.0, True).active
    assert sampling.Policy(0.0, 1.0, True).active
    assert not sampling.Policy(0.0, 1.0, False).active


# -- the token bucket


def test_the_bucket_gives_its_rate_per_second_after_one_seconds_burst() -> None:
    clock = Clock()
    bucket = sampling.TokenBucket(5.0, clock)
    assert sum(bucket.take() for _ in range(100)) == 5  # the burst: one second's worth
    granted = 0
    for _ in range(100):  # 10 s, one attempt every 0.1 s
        clock.now += 0.1
        granted += bucket.take()
    assert granted == 50


def test_a_slow_rate_gives_one_now_and_then() -> None:
    clock = Clock()
    bucket = sampling.TokenBucket(0.5, clock)
    assert [bucket.take() for _ in range(3)] == [True, False, False]
    clock.now += 1.0
    assert not bucket.take()
    clock.now += 1.0
    assert bucket.take()


def test_a_lower_rate_caps_the_tokens_saved() -> None:
    clock = Clock()
    bucket = sampling.TokenBucket(100.0, clock)
    bucket.set_rate(2.0)
    assert sum(bucket.take() for _ in range(100)) == 2


# -- the decision


def test_ratio_sampling_starts_new_traces_at_that_ratio() -> None:
    random.seed(12)
    chosen = admission(sampling.Policy(0.1, 1e9))
    decisions = [chosen.decide(None) for _ in range(20_000)]
    started = [d for d in decisions if d is not None]
    assert 1800 <= len(started) <= 2200
    assert len({d.base_id for d in started}) == len(started)  # each a new trace
    assert all(d.parent_id is None and d.parent is None for d in started)
    assert all(d.reason == "sampled" for d in started)
    assert chosen.counters()["started_sampled"] == len(started)


def test_ratio_sampling_follows_the_trace_id_rule() -> None:
    random.seed(3)
    chosen = admission(sampling.Policy(0.3, 1e9))
    for decision in filter(None, (chosen.decide(None) for _ in range(500))):
        low = ids.trace_id(decision.base_id) & (2**64 - 1)
        assert low < round(0.3 * 2**64)  # what the OTel TraceIdRatioBased sampler decides


def test_a_sampled_trusted_parent_is_continued() -> None:
    chosen = admission(sampling.Policy(0.0, 10.0, trust_traceparent=True))
    decision = chosen.decide(SAMPLED, "rojo=00f067aa0ba902b7")
    assert decision is not None and decision.reason == "traceparent"
    assert ids.trace_hex(decision.base_id) == TRACE
    assert decision.parent_id is not None and ids.span_hex(decision.parent_id) == SPAN
    assert decision.parent is not None and decision.parent.trace_state.get("rojo")
    assert chosen.counters()["started_traceparent"] == 1


def test_a_parent_is_ignored_unless_trusted() -> None:
    assert admission(sampling.Policy(0.0, 10.0)).decide(SAMPLED) is None
    random.seed(1)
    decision = admission(sampling.Policy(1.0, 10.0)).decide(SAMPLED)
    assert decision is not None and decision.reason == "sampled"
    assert ids.trace_hex(decision.base_id) != TRACE


def test_unsampled_or_malformed_parents_start_nothing_unless_sampling_picks_the_request() -> None:
    trusting = sampling.Policy(0.0, 10.0, trust_traceparent=True)
    for header in (UNSAMPLED, "00-garbage", f"00-{TRACE}-{SPAN}-01-x"):
        assert admission(trusting).decide(header) is None
    random.seed(2)
    also_sampling = sampling.Policy(1.0, 10.0, trust_traceparent=True)
    decision = admission(also_sampling).decide(UNSAMPLED)
    assert decision is not None and decision.reason == "sampled"  # a new trace


def test_with_a_parent_based_sampler_an_unsampled_trusted_parent_vetoes() -> None:
    policy = sampling.Policy(1.0, 10.0, trust_traceparent=True, parent_based=True)
    assert admission(policy).decide(UNSAMPLED) is None
    assert admission(policy).decide("00-garbage") is not None  # no parent: the ratio


def test_the_rate_limit_caps_sampling_and_parents_together() -> None:
    clock = Clock()
    chosen = admission(sampling.Policy(1.0, 2.0, trust_traceparent=True), clock)
    decisions = [chosen.decide(SAMPLED if i % 2 else None) for i in range(10)]
    assert sum(d is not None for d in decisions) == 2
    assert chosen.counters() == {"started_sampled": 1, "started_traceparent": 1, "rate_limited": 8}
    clock.now += 0.5
    assert chosen.decide(None) is not None
    assert chosen.decide(None) is None


def test_the_rate_limit_holds_under_16_threads() -> None:
    clock = Clock()
    chosen = admission(sampling.Policy(1.0, 50.0), clock)
    barrier = threading.Barrier(16)
    results: list[bool] = []

    def hammer() -> None:
        barrier.wait()
        mine = [chosen.decide(None) is not None for _ in range(1000)]
        results.extend(mine)

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 50  # the clock stood still: exactly the burst
    assert chosen.counters()["rate_limited"] == 16_000 - 50


def test_reconfiguring_keeps_the_bucket() -> None:
    clock = Clock()
    chosen = admission(sampling.Policy(1.0, 3.0), clock)
    assert sum(chosen.decide(None) is not None for _ in range(10)) == 3
    chosen.configure(sampling.Policy(1.0, 3.0, source="reloaded"))
    assert chosen.decide(None) is None  # a reload does not refill the bucket


# -- a chosen request's trace is complete, whatever the SDK sampler


def test_inside_a_profiled_request_every_span_is_recorded() -> None:
    exporter = InMemorySpanExporter()
    sdk = TracerProvider(sampler=ALWAYS_OFF)
    sdk.add_span_processor(SimpleSpanProcessor(exporter))
    sdk.sampler = provider.ProfiledSampler(sdk.sampler)
    tracer = sdk.get_tracer("test")
    tracer.start_span("outside").end()
    token = context_api.attach(context_api.set_value(gate.PROFILED, True))
    try:
        with tracer.start_as_current_span("inside"), tracer.start_as_current_span("child"):
            pass
    finally:
        context_api.detach(token)
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["child", "inside"]
    assert "AlwaysOffSampler" in sdk.sampler.get_description()


def test_a_bad_ratio_samples_nothing_even_with_otel_traces_sampler(tmp_path: Path) -> None:
    conf = conf_with(tmp_path, "trace_sample_ratio = 2\n")
    policy = sampling.read_policy(conf.profiler, {"OTEL_TRACES_SAMPLER": "always_on"})
    assert policy.ratio == 0.0


def test_turning_the_rate_on_starts_with_a_full_bucket() -> None:
    clock = Clock()
    chosen = admission(sampling.Policy(1.0, 0.0), clock)
    assert chosen.decide(None) is None
    chosen.configure(sampling.Policy(1.0, 4.0))
    assert sum(chosen.decide(None) is not None for _ in range(10)) == 4


# -- what is logged, and options that are missing or zero


@pytest.fixture
def global_admission() -> Iterator[sampling.Admission]:
    """``sampling.ADMISSION`` (what ``configure`` sets), back to the default afterwards."""
    yield sampling.ADMISSION
    sampling.ADMISSION.configure(sampling.Policy())


def test_configure_logs_what_applies_to_unsigned_requests(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, global_admission: sampling.Admission
) -> None:
    caplog.set_level(logging.INFO, logger="zaqar_otel")
    conf = conf_with(tmp_path, "trace_sample_ratio = 0.01\ntrace_rate_limit = 7\n")
    sampling.configure(conf.profiler, {})
    assert global_admission.policy.ratio == 0.01
    assert (
        "zaqar-otel: unsigned requests: 0.01 sampled ([profiler] trace_sample_ratio), "
        "trust_traceparent = False, at most 7 traces/s started by them"
    ) in caplog.messages


def test_configure_says_when_unsigned_requests_are_no_longer_traced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, global_admission: sampling.Admission
) -> None:
    caplog.set_level(logging.INFO, logger="zaqar_otel")
    sampling.configure(conf_with(tmp_path, "trust_traceparent = true\n").profiler, {})
    sampling.configure(conf_with(tmp_path, "trust_traceparent = false\n").profiler, {})
    assert not global_admission.policy.active
    assert caplog.messages[-1] == "zaqar-otel: unsigned requests: none traced any more"


def test_configure_with_the_defaults_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, global_admission: sampling.Admission
) -> None:
    caplog.set_level(logging.DEBUG, logger="zaqar_otel")
    sampling.configure(conf_with(tmp_path, "").profiler, {})
    assert caplog.records == []


def test_reaching_the_rate_limit_is_logged_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sampling, "log_once", LogOnce())  # a process that has not logged it yet
    chosen = admission(sampling.Policy(1.0, 1.0))
    for _ in range(5):
        chosen.decide(None)
    [record] = [r for r in caplog.records if "trace_rate_limit" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert chosen.counters()["rate_limited"] == 4


def test_a_trusted_parent_beyond_the_rate_limit_is_not_continued() -> None:
    chosen = admission(sampling.Policy(0.0, 1.0, trust_traceparent=True))
    assert chosen.decide(SAMPLED) is not None
    assert chosen.decide(SAMPLED) is None
    assert chosen.counters() == {"started_sampled": 0, "started_traceparent": 1, "rate_limited": 1}


def test_a_group_without_the_options_traces_no_unsigned_request() -> None:
    policy = sampling.read_policy(object(), {"OTEL_TRACES_SAMPLER": "always_off"})
    assert (policy.ratio, policy.rate_limit, policy.trust_traceparent) == (0.0, 10.0, False)
    assert not policy.active


def test_a_zero_rate_limit_starts_nothing_whatever_the_ratio(tmp_path: Path) -> None:
    conf = conf_with(tmp_path, "trace_sample_ratio = 1\ntrace_rate_limit = 0\n")
    chosen = admission(sampling.read_policy(conf.profiler, {}))
    assert [chosen.decide(None) for _ in range(10)] == [None] * 10
    assert chosen.counters() == {"started_sampled": 0, "started_traceparent": 0, "rate_limited": 0}


def test_a_ratio_of_zero_starts_nothing() -> None:
    chosen = admission(sampling.Policy(0.0, 1e9, trust_traceparent=True))
    assert [chosen.decide(None) for _ in range(1000)] == [None] * 1000
