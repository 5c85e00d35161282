"""Test helpers: W3C ``traceparent`` / ``tracestate`` values for fuzzing, and an oracle for them
written from the W3C text (split on dashes), independent of the parser under test."""

from __future__ import annotations

from hypothesis import strategies as st

HEX = set("0123456789abcdef")
MAX_HEADER = 512  # zaqar-otel reads no longer traceparent (documented)
ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


def _hex(size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789abcdef", min_size=size, max_size=size)


def _id(bits: int) -> st.SearchStrategy[str]:
    return st.integers(1, 2**bits - 1).map(lambda n: format(n, f"0{bits // 4}x"))


def _wrong(size: int) -> st.SearchStrategy[str]:
    return st.one_of(
        _hex(size).map(str.upper),
        st.just("0" * size),
        _hex(size + 1),
        _hex(max(size - 1, 0)),
        ascii_text,
    )


@st.composite
def _field(draw: st.DrawFn, right: st.SearchStrategy[str], size: int) -> str:
    """Right four times in five, else wrong in one of many ways."""
    return draw(right if draw(st.integers(0, 4)) else _wrong(size))


@st.composite
def traceparents(draw: st.DrawFn) -> str:
    """Mostly almost-valid headers (each field right or wrong), some plain garbage."""
    if draw(st.integers(0, 9)) == 0:
        return draw(ascii_text)
    versions = st.sampled_from(["00", "00", "00", "01", "cc", "ff"])
    flags = st.sampled_from(["00", "01", "01", "03", "ff", "fe"])
    fields = [
        draw(_field(versions, 2)),
        draw(_field(_id(128), 32)),
        draw(_field(_id(64), 16)),
        draw(_field(flags, 2)),
    ]
    header = "-".join(fields)
    if not draw(st.integers(0, 3)):
        header += draw(st.sampled_from(["-", "-later-fields", "x", "-" + "y" * 600]))
    pad = draw(st.sampled_from(["", "", " ", "\t"]))
    return pad + header + draw(st.sampled_from(["", "", " ", "\t"]))


tracestates = st.one_of(
    st.none(),
    ascii_text,
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z0-9_\-*/]{0,10}(@[a-z][a-z0-9]{0,5})?", fullmatch=True),
            st.from_regex(r"[!-+\--<>-~]{1,12}", fullmatch=True),
        ),
        min_size=1,
        max_size=8,
        unique_by=lambda pair: pair[0],
    ).map(lambda pairs: ",".join(f"{k}={v}" for k, v in pairs)),
    st.just(",".join(f"k{i}=v" for i in range(33))),  # too many members
    st.integers(513, 3000).map(lambda n: "a=" + "b" * n),
)


def sampled_parent(header: str | None) -> tuple[str, str] | None:
    """(trace id, span id) if ``header`` is a valid traceparent with the sampled flag."""
    if header is None or len(header) > MAX_HEADER:
        return None
    parts = header.strip(" \t").split("-")
    if len(parts) < 4:
        return None
    version, trace_id, span_id, flags = parts[:4]
    for value, size in ((version, 2), (trace_id, 32), (span_id, 16), (flags, 2)):
        if len(value) != size or not set(value) <= HEX:
            return None
    if version == "ff" or (version == "00" and len(parts) != 4):
        return None
    if set(trace_id) == {"0"} or set(span_id) == {"0"}:
        return None
    return (trace_id, span_id) if int(flags, 16) & 1 else None
