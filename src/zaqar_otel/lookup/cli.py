"""``zaqar-otel``: profile a Zaqar call, show a trace from Jaeger, run osprofiler's CLI.

::

    $ export ZAQAR_OTEL_JAEGER_QUERY=http://jaeger:16686 ZAQAR_OTEL_JAEGER_UI=http://jaeger:16686
    $ zaqar-otel call --url http://zaqar:8888 --hmac-key SECRET_KEY post orders '{"id": 1}'
    $ zaqar-otel call --os-cloud mycloud --hmac-key SECRET_KEY queue-create orders  # Keystone
    $ zaqar-otel trace show 2794a34f-4eba-41f5-9cae-df85dc466f35 [--json]
    $ zaqar-otel trace show --message orders/bd6f118f-b09f-4543-a756-a287d48ff255
    $ zaqar-otel osprofiler trace show 2794a34f-... --connection-string otel://?query=... --json

(The plain ``osprofiler`` command knows ``otel://`` too where zaqar-otel is installed:
``zaqar_otel_discovery.pth``; ``zaqar-otel osprofiler`` also works under ``python -S``.)

Exit codes: 0 ok; 1 trace (or any trace of the message) not found, or the server did
not trace the call;
2 bad usage or bad id; 3 Jaeger unreachable (or not answering as Jaeger's query
API does); 4 the Zaqar call failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from zaqar_otel.bridge import ids
from zaqar_otel.lookup import messages, report
from zaqar_otel.lookup.jaeger import (
    JaegerError,
    JaegerQuery,
    JaegerUnreachable,
    TraceNotFound,
    render_tree,
    tree_order,
)

OK, NOT_FOUND, USAGE, UNREACHABLE, CALL_FAILED = 0, 1, 2, 3, 4
ENV_QUERY = "ZAQAR_OTEL_JAEGER_QUERY"
ENV_UI = "ZAQAR_OTEL_JAEGER_UI"


class UsageError(Exception):
    """Bad input from the user (exit 2)."""


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _fail(message: str, code: int) -> int:
    print(f"zaqar-otel: {message}", file=sys.stderr)
    return code


# -- trace show


def _query(url: str | None) -> JaegerQuery:
    url = url or _env(ENV_QUERY)
    if not url:
        raise UsageError(f"no Jaeger query API: pass --jaeger URL or set {ENV_QUERY}")
    try:
        return JaegerQuery(url)
    except ValueError as error:
        raise UsageError(str(error)) from None


def trace_show(args: argparse.Namespace) -> int:
    if (args.trace_id is None) == (args.message is None):
        raise UsageError("give either a trace ID or --message QUEUE/MESSAGE_ID")
    if args.message is not None:
        return message_show(args)
    try:
        trace_hex = ids.normalize_trace_id(args.trace_id)
    except ValueError as error:
        raise UsageError(str(error)) from None
    query = _query(args.jaeger)
    spans = (
        query.wait_for_trace(trace_hex, 1, args.wait) if args.wait else query.get_trace(trace_hex)
    )
    ui = args.jaeger_ui or _env(ENV_UI)
    url = f"{ui.rstrip('/')}/trace/{trace_hex}" if ui else None
    if args.json:
        document = {
            "trace_id": trace_hex,
            "base_id": ids.uuid_form(trace_hex),
            "url": url,
            "spans": [{"depth": depth, **span.to_json()} for depth, _, span in tree_order(spans)],
        }
        print(json.dumps(document, indent=2, default=str))
        return OK
    services = sorted({span.service for span in spans})
    errors = sum(1 for span in spans if span.error)
    print(f"trace {trace_hex} ({ids.uuid_form(trace_hex)})")
    print(
        f"{len(spans)} spans, services: {', '.join(services)}"
        + (f", {errors} in error" if errors else "")
    )
    if url:
        print(url)
    print(render_tree(spans))
    return OK


def _queue_and_id(text: str) -> tuple[str, str]:
    queue, _, message_id = text.strip().partition("/")
    if not queue or not message_id or "/" in message_id:
        raise UsageError(f"--message wants QUEUE/MESSAGE_ID, not {text!r}")
    return queue, message_id


_ROLES = (("posted", "posted by"), ("received", "received by"), ("settled", "deleted by"))


def message_show(args: argparse.Namespace) -> int:
    """The traces that posted, received and deleted one message (Jaeger's tag search)."""
    queue, message_id = _queue_and_id(args.message)
    found = messages.find_message(_query(args.jaeger), queue, message_id)
    ui = args.jaeger_ui or _env(ENV_UI)
    if args.json:
        document: dict[str, Any] = {"queue": queue, "message_id": message_id}
        for role, _ in _ROLES:
            document[role] = [
                {**ref.to_json(), "url": f"{ui.rstrip('/')}/trace/{ref.trace_id}" if ui else None}
                for ref in getattr(found, role)
            ]
        print(json.dumps(document, indent=2))
        return OK if found.found() else NOT_FOUND
    if not found.found():
        return _fail(f"no trace of message {queue}/{message_id} in Jaeger", NOT_FOUND)
    print(f"message {queue}/{message_id}")
    if not found.posted:
        print("posted by:    no trace (posted outside a profiled request, or too long ago)")
    for role, label in _ROLES:
        for ref in getattr(found, role):
            line = f"{label + ':':<13} trace {ref.trace_id}  {report.timestamp(ref.start_us)}"
            line += f"  {ref.name}  [{ref.service}]"
            if ref.linked:
                line += "  (links to the post)"
            print(line)
            if ui:
                print(f"{'':<13} {ui.rstrip('/')}/trace/{ref.trace_id}")
    return OK


# -- call


def _body(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _zaqar_client(args: argparse.Namespace) -> Any:
    """python-zaqarclient with Keystone (a cloud is configured) or noauth (``--project``)."""
    from zaqar_otel.lookup.client import zaqar_client

    auth = args.keystone
    if auth is None:
        return zaqar_client(args.url, args.project)
    insecure = auth.cloud.config.get("verify") is False
    return zaqar_client(auth.endpoint(), session=auth.session, insecure=insecure)


def _zaqar_call(args: argparse.Namespace) -> str:
    """Run the operation with python-zaqarclient; a one-line summary of the result."""
    cli = _zaqar_client(args)
    op = args.operation
    if op == "queue-create":
        cli.queue(args.queue, force_create=True)
        return f"created queue {args.queue}"
    queue = cli.queue(args.queue, auto_create=False)
    if op == "post":
        queue.post([{"body": _body(body), "ttl": args.ttl} for body in args.bodies])
        return f"posted {len(args.bodies)} message(s) to {args.queue}"
    if op == "list":
        messages = list(queue.messages(echo=True))
        lines = [f"listed {len(messages)} message(s) in {args.queue}"]
        lines += [json.dumps(message.body, default=str) for message in messages]
        return "\n".join(lines)
    if op == "claim":
        claimed = list(queue.claim(ttl=args.ttl, grace=args.grace, limit=args.limit))
        return f"claimed {len(claimed)} message(s) in {args.queue}"
    queue.delete()
    return f"deleted queue {args.queue}"


def call(args: argparse.Namespace) -> int:
    from zaqar_otel.lookup import client, keystone

    url = args.url or _env("ZAQAR_URL")
    key = args.hmac_key or _env("OS_PROFILE")
    try:
        args.keystone = keystone.from_arguments(args, url)
    except ValueError as error:
        raise UsageError(f"Keystone: {error}") from None
    if not url and args.keystone is None:
        raise UsageError(
            "no Zaqar URL: pass --url URL or set ZAQAR_URL (or a cloud to find it in the "
            "catalog: --os-cloud NAME, or the OS_* variables of an openrc)"
        )
    if not key:
        raise UsageError("no HMAC key: pass --hmac-key KEY or set OS_PROFILE")
    args.url = url
    checking = not args.no_check and bool(args.jaeger or _env(ENV_QUERY))
    query = _query(args.jaeger) if checking else None
    ui = args.jaeger_ui or _env(ENV_UI)
    # zaqar-otel's warnings (export failing) in one line each; the SDK's own are silenced
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
    if not (_env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or _env("OTEL_EXPORTER_OTLP_TIMEOUT")):
        # one small batch: with the collector down, give up after 2 s, not the SDK's 10
        os.environ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"] = "2"
    try:
        client.enable(args.connection_string, args.service)
    except ValueError as error:
        raise UsageError(f"bad --connection-string: {error}") from None
    failure = None
    with client.profile(key) as profiled:
        try:
            summary = _zaqar_call(args)
        except Exception as error:  # zaqarclient errors, refused connections...
            failure = f"the Zaqar call failed: {type(error).__name__}: {error}".strip()
            summary = ""
    result: dict[str, Any] = {
        "operation": args.operation,
        "result": summary,
        "base_id": profiled.base_id,
        "trace_id": profiled.trace_hex,
        "url": profiled.url(ui) if ui else None,
        "server_traced": None,
        "check": None,
    }
    code = OK
    if failure is None and query is not None:
        try:
            check = profiled.check_server(query, args.wait)
        except JaegerUnreachable as error:
            result["check"] = f"cannot check whether the server traced this call: {error}"
            code = UNREACHABLE
        else:
            result["server_traced"], result["check"] = check.traced, check.message
            code = OK if check.traced else NOT_FOUND
    elif failure is None:
        result["check"] = (
            f"not checked (set {ENV_QUERY} or --jaeger to check that the server traced it)"
        )
    _print_call(result, args.json, show_check=failure is None and code == OK)
    if failure is not None:
        return _fail(failure, CALL_FAILED)
    if code != OK:
        return _fail(str(result["check"]), code)
    return OK


def _print_call(result: dict[str, Any], as_json: bool, show_check: bool) -> None:
    """The result on stdout; a check that failed goes to stderr (``_fail``), not here."""
    if as_json:
        print(json.dumps(result, indent=2))
        return
    if result["result"]:
        print(result["result"])
    print(f"trace id (OSProfiler): {result['base_id']}")
    print(f"trace id (Jaeger):     {result['trace_id']}")
    if result["url"]:
        print(f"trace url:             {result['url']}")
    if show_check and result["check"]:
        print(f"server:                {result['check']}")


# -- osprofiler


def osprofiler_cli(args: argparse.Namespace) -> int:
    """OSProfiler's own CLI with the otel:// driver loaded (same arguments, same output)."""
    from osprofiler.cmd import shell

    import zaqar_otel.driver  # noqa: F401  (registers otel://)

    argv = list(args.osprofiler_args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    try:
        code = shell.main(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else USAGE
    return code or OK


# -- argument parsing


def parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The command line; ``argv`` (without the program) selects the OpenStack auth options
    ``call`` gets (openstacksdk is imported only for ``call``)."""
    top = argparse.ArgumentParser(
        prog="zaqar-otel",
        description="Profile Zaqar calls and read their traces back from Jaeger.",
        epilog="exit codes: 0 ok, 1 trace not found or the server did not trace the call, "
        "2 bad usage or bad id, 3 Jaeger unreachable, 4 the Zaqar call failed",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    trace = commands.add_parser("trace", help="read a trace back from Jaeger")
    trace_commands = trace.add_subparsers(dest="trace_command", required=True, metavar="show")
    show = trace_commands.add_parser("show", help="print a trace as a tree")
    show.add_argument(
        "trace_id", metavar="ID", nargs="?", help="OSProfiler UUID or 32-hex Jaeger id"
    )
    show.add_argument(
        "--message",
        metavar="QUEUE/ID",
        help="instead of a trace: the traces that posted and received this message",
    )
    show.add_argument("--jaeger", metavar="URL", help=f"Jaeger query API (default ${ENV_QUERY})")
    show.add_argument("--jaeger-ui", metavar="URL", help=f"Jaeger UI for links (${ENV_UI})")
    show.add_argument("--json", action="store_true", help="JSON for machines")
    show.add_argument(
        "--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for the trace"
    )
    show.set_defaults(handler=trace_show)

    run = commands.add_parser("call", help="make one profiled Zaqar call and print its trace ids")
    run.add_argument(
        "--url",
        help="Zaqar endpoint, e.g. http://zaqar:8888 (default $ZAQAR_URL; with Keystone the "
        "catalog's messaging endpoint)",
    )
    run.add_argument("--hmac-key", help="a key of the server's [profiler] hmac_keys ($OS_PROFILE)")
    run.add_argument(
        "--project",
        default=_env("OS_PROJECT_ID") or "zaqar-otel",
        help="project id with noauth (with Keystone: the token's project)",
    )
    run.add_argument(
        "--connection-string",
        default="otel://",
        help="where the client's spans go (otel://HOST:PORT; default: OTEL_EXPORTER_OTLP_*)",
    )
    run.add_argument("--service", default="zaqar-client", help="the client's service name")
    run.add_argument("--jaeger", metavar="URL", help=f"Jaeger query API to check (${ENV_QUERY})")
    run.add_argument("--jaeger-ui", metavar="URL", help=f"Jaeger UI for the link (${ENV_UI})")
    run.add_argument(
        "--wait", type=float, default=10.0, metavar="S", help="wait up to S s for server spans"
    )
    run.add_argument("--no-check", action="store_true", help="do not ask Jaeger")
    run.add_argument("--json", action="store_true", help="JSON for machines")
    ops = run.add_subparsers(dest="operation", required=True, metavar="OPERATION")
    ops.add_parser("queue-create", help="create queue NAME").add_argument("queue", metavar="NAME")
    post = ops.add_parser("post", help="post messages (JSON or text bodies)")
    post.add_argument("queue", metavar="NAME")
    post.add_argument("bodies", metavar="BODY", nargs="+")
    post.add_argument("--ttl", type=int, default=300)
    ops.add_parser("list", help="list messages").add_argument("queue", metavar="NAME")
    claim = ops.add_parser("claim", help="claim messages")
    claim.add_argument("queue", metavar="NAME")
    claim.add_argument("--limit", type=int, default=10)
    claim.add_argument("--ttl", type=int, default=60)
    claim.add_argument("--grace", type=int, default=60)
    ops.add_parser("delete", help="delete queue NAME").add_argument("queue", metavar="NAME")
    run.set_defaults(handler=call)
    if list(argv[:1]) == ["call"]:
        from zaqar_otel.lookup import keystone

        try:
            keystone.register_arguments(run, argv[1:])
        except ValueError as error:
            raise UsageError(f"Keystone: {error}") from None

    osp = commands.add_parser(
        "osprofiler", help="osprofiler's CLI with otel:// known (e.g. trace show ID --json)"
    )
    osp.add_argument("osprofiler_args", nargs=argparse.REMAINDER, metavar="ARGS")
    osp.set_defaults(handler=osprofiler_cli)

    return top


def main(argv: Sequence[str] | None = None) -> int:
    """The ``zaqar-otel`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    try:
        args = parser(argv).parse_args(argv)
        code: int = args.handler(args)
    except UsageError as error:
        return _fail(f"error: {error}", USAGE)
    except TraceNotFound as error:
        return _fail(str(error), NOT_FOUND)
    except JaegerError as error:  # unreachable, or not answering like Jaeger's query API
        return _fail(str(error), UNREACHABLE)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return code


if __name__ == "__main__":
    sys.exit(main())
