"""Read traces back from Jaeger's query API and show them as a tree in the terminal.

::

    from zaqar_otel.lookup.jaeger import JaegerQuery, render_tree, trace_url

    query = JaegerQuery("http://jaeger:16686")
    spans = query.get_trace("2794a34f-4eba-41f5-9cae-df85dc466f35")  # or 2794a34f4eba41f5...
    print(render_tree(spans))
    print(trace_url("http://jaeger:16686", "2794a34f-4eba-41f5-9cae-df85dc466f35"))

Only the stdlib HTTP client is used. Traces are read from ``/api/traces/{id}``
(the v1-style JSON that Jaeger v1 and v2 both serve), services from
``/api/services`` and searches from ``/api/traces?service=...``. Either id form
is accepted: the OSProfiler UUID or the 32 hex digits Jaeger shows.

Errors are ``JaegerError`` subclasses whose ``str()`` is one line:
``TraceNotFound`` (Jaeger answered, it has no such trace), ``JaegerUnreachable``
(no answer: refused, timeout, DNS); a malformed id is a ``ValueError``.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib import parse

from zaqar_otel.bridge.ids import normalize_trace_id

DEFAULT_TIMEOUT = 5.0
ERROR_MARK = "[ERROR]"


class JaegerError(Exception):
    """Jaeger's query API could not give the answer asked for (one-line message)."""


class TraceNotFound(JaegerError):
    """Jaeger answered and has no trace with this id."""


class JaegerUnreachable(JaegerError):
    """No answer from Jaeger's query API (connection refused, timeout, bad host)."""


