"""OSProfiler ids <-> OpenTelemetry ids.

The rule (documented in README, "How ids are mapped"):

* trace id = the OSProfiler base id, a UUID read as a 128-bit number, so the
  32 hex digits Jaeger shows are the UUID without its dashes;
* span id = the low 64 bits of the OSProfiler element id (its ``trace_id``
  field), the same rule as ``osprofiler._utils.shorten_id``; so a client and a
  server that never talk to each other compute the same parent span id.

An id that is not a UUID is hashed (SHA-256) instead of dropped, and an all-zero
id (invalid in OTel) is replaced by a hash as well: the mapping stays total and
deterministic.
"""

from __future__ import annotations

import hashlib
import re
import uuid

_MASK64 = (1 << 64) - 1
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")


def _hashed(text: str, bits: int) -> int:
    digest = hashlib.sha256(text.encode("utf-8", "replace")).digest()
    return int.from_bytes(digest[: bits // 8], "big") or 1


def _uuid_int(value: str) -> int | None:
    """``uuid.UUID(value).int`` (same forms accepted), without building a UUID object."""
    try:
        digits = value.replace("urn:", "").replace("uuid:", "").strip("{}").replace("-", "")
        if len(digits) != 32:
            return None
        return int(digits, 16)
    except (ValueError, TypeError, AttributeError):
        return None


def trace_id(base_id: str) -> int:
    """OTel trace id (128 bits) for an OSProfiler base id."""
    number = _uuid_int(base_id)
    return number if number else _hashed(str(base_id), 128)


def span_id(element_id: str) -> int:
    """OTel span id (64 bits) for an OSProfiler element id."""
    number = _uuid_int(element_id)
    low = number & _MASK64 if number is not None else 0
    return low if low else _hashed(str(element_id), 64)


def trace_hex(base_id: str) -> str:
    """The 32-hex trace id Jaeger shows for an OSProfiler base id."""
    return format(trace_id(base_id), "032x")


def span_hex(element_id: str) -> str:
    """The 16-hex span id Jaeger shows for an OSProfiler element id."""
    return format(span_id(element_id), "016x")


def normalize_trace_id(text: str) -> str:
    """Either id form (UUID or 32 hex digits) -> 32 lower-case hex digits.

    Raises ``ValueError`` with a readable message for anything else.
    """
    candidate = text.strip()
    if _HEX32.match(candidate):
        return candidate.lower()
    number = _uuid_int(candidate)
    if number is None:
        raise ValueError(
            f"{text!r} is not a trace id: expected a UUID "
            "(OSProfiler form) or 32 hex digits (Jaeger form)"
        )
    return format(number, "032x")


def uuid_form(trace_hex: str) -> str:
    """32 hex digits -> the OSProfiler UUID form."""
    return str(uuid.UUID(hex=normalize_trace_id(trace_hex)))
