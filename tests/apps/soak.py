"""Concurrency soak on a real in-process Zaqar WSGI app (Redis + SQL stores).

python -m tests.apps.soak --redis URL --sql URL [--threads 16] [--rounds 5] [--per-round 20]

Each thread makes signed requests (create its queue, then post + list) in
rounds; after each round every trace is checked (one SERVER root named by
the route, every span connected to it, nothing else in it), the exported
spans are dropped, and the Python heap (tracemalloc) and RSS are sampled.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import tracemalloc
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from osprofiler import web
from webob import Request

import zaqar_otel
from zaqar_otel.bridge import ids
from zaqar_otel.lookup.client import profiled

KEY = "soak-secret"
CLIENT_ID = "3381af92-2b9e-11e3-b191-71861300734c"


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def write_conf(redis_url: str, sql_url: str) -> str:
    path = Path(tempfile.mkdtemp(prefix="soak-")) / "zaqar.conf"
    path.write_text(
        "[DEFAULT]\nauth_strategy =\nunreliable = true\n"
        "[drivers]\nmessage_store = redis\nmanagement_store = sqlalchemy\n"
        f"[drivers:message_store:redis]\nuri = {redis_url}?socket_timeout=10\n"
        f"[drivers:management_store:sqlalchemy]\nuri = {sql_url}\n"
        f"[profiler]\nenabled = true\nhmac_keys = {KEY}\nconnection_string = otel://\n"
        "trace_wsgi_transport = true\ntrace_message_store = true\n"
        "trace_management_store = true\ntrace_redis = true\ntrace_sqlalchemy = true\n"
    )
    return str(path)


def signed(method: str, path: str, body: Any = None) -> tuple[Request, str]:
    with profiled(KEY) as base_id:
        headers = {"Client-ID": CLIENT_ID, "X-Project-ID": "soak", **web.get_trace_id_headers()}
    request = Request.blank(path, method=method, headers=headers)
    if body is not None:
        request.body = json.dumps(body).encode()
        request.content_type = "application/json"
    return request, base_id


# spans each kind of request must contain besides its root
REQUIRED = {
    "POST /v2/queues/{queue_name}/messages": ("MessageController.post", "redis"),
    "GET /v2/queues/{queue_name}/messages": ("MessageController.list", "redis"),
    "PUT /v2/queues/{queue_name}": ("Queue.create", "sqlite"),
}


def check_trace(spans: list[ReadableSpan], expected_root: str) -> str | None:
    names = {s.name for s in spans}
    systems = {str((s.attributes or {}).get("db.system.name")) for s in spans}
    function, system = REQUIRED[expected_root]
    if not any(n.endswith(function) for n in names):
        return f"no {function} span in {sorted(names)}"
    if system not in systems:
        return f"no {system} span"
    roots = [s for s in spans if s.parent is None]
    if len(roots) != 1:
        return f"{len(roots)} roots"
    if roots[0].name != expected_root:
        return f"root {roots[0].name!r}"
    by_id = {s.context.span_id: s for s in spans}
    for span in spans:
        seen, chain, start = 0, [], span
        while span.parent is not None:
            parent = by_id.get(span.parent.span_id)
            if parent is None:
                return f"{span.name!r} has a parent outside the trace"
            span, seen = parent, seen + 1
            chain.append(span.name)
            if seen > 50:
                return "cycle"
        # a listing's Redis commands run while Zaqar consumes its generator: under it
        lazy = expected_root.startswith("GET") and (start.attributes or {}).get("db.system")
        if lazy == "redis" and not any(n.endswith(function) for n in chain):
            return f"{start.name!r} is not under {function}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--sql", required=True)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=20)
    args = parser.parse_args()

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    from zaqar_otel.zaqar import wsgi

    app = wsgi.build([write_conf(args.redis, args.sql)])
    queues = [f"soak-{uuid.uuid4().hex[:10]}" for _ in range(args.threads)]
    expected: dict[str, str] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def call(method: str, path: str, route: str, body: Any = None, status: int = 0) -> None:
        request, base = signed(method, path, body)
        response = request.get_response(app)
        with lock:
            expected[ids.trace_hex(base)] = f"{method} {route}"
            if response.status_int >= 500 or (status and response.status_int != status):
                failures.append(f"{method} {path}: {response.status}")

    def worker(queue: str, count: int) -> None:
        for _ in range(count):
            messages = f"/v2/queues/{queue}/messages"
            route = "/v2/queues/{queue_name}/messages"
            call("POST", messages, route, {"messages": [{"ttl": 300, "body": {"n": 1}}]}, 201)
            call("GET", f"{messages}?echo=true", route)

    def run_round(count: int) -> None:
        threads = [threading.Thread(target=worker, args=(q, count)) for q in queues]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    for queue in queues:
        call("PUT", f"/v2/queues/{queue}", "/v2/queues/{queue_name}", status=201)

    tracemalloc.start(1)
    rss: list[int] = []
    heap: list[int] = []
    requests = len(queues)
    traces_checked = 0
    for _ in range(args.rounds):
        run_round(args.per_round)
        requests += 2 * args.per_round * len(queues)
        grouped: dict[str, list[ReadableSpan]] = defaultdict(list)
        for span in exporter.get_finished_spans():
            grouped[format(span.context.trace_id, "032x")].append(span)
        exporter.clear()
        for trace_id, root_name in expected.items():
            problem = check_trace(grouped.pop(trace_id, []), root_name)
            traces_checked += 1
            if problem:
                failures.append(f"trace {trace_id}: {problem}")
        if grouped:
            failures.append(f"{len(grouped)} unexpected traces")
        expected.clear()
        rss.append(rss_kb())
        heap.append(tracemalloc.get_traced_memory()[0] // 1024)

    status = zaqar_otel.status()
    from zaqar_otel import driver

    assert driver._current is not None
    status["skipped_pending"] = len(driver._current.bridge._skipped)
    print(json.dumps({
        "requests": requests, "traces_checked": traces_checked, "failures": failures[:20],
        "failure_count": len(failures), "rss_kb": rss, "python_heap_kb": heap,
        "status": status,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