@dataclass(frozen=True)
class SpanRecord:
    """One span as Jaeger returns it (ids in hex, times in microseconds since the epoch)."""

    trace_id: str
    span_id: str
    parent_id: str  # '' for a root
    name: str
    service: str
    kind: str  # server, client, internal, producer, consumer
    start_us: int
    duration_us: int
    error: bool
    attributes: dict[str, object] = field(default_factory=dict)
    error_message: str = ""  # otel.status_description, or the exception event's type: message
    host: str = ""  # the process's host.name / hostname tag, if any
    links: tuple[tuple[str, str], ...] = ()  # (trace id, span id) of each span link

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict of every field."""
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "name": self.name,
            "service": self.service,
            "kind": self.kind,
            "start_us": self.start_us,
            "duration_us": self.duration_us,
            "error": self.error,
            "error_message": self.error_message,
            "host": self.host,
            "attributes": dict(self.attributes),
            "links": [{"trace_id": t, "span_id": s} for t, s in self.links],
        }


def _tags(items: Any) -> dict[str, object]:
    result: dict[str, object] = {}
    for item in items or []:
        if isinstance(item, Mapping) and isinstance(item.get("key"), str):
            result[item["key"]] = item.get("value")
    return result


def _error_message(tags: Mapping[str, object], logs: Any) -> str:
    description = tags.get("otel.status_description")
    if isinstance(description, str) and description:
        return description
    for log in logs or []:
        fields = _tags(log.get("fields") if isinstance(log, Mapping) else None)
        if fields.get("event") == "exception":
            etype, message = fields.get("exception.type"), fields.get("exception.message")
            return ": ".join(str(part) for part in (etype, message) if part)
    return ""


def spans_from_v1(answer: Mapping[str, Any]) -> list[SpanRecord]:
    """The spans of a ``/api/traces`` answer (``{"data": [trace, ...]}``), every trace."""
    records: list[SpanRecord] = []
    for trace in answer.get("data") or []:
        processes = trace.get("processes") or {}
        for span in trace.get("spans") or []:
            tags = _tags(span.get("tags"))
            process = processes.get(span.get("processID")) or {}
            process_tags = _tags(process.get("tags"))
            parent, links = "", []
            for ref in span.get("references") or []:
                ref_trace, ref_span = str(ref.get("traceID") or ""), str(ref.get("spanID") or "")
                if not parent and ref.get("refType") == "CHILD_OF" and ref_trace == span["traceID"]:
                    parent = ref_span
                elif ref_trace and ref_span:  # span links (FOLLOWS_FROM)
                    links.append((ref_trace.rjust(32, "0"), ref_span.rjust(16, "0")))
            status = tags.get("otel.status_code")
            error = tags.get("error") in (True, "true") or status == "ERROR"
            host = tags.get("host.name") or process_tags.get("host.name")
            host = host or process_tags.get("hostname") or ""
            records.append(
                SpanRecord(
                    trace_id=str(span["traceID"]).rjust(32, "0"),
                    span_id=str(span["spanID"]).rjust(16, "0"),
                    parent_id=parent.rjust(16, "0") if parent else "",
                    name=str(span.get("operationName") or ""),
                    service=str(process.get("serviceName") or ""),
                    kind=str(tags.get("span.kind") or "internal"),
                    start_us=int(span.get("startTime") or 0),
                    duration_us=int(span.get("duration") or 0),
                    error=bool(error),
                    attributes=tags,
                    error_message=_error_message(tags, span.get("logs")) if error else "",
                    host=str(host),
                    links=tuple(links),
                )
            )
    return records


class JaegerQuery:
    """A client of Jaeger's HTTP query API (the port of the UI, 16686 by default)."""

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        parsed = parse.urlparse(base_url.strip())
        try:
            parsed.port  # noqa: B018 (raises ValueError for a bad port)
        except ValueError:
            parsed = parse.urlparse("")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{base_url!r} is not a Jaeger query URL (expected http://HOST:16686)")
        self.base_url = base_url.strip().rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> tuple[int, Any]:
        url = f"{self.base_url}{path}"
        if params:
            url += "?" + parse.urlencode(params)
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, refused
            reason = getattr(error, "reason", error)
            raise JaegerUnreachable(
                f"cannot reach Jaeger's query API at {self.base_url}: {reason}"
            ) from None
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            raise JaegerError(
                f"{self.base_url}{path} answered HTTP {status} with something that is not "
                "JSON: is this Jaeger's query API (the UI port, 16686)?"
            ) from None

    @staticmethod
    def _errors(body: Any) -> str:
        errors = body.get("errors") if isinstance(body, Mapping) else None
        messages = [str(e.get("msg")) for e in errors or [] if isinstance(e, Mapping)]
        return "; ".join(messages)

    def get_trace(self, trace_id: str) -> list[SpanRecord]:
        """Every span of the trace (UUID or 32-hex id); raises if there is none."""
        trace_hex = normalize_trace_id(trace_id)
        status, body = self._get(f"/api/traces/{trace_hex}")
        if status == 404 and isinstance(body, Mapping) and "errors" in body:
            raise TraceNotFound(f"trace {trace_hex} not found in Jaeger at {self.base_url}")
        if status == 404:  # a 404 that is not Jaeger's: the wrong server or port
            raise JaegerError(
                f"{self.base_url} has no /api/traces: is this Jaeger's query API "
                "(the UI port, 16686)?"
            )
        if status != 200 or not isinstance(body, Mapping):
            detail = self._errors(body) or "no detail"
            raise JaegerError(
                f"Jaeger at {self.base_url} answered HTTP {status} for trace {trace_hex}: {detail}"
            )
        spans = spans_from_v1(body)
        if not spans:
            raise TraceNotFound(f"trace {trace_hex} not found in Jaeger at {self.base_url}")
        return spans

    def wait_for_trace(
        self, trace_id: str, min_spans: int = 1, timeout: float = 20.0
    ) -> list[SpanRecord]:
        """Poll until the trace has ``min_spans`` spans (spans arrive in batches).

        Returns as soon as it has them; at the deadline returns what arrived if
        anything did, else raises ``TraceNotFound``. ``JaegerUnreachable`` and a
        bad id are raised at once.
        """
        normalize_trace_id(trace_id)  # a bad id fails now, not after the timeout
        deadline = time.monotonic() + timeout
        spans: list[SpanRecord] = []
        while True:
            try:
                spans = self.get_trace(trace_id)
            except TraceNotFound:
                if time.monotonic() >= deadline:
                    raise
            else:
                if len(spans) >= min_spans or time.monotonic() >= deadline:
                    return spans
            time.sleep(0.2)

    def services(self) -> list[str]:
        """The service names Jaeger knows (``/api/services``)."""
        status, body = self._get("/api/services")
        if status != 200 or not isinstance(body, Mapping):
            raise JaegerError(f"Jaeger at {self.base_url} answered HTTP {status} for /api/services")
        return sorted(str(name) for name in body.get("data") or [])

    def find_traces(
        self,
        service: str,
        limit: int = 100,
        lookback_s: float = 7 * 24 * 3600,
        tags: Mapping[str, str] | None = None,
        start_us: int | None = None,
    ) -> dict[str, list[SpanRecord]]:
        """Traces with a span of ``service`` in the last ``lookback_s`` seconds (or since
        ``start_us``), whose span has all ``tags`` (Jaeger's tag search): {hex id: spans}."""
        end = int(time.time() * 1_000_000)
        start = end - int(lookback_s * 1_000_000) if start_us is None else start_us
        params = {
            "service": service,
            "limit": str(limit),
            "start": str(start),
            "end": str(end),
        }
        if tags:
            params["tags"] = json.dumps(dict(tags))
        status, body = self._get("/api/traces", params)
        if status != 200 or not isinstance(body, Mapping):
            detail = self._errors(body) or "no detail"
            raise JaegerError(
                f"Jaeger at {self.base_url} answered HTTP {status} searching {service!r}: {detail}"
            )
        traces: dict[str, list[SpanRecord]] = {}
        for span in spans_from_v1(body):
            traces.setdefault(span.trace_id, []).append(span)
        return traces


def trace_url(ui_base: str, trace_id: str) -> str:
    """The Jaeger UI page of a trace: ``{ui}/trace/{32 hex}`` (either id form accepted)."""
    return f"{ui_base.strip().rstrip('/')}/trace/{normalize_trace_id(trace_id)}"


def tree_order(spans: Iterable[SpanRecord]) -> list[tuple[int, bool, SpanRecord]]:
    """(depth, is last child, span) in depth-first order, children sorted by start.

    A span whose parent is not in the list (or in a cycle) is shown as one more root.
    """
    items = list(spans)
    by_id = {span.span_id: span for span in items}
    children: dict[str, list[SpanRecord]] = {}
    roots: list[SpanRecord] = []
    for span in items:
        if span.parent_id and span.parent_id in by_id and span.parent_id != span.span_id:
            children.setdefault(span.parent_id, []).append(span)
        else:
            roots.append(span)

    def key(span: SpanRecord) -> tuple[int, int, str]:
        return (span.start_us, -span.duration_us, span.span_id)

    order: list[tuple[int, bool, SpanRecord]] = []
    seen: set[int] = set()

    def walk(start: list[SpanRecord]) -> None:
        stack = [(0, index == len(start) - 1, span) for index, span in enumerate(start)][::-1]
        while stack:
            depth, last, span = stack.pop()
            if id(span) in seen:
                continue
            seen.add(id(span))
            order.append((depth, last, span))
            kids = sorted(children.get(span.span_id, []), key=key)
            for index in range(len(kids) - 1, -1, -1):
                stack.append((depth + 1, index == len(kids) - 1, kids[index]))

    walk(sorted(roots, key=key))
    rest = [span for span in items if id(span) not in seen]  # cycles: no way in from a root
    while rest:
        walk(sorted(rest, key=key)[:1])
        rest = [span for span in rest if id(span) not in seen]
    return order


def render_tree(spans: list[SpanRecord]) -> str:
    """One line per span: tree-indented name, service, kind, duration, offset, error mark.

    ::

        PUT                             zaqar-client  client    16.37 ms  +0.00 ms
        └─ PUT /v2/queues/{queue_name}  zaqar-api     server    12.64 ms  +1.50 ms
           └─ ZADD                      zaqar-api     client     1.86 ms  +4.26 ms  [ERROR] ...
    """
    if not spans:
        return ""
    origin = min(span.start_us for span in spans)
    rows: list[tuple[str, SpanRecord]] = []
    guides: list[bool] = []  # per depth: does the ancestor at that depth have later siblings?
    for depth, last, span in tree_order(spans):
        del guides[depth:]
        if depth == 0:
            prefix = ""
        else:
            prefix = "".join("│  " if more else "   " for more in guides[1:depth])
            prefix += "└─ " if last else "├─ "
        guides.append(not last)
        rows.append((prefix + span.name, span))
    name_width = min(max(len(text) for text, _ in rows), 80)
    service_width = max(len(span.service) for _, span in rows)
    lines = []
    for text, span in rows:
        line = (
            f"{text:<{name_width}}  {span.service:<{service_width}}  {span.kind:<8}"
            f" {span.duration_us / 1000:9.2f} ms  +{(span.start_us - origin) / 1000:.2f} ms"
        )
        if span.error:
            message = " ".join(span.error_message.split())
            if len(message) > 80:
                message = message[:77] + "..."
            line += f"  {ERROR_MARK} {message}".rstrip()
        lines.append(line)
    return "\n".join(lines)
