"""The demo: Zaqar with the bridge, local backends and Jaeger, five profiled calls, five trees.

``nox -s demo`` runs it (``python -m zaqar_otel.demo``). It starts, on 127.0.0.1:

* Redis (``redis-server``; the message store) and a SQLite management store,
* Jaeger v2 (``~/.cache/zaqar-otel/bin/jaeger``, built by ``.ci/build-go-tools jaeger``),
* ``zaqar-otel-server`` with every ``[profiler]`` trace flag on, exporting OTLP to Jaeger,

then makes five profiled python-zaqarclient calls (create queue, post, list, claim, delete),
prints each trace as a tree with its Jaeger query URL, and stops what it started (also on
Ctrl-C). Without Jaeger (no binary and no Go toolchain to build it, or ``--no-jaeger``) it
says what is missing and shows the traces from an in-process OTLP receiver instead. When it
can build Jaeger (``--build-script``, Go installed) it starts the build in the background,
shows the trees from the receiver meanwhile, then waits for the build and sends the same
traces into the new Jaeger. Without ``redis-server`` it says what to install and exits 1.

Options::

    python -m zaqar_otel.demo                 # the whole demo
    python -m zaqar_otel.demo --keep          # leave the servers up until Ctrl-C
    python -m zaqar_otel.demo --no-jaeger     # the in-process receiver instead of Jaeger
    python -m zaqar_otel.demo --build-script .ci/build-go-tools   # build Jaeger if missing
                                              # (in the background: the trees come first)
    python -m zaqar_otel.demo --zaqar http://zaqar:8888 --jaeger http://jaeger:16686 \\
        --key SECRET                          # only the workload, against running servers
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from zaqar_otel.demo import process, stack
from zaqar_otel.demo.build import GO_MINIMUM, BackgroundBuild
from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedSpan, RelayReceiver
from zaqar_otel.lookup.client import profiled, zaqar_client
from zaqar_otel.lookup.jaeger import JaegerError, JaegerQuery, SpanRecord, render_tree, trace_url

DEFAULT_KEY = "zaqar-otel-demo"
# the request span's name for each call of the workload, in order
OPERATIONS = (
    ("create queue", "PUT /v2/queues/{queue_name}"),
    ("post 3 messages", "POST /v2/queues/{queue_name}/messages"),
    ("list messages", "GET /v2/queues/{queue_name}/messages"),
    ("claim 2 messages", "POST /v2/queues/{queue_name}/claims"),
    ("delete a claimed message", "DELETE /v2/queues/{queue_name}/messages/{message_id}"),
)
UI_NOTE = (
    "note: the Jaeger built by .ci/build-go-tools serves a placeholder page instead of the UI "
    "(its UI assets are not in the Go module); the query API URLs above have the whole "
    "trace. For the real UI: docker compose up, then http://localhost:16686"
)


class DemoError(Exception):
    """Ends the demo with a one-line message and exit code 1 (no traceback)."""


def say(message: str, out: TextIO | None = None) -> None:
    """One progress line, flushed at once."""
    stream = out or sys.stdout
    stream.write(f"==> {message}\n")
    stream.flush()


# --------------------------------------------------------------------------- Jaeger binary


@dataclass
class JaegerChoice:
    """The Jaeger binary, or why there is none (and the build that makes it, if one runs)."""

    binary: str | None
    why_not: str = ""
    build: BackgroundBuild | None = None


def locate_jaeger(no_jaeger: bool, build_script: Path | None) -> JaegerChoice:
    """The Jaeger binary if it is there; else the reason, and a background build of it
    when ``build_script`` is given and Go is installed."""
    if no_jaeger:
        return JaegerChoice(None, "Jaeger switched off (--no-jaeger)")
    try:
        return JaegerChoice(process.find_binary("jaeger", hint=stack.JAEGER_HINT, what="Jaeger v2"))
    except process.Missing as missing:
        reason = str(missing)
    if build_script is None:
        return JaegerChoice(None, reason)
    if process.find_go() is None:
        return JaegerChoice(
            None,
            f"Jaeger v2 is not in {process.tools_dir()} and the Go toolchain (go >= "
            f"{GO_MINIMUM}) to build it is missing: install Go, then run .ci/build-go-tools "
            "jaeger",
        )
    build = BackgroundBuild(build_script, "jaeger").start()
    return JaegerChoice(
        None,
        f"Jaeger v2 is not built yet: building it in the background "
        f"(several minutes the first time; log {build.log_path})",
        build,
    )


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Call:
    """One profiled client call: what it did, the request span expected as root, its trace."""

    label: str
    root_name: str
    base_id: str

    @property
    def trace_hex(self) -> str:
        return uuid.UUID(self.base_id).hex


def run_workload(url: str, key: str) -> tuple[str, list[Call]]:
    """Create a fresh queue, post 3, list, claim 2, delete one: (queue name, the 5 calls)."""
    cli = zaqar_client(url, "demo-project")
    name = f"demo-{uuid.uuid4().hex[:8]}"
    bases: list[str] = []
    with profiled(key) as base:
        queue = cli.queue(name, force_create=True)
    bases.append(base)
    with profiled(key) as base:
        queue.post([{"body": {"order": n}, "ttl": 300} for n in range(3)])
    bases.append(base)
    with profiled(key) as base:
        listed = list(queue.messages(echo=True))
    bases.append(base)
    with profiled(key) as base:
        claimed = list(queue.claim(ttl=60, grace=60, limit=2))
    bases.append(base)
    if len(listed) != 3 or len(claimed) != 2:
        raise DemoError(f"Zaqar listed {len(listed)} (3 expected), claimed {len(claimed)} (2)")
    with profiled(key) as base:
        claimed[0].delete()
    bases.append(base)
    calls = [Call(label, root, b) for (label, root), b in zip(OPERATIONS, bases, strict=True)]
    return name, calls


# --------------------------------------------------------------------------- trace sources

SpanFetcher = Callable[[str], list[SpanRecord]]

_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def span_record(span: ReceivedSpan) -> SpanRecord:
    """A span from the in-process receiver as the :class:`SpanRecord` Jaeger would give."""
    return SpanRecord(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_id=span.parent_span_id,
        name=span.name,
        service=span.service_name,
        kind=_KINDS.get(span.kind, "unspecified"),
        start_us=span.start_ns // 1000,
        duration_us=max(0, span.end_ns - span.start_ns) // 1000,
        error=span.status_code == 2,
        attributes=dict(span.attributes),
        error_message=span.status_message,
        host=str(span.resource_attributes.get("host.name") or span.attributes.get("host.name", "")),
    )


def receiver_fetcher(receiver: OTLPReceiver) -> SpanFetcher:
    def fetch(trace_hex: str) -> list[SpanRecord]:
        return [span_record(s) for s in receiver.spans() if s.trace_id == trace_hex]

    return fetch


def jaeger_fetcher(query: JaegerQuery) -> SpanFetcher:
    def fetch(trace_hex: str) -> list[SpanRecord]:
        try:
            return list(query.get_trace(trace_hex))
        except JaegerError:  # not there (yet) or not reachable: nothing so far
            return []

    return fetch


def settled_spans(
    fetch: SpanFetcher, trace_hex: str, deadline: float, quiet: float = 0.6
) -> list[SpanRecord]:
    """The trace's spans once they stop arriving (``quiet`` seconds without a new one), or
    what arrived by ``deadline`` (a ``time.monotonic()`` value)."""
    spans: list[SpanRecord] = []
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        current = fetch(trace_hex)
        if len(current) != len(spans):
            spans, last_change = current, time.monotonic()
        elif spans and time.monotonic() - last_change >= quiet:
            return spans
        time.sleep(0.2)
    return spans


def print_traces(
    calls: Sequence[Call],
    fetch: SpanFetcher,
    out: TextIO,
    api_base: str | None = None,
    ui_base: str | None = None,
    wait: float = 30.0,
) -> int:
    """Print each call's trace as a tree, with its query API URL under ``api_base`` and its
    UI page under ``ui_base``; the number of traces found within ``wait`` seconds."""
    found = 0
    deadline = time.monotonic() + wait
    for index, call in enumerate(calls, 1):
        spans = settled_spans(fetch, call.trace_hex, deadline)
        out.write(f"\n[{index}/{len(calls)}] {call.label}: trace {call.trace_hex}")
        out.write(f" ({len(spans)} spans)\n")
        if not spans:
            out.write(f"    no span of this trace arrived within {wait:.0f} s\n")
            continue
        found += 1
        out.write(render_tree(spans).rstrip("\n") + "\n")
        if api_base:
            out.write(f"    {api_base}/api/traces/{call.trace_hex}\n")
        if ui_base:
            out.write(f"    {trace_url(ui_base, call.trace_hex)}\n")
    out.flush()
    return found


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m zaqar_otel.demo",
        description="Run Zaqar with the OSProfiler-to-OpenTelemetry bridge, make five "
        "profiled calls and print their traces.",
    )
    parser.add_argument("--keep", action="store_true", help="keep the servers running until Ctrl-C")
    parser.add_argument(
        "--no-jaeger",
        action="store_true",
        help="do not start Jaeger; show the traces from an in-process OTLP receiver",
    )
    parser.add_argument(
        "--build-script",
        type=Path,
        help="build Jaeger with this script (.ci/build-go-tools) if it is missing",
    )
    parser.add_argument("--zaqar", metavar="URL", help="use this running Zaqar (start nothing)")
    parser.add_argument(
        "--jaeger", metavar="URL", help="with --zaqar: the Jaeger query base URL to read from"
    )
    parser.add_argument(
        "--ui",
        metavar="URL",
        help="with --jaeger: the Jaeger UI base URL to print trace links for "
        "(default: the --jaeger URL)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the traces to arrive (default 30)",
    )
    parser.add_argument(
        "--key",
        default=DEFAULT_KEY,
        help=f"the OSProfiler HMAC key (one of Zaqar's [profiler] hmac_keys; "
        f"default {DEFAULT_KEY!r})",
    )
    args = parser.parse_args(argv)
    if args.jaeger and not args.zaqar:
        parser.error("--jaeger goes with --zaqar")
    if args.ui and not args.jaeger:
        parser.error("--ui goes with --jaeger")
    if args.build_script is not None and not args.build_script.is_file():
        parser.error(f"--build-script {args.build_script}: no such file")
    return args


def against_running(args: argparse.Namespace, out: TextIO) -> int:
    """Only the workload, against a Zaqar (and Jaeger) someone else runs (docker compose)."""
    say(f"workload against {args.zaqar} (key {args.key!r})", out)
    queue, calls = run_workload(args.zaqar, args.key)
    say(f"queue {queue}: {len(calls)} profiled calls", out)
    if not args.jaeger:
        for call in calls:
            out.write(f"{call.label}: trace {call.trace_hex}\n")
        return 0
    fetch = jaeger_fetcher(JaegerQuery(args.jaeger))
    found = print_traces(calls, fetch, out, ui_base=args.ui or args.jaeger, wait=args.wait)
    if found < len(calls):
        say(
            f"{len(calls) - found} trace(s) did not reach {args.jaeger}: is the [profiler] "
            "hmac_keys the same as --key, and is the collector up? (docs/troubleshooting.md)",
            out,
        )
        return 1
    return 0


def run_local(args: argparse.Namespace, out: TextIO) -> int:
    """The whole demo on 127.0.0.1: start, workload, trees, stop."""
    stack.find_redis()  # Missing -> exit 1 with the apt-get line, before anything starts
    jaeger = locate_jaeger(args.no_jaeger, args.build_script)
    workdir = Path(tempfile.mkdtemp(prefix="zaqar-otel-demo-"))
    with contextlib.ExitStack() as servers:  # stopped in reverse order, whatever happens
        say(f"work directory {workdir} (configs and server logs)", out)
        redis = servers.enter_context(stack.RedisServer(workdir=workdir))
        say(f"Redis (message store) at {redis.url}", out)
        sql_url = stack.create_management_tables(f"sqlite:///{workdir / 'zaqar.db'}")
        say(f"SQLite (management store) at {sql_url}", out)

        fetch: SpanFetcher
        query_base: str | None = None
        receiver: RelayReceiver | None = None
        if jaeger.binary:
            say(f"starting Jaeger v2 ({jaeger.binary})", out)
            query_base, otlp = start_jaeger(servers, workdir, out)
            fetch = jaeger_fetcher(JaegerQuery(query_base))
        else:
            say(f"missing: {jaeger.why_not}", out)
            receiver = servers.enter_context(RelayReceiver())
            otlp = receiver.endpoint
            say(f"showing the traces from an in-process OTLP receiver at {otlp} instead", out)
            fetch = receiver_fetcher(receiver)

        zaqar = servers.enter_context(zaqar_server(workdir, redis.url, sql_url, otlp, args.key))
        say(f"Zaqar at {zaqar.url} ([profiler] in {zaqar.conf_path})", out)

        queue, calls = run_workload(zaqar.url, args.key)
        say(f"workload on queue {queue}: {len(calls)} profiled calls; the traces:", out)
        found = print_traces(calls, fetch, out, api_base=query_base, wait=args.wait)
        if query_base:
            out.write(f"\n{UI_NOTE}\n")
        if found < len(calls):
            raise DemoError(f"only {found} of {len(calls)} traces arrived; logs in {workdir}")
        if jaeger.build is not None and receiver is not None:
            show_in_jaeger_once_built(jaeger.build, receiver, servers, workdir, calls, out)
        if args.keep:
            say("servers kept running (--keep); press Ctrl-C to stop them", out)
            with contextlib.suppress(KeyboardInterrupt):
                while redis.running and zaqar.running:
                    time.sleep(0.5)
        say("stopping the servers", out)
    shutil.rmtree(workdir, ignore_errors=True)  # kept when something failed: it has the logs
    return 0


def start_jaeger(
    servers: contextlib.ExitStack[bool | None], workdir: Path, out: TextIO
) -> tuple[str, str]:
    """Jaeger v2 on its usual ports where free: (query API URL, OTLP/HTTP endpoint)."""
    ports = stack.JaegerPorts.usual()
    jaeger = servers.enter_context(stack.JaegerServer(jaeger_ports=ports, workdir=workdir))
    say(
        f"Jaeger: query API {jaeger.url}, OTLP gRPC {jaeger.otlp_grpc_endpoint}, "
        f"OTLP HTTP {jaeger.otlp_http_endpoint}",
        out,
    )
    return jaeger.url, jaeger.otlp_http_endpoint


def zaqar_server(
    workdir: Path, redis_url: str, sql_url: str, otlp: str, key: str
) -> stack.ZaqarServer:
    """``zaqar-otel-server`` on port 8888 if free: every trace flag on, OTLP/HTTP to ``otlp``."""
    otel_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "zaqar",
    }
    stores = stack.redis_sql_stores(redis_url, sql_url)
    options = stack.profiler_options(key)
    port = process.pick_port(8888)
    return stack.ZaqarServer(stores, options, otel_env, port=port, workdir=workdir)


def show_in_jaeger_once_built(
    build: BackgroundBuild,
    receiver: RelayReceiver,
    servers: contextlib.ExitStack[bool | None],
    workdir: Path,
    calls: Sequence[Call],
    out: TextIO,
) -> None:
    """Wait for the background build of Jaeger, start it, send it the traces shown above
    (and what comes later), and print where Jaeger has them. Ctrl-C stops waiting only."""
    say(
        "the same traces in Jaeger: waiting for its build to finish (Ctrl-C stops waiting; "
        "the build goes on, and the next `nox -s demo` starts Jaeger at once)",
        out,
    )
    try:
        built = build.wait(lambda line: say(line, out))
    except KeyboardInterrupt:
        say(
            f"stopped waiting; Jaeger goes on building in the background (log {build.log_path})",
            out,
        )
        return
    if not built:
        say(f"building Jaeger v2 failed; its log: {build.log_path}", out)
        return
    say(f"Jaeger v2 built in {time.monotonic() - build.started:.0f}s; starting it", out)
    query_base, otlp = start_jaeger(servers, workdir, out)
    receiver.relay_to(f"{otlp}/v1/traces")
    fetch = jaeger_fetcher(JaegerQuery(query_base))
    deadline = time.monotonic() + 30
    for index, call in enumerate(calls, 1):
        spans = settled_spans(fetch, call.trace_hex, deadline)
        out.write(f"[{index}/{len(calls)}] {call.label}: {len(spans)} spans in Jaeger\n")
        out.write(f"    {query_base}/api/traces/{call.trace_hex}\n")
    out.write(f"\n{UI_NOTE}\n")
    out.flush()


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the demo; the exit code. Errors are one line, never a traceback."""
    stream = out or sys.stdout
    args = parse_args(argv)
    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGTERM, _sigterm)
    try:
        return against_running(args, stream) if args.zaqar else run_local(args, stream)
    except KeyboardInterrupt:
        say("interrupted; the servers it started are stopped", stream)
        return 130
    except BrokenPipeError:  # output piped into `head`: the servers are stopped, be quiet
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (process.Missing, process.StartFailed, DemoError) as error:
        say(f"error: {error}", stream)
        return 1
    except Exception as error:  # a server answering badly, a client error: one line
        say(f"error: {type(error).__name__}: {error}", stream)
        return 1


if __name__ == "__main__":
    sys.exit(main())
