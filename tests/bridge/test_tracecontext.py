"""W3C traceparent/tracestate parsing, and the OSProfiler ids derived from W3C ids."""

from __future__ import annotations

import logging
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zaqar_otel.bridge import ids, tracecontext

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


def test_a_valid_traceparent_names_the_callers_span() -> None:
    parent = tracecontext.parse(f"00-{TRACE}-{SPAN}-01", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    assert parent is not None
    assert parent.trace_id == int(TRACE, 16) and parent.span_id == int(SPAN, 16)
    assert parent.is_remote and parent.trace_flags.sampled
    assert parent.trace_state.to_header() == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def test_the_sampled_flag_is_read_from_the_last_bit() -> None:
    for flags, sampled in (("00", False), ("01", True), ("02", False), ("03", True)):
        parent = tracecontext.parse(f"00-{TRACE}-{SPAN}-{flags}")
        assert parent is not None and parent.trace_flags.sampled is sampled


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"00-{TRACE}-{SPAN}-1",  # short flags
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper-case hex
        f"00-{'0' * 32}-{SPAN}-01",  # zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # zero span id
        f"ff-{TRACE}-{SPAN}-01",  # forbidden version
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has four fields exactly
        f"00-{TRACE}-{SPAN}-01x",
        f"00_{TRACE}_{SPAN}_01",
        f"00-{TRACE}-{SPAN}-01\n",
        f"01-{TRACE}-{SPAN}-01-" + "x" * 600,  # longer than 512 characters
    ],
)
def test_invalid_traceparents_are_none(header: str) -> None:
    assert tracecontext.parse(header) is None


def test_later_versions_may_carry_more_fields_and_spaces_around_are_ignored() -> None:
    parent = tracecontext.parse(f" \t01-{TRACE}-{SPAN}-01-what-comes-later\t ")
    assert parent is not None and parent.trace_id == int(TRACE, 16)


@pytest.mark.parametrize(
    "header",
    [
        "UPPER=1",  # keys are lower case
        "a=1,a=2",  # a key twice
        "a=1,b",  # a member without a value
        "a=1 x,b=",  # empty value
        ",".join(f"k{i}=v" for i in range(33)),  # more than 32 members
        "a=" + "x" * 600,  # too long
    ],
)
def test_an_invalid_tracestate_is_dropped_the_traceparent_kept(header: str) -> None:
    parent = tracecontext.parse(f"00-{TRACE}-{SPAN}-01", header)
    assert parent is not None and len(parent.trace_state) == 0


def test_tracestate_members_around_empty_ones_and_tenant_keys() -> None:
    state = tracecontext.parse_tracestate("  , a=1 ,,tenant@vendor=x-y ,")
    assert state.to_header() == "a=1,tenant@vendor=x-y"


def test_nothing_is_logged_for_bad_headers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tracecontext.parse("00-zz", "UPPER=1")
    tracecontext.parse(f"00-{TRACE}-{SPAN}-01", "a=1,a=2,BAD")
    assert caplog.records == []


@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1))
def test_derived_osprofiler_ids_map_back_to_the_w3c_ids(trace_id: int, span_id: int) -> None:
    base = ids.base_id_for(trace_id)
    parent = ids.parent_element_for(trace_id, span_id)
    assert ids.trace_id(base) == trace_id
    assert ids.span_id(parent) == span_id
    assert parent != base
    assert uuid.UUID(base) and uuid.UUID(parent)  # both are UUIDs (OSProfiler's form)
    assert ids.normalize_trace_id(base) == format(trace_id, "032x")


def test_derived_ids_are_deterministic() -> None:
    assert ids.base_id_for(int(TRACE, 16)) == "0af76519-16cd-43dd-8448-eb211c80319c"
    element = ids.parent_element_for(int(TRACE, 16), int(SPAN, 16))
    assert element == ids.parent_element_for(int(TRACE, 16), int(SPAN, 16))
    assert element.replace("-", "").endswith(SPAN)


def test_a_missing_traceparent_is_none() -> None:
    assert tracecontext.parse(None, "a=1") is None


def test_without_tracestate_the_trace_state_is_empty() -> None:
    parent = tracecontext.parse(f"00-{TRACE}-{SPAN}-01")
    assert parent is not None and len(parent.trace_state) == 0


@given(st.text(max_size=80), st.one_of(st.none(), st.text(max_size=80)))
def test_any_text_is_read_without_an_error(traceparent: str, tracestate: str | None) -> None:
    tracecontext.parse(traceparent, tracestate)


@given(
    st.integers(1, 2**128 - 1),
    st.integers(1, 2**64 - 1),
    st.integers(0, 255),
    st.sampled_from(["", " ", "\t "]),
)
def test_every_valid_version_00_traceparent_is_read_back_exactly(
    trace_id: int, span_id: int, flags: int, padding: str
) -> None:
    header = f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
    assert tracecontext.parse_traceparent(padding + header + padding) == (trace_id, span_id, flags)
