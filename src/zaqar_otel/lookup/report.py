"""Spans read back from Jaeger -> the report ``osprofiler trace show`` renders.

OSProfiler's drivers build their report from stored notifications with
``Driver._append_results`` / ``_parse_results``; this feeds them one ``-start``
and one ``-stop`` notification per span, rebuilt from the span, so the JSON,
HTML and DOT outputs get exactly the shape they expect::

    from zaqar_otel.lookup.jaeger import JaegerQuery
    from zaqar_otel.lookup.report import osprofiler_report

    report = osprofiler_report(JaegerQuery("http://jaeger:16686").get_trace(base_id), base_id)
    report["children"][0]["info"]["name"]      # 'requests' (a client span), 'wsgi', ...

How a span becomes an OSProfiler element:

* element id: the span's ``osprofiler.id``; a span that did not come from
  OSProfiler (a DB span) gets the UUID made of the trace id's high 64 bits and
  its span id, so the id rule (span id = low 64 bits of the element id) holds;
* parent: the element id of the parent span; the base id for a root;
* name: ``osprofiler.name``; ``db`` for a database span; else the span name;
* service: the Jaeger service (``zaqar-api``), project its first dash-separated
  word (the bridge names services ``<project>-<service>``), host ``host.name``;
* the notification ``info`` is rebuilt from the attributes (``request``,
  ``requests``, ``db``, ``function``) and carries the span itself under ``otel``;
  an error span gets ``etype``/``message`` at stop, which become ``exception``.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable
from typing import Any
from urllib import parse

from osprofiler.drivers import base as osprofiler_base

from zaqar_otel.bridge.ids import normalize_trace_id, uuid_form
from zaqar_otel.lookup.jaeger import SpanRecord

_EPOCH = datetime.datetime(1970, 1, 1)
_MASK64 = (1 << 64) - 1


def timestamp(microseconds: int) -> str:
    """Microseconds since the epoch -> OSProfiler's timestamp (UTC, ``%Y-%m-%dT%H:%M:%S.%f``)."""
    moment = _EPOCH + datetime.timedelta(microseconds=microseconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")


def element_id(span: SpanRecord) -> str:
    """The OSProfiler element id of a span (its ``osprofiler.id``, else derived from its ids)."""
    known = span.attributes.get("osprofiler.id")
    if isinstance(known, str) and known:
        return known
    return synthetic_id(span.trace_id, span.span_id)


def synthetic_id(trace_hex: str, span_hex: str) -> str:
    """The UUID of the trace's high 64 bits and the span id (whose low 64 bits = the span id)."""
    high = int(normalize_trace_id(trace_hex), 16) & ~_MASK64
    return str(uuid.UUID(int=high | (int(span_hex, 16) & _MASK64)))


def _name(span: SpanRecord) -> str:
    known = span.attributes.get("osprofiler.name")
    if isinstance(known, str) and known:
        return known
    if span.attributes.get("db.system") or span.attributes.get("db.system.name"):
        return "db"
    # OSProfiler splits notification names at '-': keep the name in one piece.
    return (span.name or "span").replace("-", "_")


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _start_info(span: SpanRecord) -> dict[str, Any]:
    attrs = span.attributes
    info: dict[str, Any] = {}
    if span.host:
        info["host"] = span.host
    method = attrs.get("http.request.method")
    if method and span.kind == "server":
        info["request"] = {
            "method": _text(method),
            "path": _text(attrs.get("url.path")),
            "query": _text(attrs.get("url.query")),
            "scheme": _text(attrs.get("url.scheme")),
        }
        if attrs.get("http.route"):
            info["request"]["route"] = _text(attrs["http.route"])
    elif method and span.kind == "client":
        url = parse.urlsplit(_text(attrs.get("url.full")))
        info["requests"] = {
            "method": _text(method),
            "scheme": url.scheme,
            "hostname": _text(attrs.get("server.address")) or (url.hostname or ""),
            "port": attrs.get("server.port") or url.port,
            "path": url.path,
            "query": url.query,
        }
    statement = attrs.get("db.query.text") or attrs.get("db.statement")
    if statement is not None:
        info["db"] = {"statement": _text(statement), "params": {}}
    function = attrs.get("code.function.name")
    if function:
        info["function"] = {
            "name": _text(function),
            "args": _text(attrs.get("osprofiler.function.args")),
            "kwargs": _text(attrs.get("osprofiler.function.kwargs")),
        }
    info["otel"] = {
        "span_name": span.name,
        "span_id": span.span_id,
        "parent_span_id": span.parent_id,
        "kind": span.kind,
        "attributes": dict(attrs),
    }
    return info


def _stop_info(span: SpanRecord) -> dict[str, Any]:
    info: dict[str, Any] = {}
    status = span.attributes.get("http.response.status_code")
    if status is not None:
        info["requests" if span.kind == "client" else "response"] = {"status_code": status}
    if span.error:
        message = span.error_message or "error"
        etype, _, rest = message.partition(":")
        if rest and etype.replace(".", "").replace("_", "").isalnum():
            info["etype"], info["message"] = etype, rest.strip()
        else:
            info["etype"], info["message"] = "Error", message
    return info


def osprofiler_report(spans: Iterable[SpanRecord], base_id: str) -> dict[str, Any]:
    """The report OSProfiler's CLI renders (``info``/``children``/``stats``) for these spans.

    ``base_id`` in either form; an empty span list gives the empty report
    (``children == []``, which the CLI reports as "not found").
    """
    items = list(spans)
    base = uuid_form(base_id)
    collector = osprofiler_base.Driver("otel://")  # only for OSProfiler's own tree building
    by_span = {span.span_id: span for span in items}
    for span in items:
        element = element_id(span)
        parent = by_span.get(span.parent_id)
        if parent is not None:
            parent_element = element_id(parent)
        elif span.parent_id:
            parent_element = synthetic_id(span.trace_id, span.parent_id)  # not (yet) in Jaeger
        else:
            parent_element = base
        name = _name(span)
        service = span.service or None
        project = service.split("-", 1)[0] if service and "-" in service else service
        common = {
            "base_id": base,
            "trace_id": element,
            "parent_id": parent_element,
            "project": project,
            "service": service,
        }
        for suffix, moment, info in (
            ("start", span.start_us, _start_info(span)),
            ("stop", span.start_us + span.duration_us, _stop_info(span)),
        ):
            stamp = timestamp(moment)
            event = f"{name}-{suffix}"
            payload = {"name": event, "timestamp": stamp, "info": info, **common}
            collector._append_results(
                element,
                parent_element,
                event,
                project,
                service,
                span.host or None,
                stamp,
                raw_payload=payload,
            )
    return collector._parse_results()
