"""Where the DB work of lazy storage results lands: list and claim on Redis and MongoDB.

Not a speed benchmark: a measurement of trace shape on real servers. For each
store (Redis + SQLite; FerretDB for both stores) a real ``zaqar-server`` with the
bridge serves ``--rounds`` rounds of: post 3 messages, list them, claim 2, each
call profiled; the traces are read back from a Jaeger started for the run. For
the controller span of each call (``MessageController.list``,
``ClaimController.create``) it reports the median duration and, over all DB
spans of the call, how many are its descendants and how many hang directly
under the HTTP SERVER span::

    ZAQAR_OTEL_TOOLS=~/.cache/zaqar-otel/bin python -m bench.lazy_spans [--rounds 5]

Writes ``bench/results/lazy_spans.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

from bench import common

CONTROLLERS = {"list": "MessageController.list", "claim": "ClaimController.create"}


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span.get("tags", [])}


def _is_db(span: dict[str, Any]) -> bool:
    tags = _tags(span)
    return bool(tags.get("db.system") or tags.get("db.system.name"))


def shape(spans: list[dict[str, Any]], controller: str) -> dict[str, Any]:
    """Controller duration (us); of the DB spans that start after it: how many are under it,
    right under the SERVER span, and inside its time."""
    by_id = {s["spanID"]: s for s in spans}

    def parent(span: dict[str, Any]) -> dict[str, Any] | None:
        refs = [r for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
        return by_id.get(refs[0]["spanID"]) if refs else None

    def ancestors(span: dict[str, Any]) -> list[dict[str, Any]]:
        chain = []
        while (span := parent(span)) is not None:  # type: ignore[assignment]
            chain.append(span)
        return chain

    [ctrl] = [s for s in spans if controller in s["operationName"]]
    # the DB work of the call: every DB span that starts after the controller did
    # (list: Zaqar reads the queue's metadata before, outside the controller)
    db = [s for s in spans if _is_db(s) and s["startTime"] >= ctrl["startTime"]]
    under = [s for s in db if ctrl in ancestors(s)]
    server = [s for s in db if _tags(parent(s) or {}).get("span.kind") == "server"]
    ctrl_end = ctrl["startTime"] + ctrl["duration"]
    return {
        "controller_us": ctrl["duration"],
        "db_spans": len(db),
        "db_under_controller": len(under),
        "db_under_server": len(server),
        "db_within_controller_time": sum(
            1
            for s in db
            if ctrl["startTime"] <= s["startTime"] and s["startTime"] + s["duration"] <= ctrl_end
        ),
    }


def tree_text(spans: list[dict[str, Any]]) -> str:
    """The trace as an indented text tree: offset and duration (us), name."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    ids = {s["spanID"] for s in spans}
    for span in spans:
        refs = [r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
        key = refs[0] if refs and refs[0] in ids else None
        children.setdefault(key, []).append(span)
    start = min(s["startTime"] for s in spans)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["startTime"]):
            offset = span["startTime"] - start
            lines.append(
                f"{offset:>8} {span['duration']:>8}  {'  ' * depth}{span['operationName']}"
            )
            walk(span["spanID"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def run_store(
    store: str, rounds: int, jaeger: Any, servers: dict[str, Any], trees: bool = False
) -> dict[str, Any]:
    from tests import zaqar_server as zs
    from tests.zaqar.test_server import mongodb_stores, redis_sql_stores, start_server

    from zaqar_otel.bridge import ids

    if store == "redis":
        stores = redis_sql_stores(servers["redis"].url, servers["sqlite"])
        server = start_server(jaeger, stores)
    else:
        server = start_server(jaeger, mongodb_stores(servers["ferretdb"].url), launcher="ferretdb")
    bases: list[dict[str, str]] = []
    try:
        cli = zs.client(server.url)
        for _ in range(rounds):
            queue = cli.queue(zs.fresh_queue_name(), force_create=True)
            queue.post([{"body": {"n": i}, "ttl": 300} for i in range(3)])
            calls: dict[str, str] = {}
            with zs.profiled() as calls["list"]:
                assert len(list(queue.messages(echo=True))) == 3
            with zs.profiled() as calls["claim"]:
                assert len(list(queue.claim(ttl=60, grace=60, limit=2))) == 2
            bases.append(calls)
    finally:
        server.close()
    out: dict[str, Any] = {}
    for op, controller in CONTROLLERS.items():
        shapes = []
        for calls in bases:
            answer = jaeger.wait_for_trace(ids.trace_hex(calls[op]), 3, timeout=30)
            shapes.append(shape(jaeger.trace_spans(answer), controller))
            if trees and calls is bases[-1]:
                print(f"-- {store} {op} (offset us, duration us, span)")
                print(tree_text(jaeger.trace_spans(answer)))
        out[op] = {
            "controller": controller,
            "controller_us_median": statistics.median(s["controller_us"] for s in shapes),
            **{
                key: sum(s[key] for s in shapes)
                for key in (
                    "db_spans",
                    "db_under_controller",
                    "db_under_server",
                    "db_within_controller_time",
                )
            },
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stores", default="redis,mongodb")
    parser.add_argument("--trees", action="store_true", help="print the last trace of each call")
    args = parser.parse_args(argv)
    import tempfile

    from tests import servers as srv
    from tests import zaqar_server as zs

    results: dict[str, Any] = {"rounds": args.rounds, "stores": {}}
    with srv.JaegerServer() as jaeger, srv.RedisServer() as redis, srv.FerretDBServer() as ferret:
        sqlite = f"sqlite:///{tempfile.mkdtemp(prefix='lazy-spans-')}/zaqar.db"
        zs.create_management_tables(sqlite)
        servers = {"redis": redis, "ferretdb": ferret, "sqlite": sqlite}
        for store in args.stores.split(","):
            results["stores"][store] = run_store(store, args.rounds, jaeger, servers, args.trees)
    print(
        "| store | call | controller span | median duration | DB spans | under it | "
        "under SERVER | inside its time |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for store, ops in results["stores"].items():
        for op, r in ops.items():
            print(
                f"| {store} | {op} | {r['controller']} | {r['controller_us_median']:.0f} us | "
                f"{r['db_spans']} | {r['db_under_controller']} | {r['db_under_server']} | "
                f"{r['db_within_controller_time']} |"
            )
    common.write_result("lazy_spans", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
