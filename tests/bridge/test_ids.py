import uuid

import pytest
from osprofiler import _utils as osprofiler_utils

from zaqar_otel.bridge import ids


def test_trace_id_is_the_base_uuid():
    base = str(uuid.uuid4())
    assert ids.trace_hex(base) == base.replace("-", "")


def test_span_id_matches_osprofiler_shorten_id():
    element = str(uuid.uuid4())
    assert ids.span_id(element) == osprofiler_utils.shorten_id(element)


def test_span_id_is_deterministic_across_calls():
    element = str(uuid.uuid4())
    assert ids.span_hex(element) == ids.span_hex(element)


def test_non_uuid_ids_hash_to_valid_ids():
    assert ids.trace_id("not-a-uuid") == ids.trace_id("not-a-uuid") != 0
    assert 0 < ids.span_id("not-a-uuid") < 2**64


def test_zero_low_bits_never_give_an_invalid_span_id():
    element = str(
        uuid.UUID(int=(uuid.UUID("12345678-1234-4234-8234-567812345678").int >> 64) << 64)
    )
    assert ids.span_id(element) != 0


@pytest.mark.parametrize(
    "text",
    ["6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b", "6F1C2A9E3B4D4E5F8A7B9C0D1E2F3A4B"],
)
def test_normalize_accepts_both_forms(text):
    assert ids.normalize_trace_id(text) == "6f1c2a9e3b4d4e5f8a7b9c0d1e2f3a4b"


@pytest.mark.parametrize("text", ["", "xyz", "6f1c2a9e3b4d", "6f1c2a9e3b4d4e5f8a7b9c0d1e2f3a4bff"])
def test_normalize_rejects_other_text(text):
    with pytest.raises(ValueError, match="not a trace id"):
        ids.normalize_trace_id(text)


def test_uuid_form_round_trip():
    base = str(uuid.uuid4())
    assert ids.uuid_form(ids.trace_hex(base)) == base
