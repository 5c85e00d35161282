"""Waiting for a condition instead of sleeping: a log line, or a control trace.

"Nothing arrived" is only proven by something that did arrive along the same path after
it: a *control* trace, made after the traces that must not exist, exported the same way.
Once the control is in Jaeger, whatever was exported before it is there too (exporters
and Jaeger's pipeline keep the order), so an absent trace is absent for good::

    with zs.profiled("wrong-key") as bad: ...       # must not be traced
    with zs.profiled() as control: ...              # must be, by the same server
    assert_absent_after_control(jaeger, control, [bad])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from zaqar_otel.bridge import ids

T = TypeVar("T")


def wait_until(check: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    """Call ``check`` every 0.1 s until it returns something true; that value.
    ``TimeoutError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g} s: {what}")
        time.sleep(0.1)
    return result


class _Logs(Protocol):
    def log_since(self, offset: int) -> str: ...


def wait_for_log(server: _Logs, text: str, offset: int = 0, timeout: float = 30.0) -> str:
    """Wait until ``server`` logged ``text`` after byte ``offset`` (see ``log_size()``);
    the log from there."""
    return wait_until(lambda: text in server.log_since(offset) and server.log_since(offset),
                      f"log line {text!r}", timeout)  # fmt: skip


class _Traces(Protocol):
    def get_trace(self, trace_hex: str) -> dict[str, Any] | None: ...


def wait_for_control(jaeger: _Traces, control: str, timeout: float = 30.0) -> None:
    """Wait for trace ``control`` (an OSProfiler base id or 32 hex digits) in Jaeger: then
    everything exported the same way before it is there too."""
    wait_until(lambda: jaeger.get_trace(ids.trace_hex(control)), f"control trace {control}",
               timeout)  # fmt: skip


def assert_absent_after_control(
    jaeger: _Traces, control: str, absent: Iterable[str], timeout: float = 30.0
) -> None:
    """Wait for trace ``control`` (see :func:`wait_for_control`), then assert that none of
    ``absent`` (made before it, the same way) is there."""
    wait_for_control(jaeger, control, timeout)
    present = [trace for trace in absent if jaeger.get_trace(ids.trace_hex(trace)) is not None]
    assert not present, f"traced, but should not be: {present}"
