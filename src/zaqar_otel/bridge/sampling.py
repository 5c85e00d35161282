"""Which requests without an HMAC signature are traced: sampling and trusted W3C parents.

By default only requests signed with one of ``[profiler] hmac_keys`` are traced.
Three mutable ``[profiler]`` options open that up, each off by default:

* ``trace_sample_ratio``: that fraction of unsigned requests starts a new trace;
* ``trust_traceparent``: a request whose valid W3C ``traceparent`` has the sampled
  flag continues the caller's trace (its ids: ``zaqar_otel.bridge.ids``);
* ``trace_rate_limit``: at most that many traces a second (per process) are started
  by the two above: a token bucket refilled at that rate that holds one second's
  worth (as Jaeger's rate-limiting sampler), so a burst after a quiet second can
  reach twice the rate within one second, never more on average.

Signed requests never take a token and are never refused.

``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` stand in for an unset
``trace_sample_ratio``: ``always_on`` (1), ``always_off`` (0), ``traceidratio``
(ARG) and their ``parentbased_`` forms, with which a trusted parent that is not
sampled is never sampled here either. An unknown sampler or a bad ARG is logged and
samples nothing. A sampler never makes Zaqar trust ``traceparent``:
``trust_traceparent`` does.

The decision for a new trace is the one of the OTel ``TraceIdRatioBased`` sampler
on a fresh random trace id (its low 64 bits below ``ratio * 2**64``), which becomes
the trace's id (as an OSProfiler base id).

``ADMISSION.decide(traceparent, tracestate)`` decides for one unsigned request
(None: not traced); ``configure(group)`` applies the options, at start and on every
reload, so that a request reads one attribute, not oslo.config.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import SpanContext

from zaqar_otel.bridge import ids, tracecontext
from zaqar_otel.bridge.logs import LOG, log_once

DEFAULT_RATE_LIMIT = 10.0
_MASK64 = (1 << 64) - 1
# OTEL_TRACES_SAMPLER -> (ratio for requests without a trusted parent or None: the ARG,
# whether an unsampled trusted parent vetoes)
ENV_SAMPLERS: dict[str, tuple[float | None, bool]] = {
    "always_on": (1.0, False),
    "always_off": (0.0, False),
    "traceidratio": (None, False),
    "parentbased_always_on": (1.0, True),
    "parentbased_always_off": (0.0, True),
    "parentbased_traceidratio": (None, True),
}


@dataclass(frozen=True)
class Policy:
    """What unsigned requests may start (see the module docstring)."""

    ratio: float = 0.0
    rate_limit: float = 0.0
    trust_traceparent: bool = False
    parent_based: bool = False
    source: str = "default"  # where the ratio came from, for the log
    # computed once (read per request): may anything start at all
    active: bool = field(init=False)
    # a trace id is sampled when its low 64 bits are below this (``TraceIdRatioBased``)
    bound: int = field(init=False)

    def __post_init__(self) -> None:
        active = self.rate_limit > 0 and (self.ratio > 0 or self.trust_traceparent)
        object.__setattr__(self, "active", active)
        object.__setattr__(self, "bound", round(self.ratio * (1 << 64)))


@dataclass(frozen=True)
class Decision:
    """Trace this unsigned request: with these OSProfiler ids, under ``parent`` if set."""

    base_id: str
    parent_id: str | None  # the OSProfiler parent element; None: a new trace
    parent: SpanContext | None  # the trusted caller's span (its tracestate included)
    reason: str  # "sampled" or "traceparent"


def _is_ratio(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 1.0


def env_sampler(environ: Mapping[str, str]) -> tuple[float | None, bool, str]:
    """(ratio or None if no sampler is set, parent-based, description) from the environment.

    An unknown sampler or a bad argument is logged and samples nothing (ratio 0).
    """
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if not name:
        return None, False, ""
    if name not in ENV_SAMPLERS:
        LOG.error(
            "zaqar-otel: OTEL_TRACES_SAMPLER=%s is not a sampler zaqar-otel applies to "
            "unsigned requests (%s): no unsigned request is sampled",
            name,
            ", ".join(ENV_SAMPLERS),
        )
        return 0.0, False, f"OTEL_TRACES_SAMPLER={name} (unknown)"
    ratio, parent_based = ENV_SAMPLERS[name]
    if ratio is not None:
        return ratio, parent_based, f"OTEL_TRACES_SAMPLER={name}"
    arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    try:
        ratio = float(arg)
    except ValueError:
        ratio = math.nan
    if not _is_ratio(ratio):
        LOG.error(
            "zaqar-otel: OTEL_TRACES_SAMPLER_ARG=%r is not a ratio from 0 to 1 (with "
            "OTEL_TRACES_SAMPLER=%s): no unsigned request is sampled",
            arg[:40],
            name,
        )
        return 0.0, parent_based, f"OTEL_TRACES_SAMPLER={name} (bad argument)"
    return ratio, parent_based, f"OTEL_TRACES_SAMPLER={name} OTEL_TRACES_SAMPLER_ARG={ratio}"


def _option(group: Any, name: str, default: Any, invalid: Any) -> Any:
    """``group.name``; ``default`` if it is not registered, ``invalid`` (logged) if its value
    is not valid."""
    try:
        return getattr(group, name)
    except ValueError as error:  # oslo.config's ConfigFileValueError (out of range, ...)
        LOG.error("zaqar-otel: [profiler] %s: %s; using %s instead", name, error, invalid)
        return invalid
    except Exception:  # NoSuchOptError, a missing group
        return default


def read_policy(group: Any, environ: Mapping[str, str] = os.environ) -> Policy:
    """The policy of a ``[profiler]`` group (and the environment); never raises."""
    trust = bool(_option(group, "trust_traceparent", False, False))
    limit = _option(group, "trace_rate_limit", DEFAULT_RATE_LIMIT, DEFAULT_RATE_LIMIT)
    if limit is None or not (math.isfinite(limit) and limit >= 0):
        limit = DEFAULT_RATE_LIMIT
    ratio = _option(group, "trace_sample_ratio", None, 0.0)  # a bad one: sample nothing
    if ratio is not None and _is_ratio(ratio):
        return Policy(float(ratio), float(limit), trust, False, "[profiler] trace_sample_ratio")
    from_env, parent_based, source = env_sampler(environ)
    if from_env is None:
        return Policy(0.0, float(limit), trust, False, "default")
    return Policy(from_env, float(limit), trust, parent_based, source)


class TokenBucket:
    """``take()`` is true at most ``rate`` times a second on average (not thread-safe:
    ``Admission`` holds its lock); holds at most ``max(rate, 1)`` tokens, full at first."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self._tokens = self.capacity
        self._last = clock()

    def set_rate(self, rate: float) -> None:
        """A new rate: the tokens saved are kept (full if the rate was 0: a fresh start)."""
        self._refill()
        was_off = self.rate <= 0
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self._tokens = self.capacity if was_off else min(self._tokens, self.capacity)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self) -> bool:
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Admission:
    """Decides, per unsigned request, whether it is traced; counts what it decided."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = Policy()
        self._lock = threading.Lock()
        self._bucket = TokenBucket(0.0, clock)
        self.started = {"sampled": 0, "traceparent": 0}
        self.rate_limited = 0

    def configure(self, policy: Policy) -> None:
        with self._lock:
            self._bucket.set_rate(policy.rate_limit)
            self.policy = policy

    def decide(self, traceparent: str | None, tracestate: str | None = None) -> Decision | None:
        """The decision for one unsigned request with these headers (None: not traced)."""
        policy = self.policy
        if not policy.active:
            return None
        if policy.trust_traceparent and traceparent:
            fields = tracecontext.parse_traceparent(traceparent)
            if fields is not None and tracecontext.is_sampled(fields[2]):
                return self._admit("traceparent", policy, lambda: _continued(fields, tracestate))
            if fields is not None and policy.parent_based:
                return None  # the trusted caller decided: not sampled
        if policy.ratio <= 0.0:
            return None
        trace_id = random.getrandbits(128) or 1
        if trace_id & _MASK64 >= policy.bound:
            return None
        return self._admit("sampled", policy, lambda: _new_trace(trace_id))

    def _admit(
        self, reason: str, policy: Policy, decision: Callable[[], Decision]
    ) -> Decision | None:
        """``decision()`` if the rate limit allows one more trace (built only then)."""
        with self._lock:
            admitted = self._bucket.take()
            if admitted:
                self.started[reason] += 1
            else:
                self.rate_limited += 1
        if admitted:
            return decision()
        log_once.warning(
            "rate-limited",
            "zaqar-otel: [profiler] trace_rate_limit (%s traces/s) reached: sampled and "
            "traceparent requests beyond it are not traced (logged once)",
            policy.rate_limit,
        )
        return None

    def counters(self) -> dict[str, int]:
        return {
            "started_sampled": self.started["sampled"],
            "started_traceparent": self.started["traceparent"],
            "rate_limited": self.rate_limited,
        }


def _continued(fields: tuple[int, int, int], tracestate: str | None) -> Decision:
    """Continue the trusted caller's trace (``parse_traceparent``'s fields)."""
    trace_id, span_id, _ = fields
    parent = tracecontext.span_context(fields, tracestate)
    element = ids.parent_element_for(trace_id, span_id)
    return Decision(ids.base_id_for(trace_id), element, parent, "traceparent")


def _new_trace(trace_id: int) -> Decision:
    return Decision(ids.base_id_for(trace_id), None, None, "sampled")


ADMISSION = Admission()


def configure(group: Any, environ: Mapping[str, str] = os.environ) -> Policy:
    """Apply the ``[profiler]`` options ``group`` (and the environment) to ``ADMISSION``."""
    policy = read_policy(group, environ)
    previous = ADMISSION.policy
    ADMISSION.configure(policy)
    if previous.active and not policy.active:
        LOG.info("zaqar-otel: unsigned requests: none traced any more")
    if policy.active:
        LOG.info(
            "zaqar-otel: unsigned requests: %.4g sampled (%s), trust_traceparent = %s, "
            "at most %.4g traces/s started by them",
            policy.ratio,
            policy.source,
            policy.trust_traceparent,
            policy.rate_limit,
        )
    return policy
