"""The demo's in-process OTLP receiver with what only tests need: a record of every request,
waiting for spans, and fault switches (answer an error, hang) to play a broken collector."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedSpan


@dataclass(frozen=True)
class ReceivedRequest:
    """One POST the receiver got (whatever it answered)."""

    path: str
    headers: dict[str, str]
    status: int
    span_count: int


class ControlledReceiver(OTLPReceiver):
    """:class:`OTLPReceiver` plus :meth:`wait_for`, :meth:`requests` and fault switches:
    :meth:`fail_with` (answer an HTTP error), :meth:`hang` (hold requests without answering
    until :meth:`heal`/:meth:`stop`, then drop the connection), each optionally for the next
    ``count`` requests only."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self._requests: list[ReceivedRequest] = []
        self._fail_status: int | None = None
        self._fail_count: int | None = None
        self._hang_count: int | None = None
        self._hanging = False
        self._release = threading.Event()

    def stop(self) -> None:
        self.heal()
        super().stop()

    # -- results
    def requests(self) -> list[ReceivedRequest]:
        with self.lock:
            return list(self._requests)

    @property
    def requests_received(self) -> int:
        """All POSTs so far, including the ones answered with an error or hung."""
        with self.lock:
            return len(self._requests)

    def clear(self) -> None:
        with self.lock:
            self._spans.clear()
            self._requests.clear()

    def wait_for(
        self,
        predicate_or_count: int | Callable[[list[ReceivedSpan]], object],
        timeout: float = 10.0,
    ) -> list[ReceivedSpan]:
        """Wait until ``count`` spans arrived or ``predicate(spans)`` is true; the spans."""
        if isinstance(predicate_or_count, int):
            count = predicate_or_count
            predicate: Callable[[list[ReceivedSpan]], object] = lambda s: len(s) >= count  # noqa: E731
            what = f"{count} span(s)"
        else:
            predicate = predicate_or_count
            what = getattr(predicate, "__name__", "predicate")
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate(spans := list(self._spans)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"OTLPReceiver: {what} not satisfied after {timeout}s; got "
                        f"{len(spans)} span(s) {[s.name for s in spans]} in "
                        f"{len(self._requests)} request(s)"
                    )
                self.lock.wait(min(remaining, 0.5))
            return spans

    # -- fault switches
    def fail_with(self, status: int = 503, count: int | None = None) -> None:
        """Answer ``status`` (no spans kept) to every POST, or to the next ``count`` ones."""
        with self.lock:
            self._fail_status, self._fail_count = status, count

    def hang(self, count: int | None = None) -> None:
        """Hold POSTs without answering (all, or the next ``count``) until heal()/stop()."""
        with self.lock:
            self._release.clear()
            self._hanging, self._hang_count = True, count

    def heal(self) -> None:
        """Back to normal: answer 200 again and release the hung requests."""
        with self.lock:
            self._fail_status = self._fail_count = None
            self._hanging, self._hang_count = False, None
            self._release.set()
            self.lock.notify_all()

    # -- called by the handler threads
    def _fault(self) -> tuple[bool, int | None]:
        """(hang this request, the error status to answer), counting the switches down."""
        with self.lock:
            hang = self._hanging
            if hang and self._hang_count is not None:
                self._hang_count -= 1
                self._hanging = self._hang_count > 0
            fail = None if hang else self._fail_status
            if fail is not None and self._fail_count is not None:
                self._fail_count -= 1
                if self._fail_count <= 0:
                    self._fail_status = self._fail_count = None
        return hang, fail

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        hang, fail = self._fault()
        spans: list[ReceivedSpan] = []
        if hang:
            self._release.wait(120)
            status = 0
        elif fail is not None:
            status = fail
        else:
            status, spans = self.decode(path, headers, body)
        with self.lock:
            self._requests.append(ReceivedRequest(path, headers, status, len(spans)))
            self._spans.extend(spans)
            self.lock.notify_all()
        return status
