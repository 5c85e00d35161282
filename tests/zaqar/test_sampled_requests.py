"""SamplingTracer in process: OSProfiler's real WSGI tracer around a small app, the bridge's
real provider and an in-memory exporter. Signed requests win; sampled and trusted-parent
requests are traced like signed ones, carry no HMAC key onwards; fuzzed W3C headers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import propagate
from osprofiler import profiler, web
from webob import Request

from tests import tracing
from tests.zaqar import w3c
from zaqar_otel.bridge import ids, sampling
from zaqar_otel.zaqar import sampled_requests

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
SAMPLED = f"00-{TRACE}-{SPAN}-01"
SEEN: list[dict[str, str]] = []  # what the app saw: the headers it would send onwards


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    with profiler.Trace("inner"):
        onwards: dict[str, str] = dict(web.get_trace_id_headers())
        propagate.inject(onwards)
        SEEN.append(onwards)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


APP = sampled_requests.SamplingTracer(web.WsgiMiddleware(_app, enabled=True), _app)


@pytest.fixture(autouse=True)
def bridge() -> Iterator[None]:
    tracing.init_bridge()
    SEEN.clear()
    yield
    sampling.ADMISSION.configure(sampling.Policy())


def use(policy: sampling.Policy) -> None:
    sampling.ADMISSION.configure(policy)


def get(headers: dict[str, str] | None = None) -> int:
    status: int = Request.blank("/v2/queues", headers=headers or {}).get_response(APP).status_int
    assert profiler.get() is None
    return status


def signed_headers() -> tuple[dict[str, str], str]:
    profiler.clean()
    base = profiler.init(tracing.HMAC_KEY).get_base_id()
    headers = web.get_trace_id_headers()
    profiler.clean()
    return headers, base


def by_name() -> dict[str, Any]:
    return {span.name: span for span in tracing.finished()}


def test_by_default_unsigned_requests_are_not_traced() -> None:
    assert get({"traceparent": SAMPLED}) == 200
    assert tracing.finished() == []


def test_a_sampled_request_is_a_complete_new_trace_and_signs_nothing_onwards() -> None:
    use(sampling.Policy(1.0, 100.0))
    assert get() == 200
    spans = by_name()
    assert sorted(spans) == ["GET", "inner"]
    root, inner = spans["GET"], spans["inner"]
    assert root.parent is None and inner.parent.span_id == root.context.span_id
    assert root.attributes["zaqar_otel.trace.origin"] == "sampled"
    assert ids.trace_id(root.attributes["osprofiler.base_id"]) == root.context.trace_id
    [onwards] = SEEN
    assert "X-Trace-Info" not in onwards and "X-Trace-HMAC" not in onwards
    assert onwards["traceparent"].split("-")[1] == format(root.context.trace_id, "032x")


def test_a_trusted_sampled_parent_is_continued_with_its_tracestate() -> None:
    use(sampling.Policy(0.0, 100.0, trust_traceparent=True))
    assert get({"traceparent": SAMPLED, "tracestate": "rojo=00f067aa0ba902b7,congo=t61"}) == 200
    spans = by_name()
    root, inner = spans["GET"], spans["inner"]
    assert format(root.context.trace_id, "032x") == TRACE
    assert root.parent is not None and format(root.parent.span_id, "016x") == SPAN
    assert root.parent.is_remote
    assert root.attributes["zaqar_otel.trace.origin"] == "traceparent"
    assert root.attributes["osprofiler.base_id"] == ids.base_id_for(int(TRACE, 16))
    for span in (root, inner):
        assert span.context.trace_state.to_header() == "rojo=00f067aa0ba902b7,congo=t61"
    [onwards] = SEEN
    assert onwards["tracestate"] == "rojo=00f067aa0ba902b7,congo=t61"
    assert onwards["traceparent"] == f"00-{TRACE}-{format(inner.context.span_id, '016x')}-01"
    assert "X-Trace-HMAC" not in onwards


def test_untrusted_or_unsampled_parents_start_nothing() -> None:
    use(sampling.Policy(0.0, 100.0, trust_traceparent=False))
    assert get({"traceparent": SAMPLED}) == 200
    use(sampling.Policy(0.0, 100.0, trust_traceparent=True))
    assert get({"traceparent": f"00-{TRACE}-{SPAN}-00"}) == 200
    assert get({"traceparent": f"00-{TRACE}-{SPAN}-1"}) == 200
    assert tracing.finished() == []


def test_a_signed_request_wins_and_takes_no_token() -> None:
    use(sampling.Policy(1.0, 1.0, trust_traceparent=True))
    before = sampling.ADMISSION.counters()
    headers, base = signed_headers()
    for _ in range(3):
        assert get({**headers, "traceparent": SAMPLED}) == 200
    roots = [s for s in tracing.finished() if s.name == "GET"]
    assert len(roots) == 3
    assert {format(s.context.trace_id, "032x") for s in roots} == {ids.trace_hex(base)}
    assert all("zaqar_otel.trace.origin" not in s.attributes for s in roots)
    assert sampling.ADMISSION.counters() == before
    assert get() == 200  # the one token is still there
    after = sampling.ADMISSION.counters()
    assert after["started_sampled"] == before["started_sampled"] + 1
    assert after["rate_limited"] == before["rate_limited"]


def test_a_wrong_signature_is_an_unsigned_request() -> None:
    use(sampling.Policy(1.0, 100.0))
    profiler.clean()
    profiler.init("not-the-key")
    wrong = web.get_trace_id_headers()
    profiler.clean()
    assert get(wrong) == 200
    [root] = [s for s in tracing.finished() if s.name == "GET"]
    assert root.attributes["zaqar_otel.trace.origin"] == "sampled"


def test_profiling_switched_off_samples_nothing() -> None:
    use(sampling.Policy(1.0, 100.0, trust_traceparent=True))
    web.disable()
    try:
        assert get({"traceparent": SAMPLED}) == 200
    finally:
        web.enable(tracing.HMAC_KEY)
    assert tracing.finished() == []


def test_configure_reads_the_conf_and_follows_its_reloads(tmp_path) -> None:
    path = tmp_path / "zaqar.conf"
    path.write_text("[profiler]\nenabled = true\ntrace_sample_ratio = 1.0\n")
    conf = tracing.make_conf()
    conf.clear_override("enabled", "profiler")
    conf(["--config-file", str(path)])
    sampled_requests.configure(conf)
    assert sampling.ADMISSION.policy.ratio == 1.0
    path.write_text("[profiler]\nenabled = true\ntrace_sample_ratio = 0.0\ntrust_traceparent = 1\n")
    conf.mutate_config_files()
    assert sampling.ADMISSION.policy.ratio == 0.0
    assert sampling.ADMISSION.policy.trust_traceparent


# -- fuzzing: a trace only for a valid signature, or a valid sampled trusted parent


@st.composite
def requests_headers(draw: st.DrawFn) -> tuple[dict[str, str], str | None]:
    headers: dict[str, str] = {}
    signed_base = None
    if draw(st.integers(0, 9)) == 0:
        signed, signed_base = signed_headers()
        headers.update(signed)
    traceparent = draw(st.one_of(st.none(), w3c.traceparents()))
    if traceparent is not None:
        headers["traceparent"] = traceparent
    tracestate = draw(w3c.tracestates)
    if tracestate is not None:
        headers["tracestate"] = tracestate
    return headers, signed_base


def _check(case: tuple[dict[str, str], str | None], trusted: bool) -> None:
    headers, signed_base = case
    tracing.EXPORTER.clear()
    assert get(headers) == 200
    roots = [s for s in tracing.finished() if s.name == "GET"]
    parent = w3c.sampled_parent(headers.get("traceparent"))
    if signed_base is not None:
        assert [format(r.context.trace_id, "032x") for r in roots] == [ids.trace_hex(signed_base)]
    elif trusted and parent is not None:
        [root] = roots
        assert format(root.context.trace_id, "032x") == parent[0]
        assert root.parent is not None and format(root.parent.span_id, "016x") == parent[1]
    else:
        assert tracing.finished() == []


FUZZ = settings(
    max_examples=800,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(requests_headers())
def test_fuzzed_headers_when_trusted(case: tuple[dict[str, str], str | None]) -> None:
    use(sampling.Policy(0.0, 1e9, trust_traceparent=True))
    _check(case, trusted=True)


@FUZZ
@given(requests_headers())
def test_fuzzed_headers_when_not_trusted(case: tuple[dict[str, str], str | None]) -> None:
    use(sampling.Policy(0.0, 1e9, trust_traceparent=False))
    _check(case, trusted=False)
