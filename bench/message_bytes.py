"""What the creation context stored with a traced message costs in the message store.

Real zaqar-server processes (Redis; MongoDB wire protocol through FerretDB) get the
same messages posted signed (traced: the context is stored) and unsigned (nothing
stored); then the stores are read directly:

* Redis: the growth of ``used_memory`` (INFO memory: what the allocator holds) over
  N posts into an emptied Redis (FLUSHALL before each run, so that the keyspace's
  own tables grow alike), traced vs untraced, for a small body (Redis keeps the
  message hash as one listpack) and a 1 KiB body (a hashtable: one more entry);
  ``MEMORY USAGE`` is not used: for hashtables it estimates, and its figure moved
  with Redis's rehashing in our runs. ``HSTRLEN <id> otel`` is the value itself;
* MongoDB: the BSON size of each document (what MongoDB stores, before its own
  compression), traced vs untraced.

Usage::

    python -m bench.message_bytes [--messages 200]

Writes ``bench/results/message_bytes.json``. Needs redis-server and FerretDB (the
test fixtures' binaries, see tests/servers.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

from bench import common

SMALL = {"n": 1}
LARGE = {"blob": "x" * 1024}


def _post(url: str, queue: str, body: Any, signed: bool) -> str:
    from osprofiler import profiler, web
    from tests import messaging as m
    from tests import zaqar_server as zs

    headers = m.headers()
    if signed:
        profiler.clean()
        profiler.init(zs.HMAC_KEY)
        headers.update(web.get_trace_id_headers())
        profiler.clean()
    answer = requests.post(
        f"{url}/v2/queues/{queue}/messages",
        json={"messages": [{"body": body, "ttl": 3600}]},
        headers=headers,
        timeout=10,
    )
    answer.raise_for_status()
    return str(answer.json()["resources"][0].rsplit("/", 1)[-1])


def _ids(url: str, body: Any, count: int, signed: bool) -> list[str]:
    """``count`` messages posted to a new queue (one post each)."""
    from tests import messaging as m

    queue = f"bytes-{uuid.uuid4().hex[:10]}"
    m.create_queue(url, queue)
    _post(url, queue, body, signed)  # the queue's index structures exist from here on
    return [_post(url, queue, body, signed) for _ in range(count)]


def _summary(traced: list[int], untraced: list[int]) -> dict[str, float]:
    """Mean sizes, and the mean difference (the cost of the stored context)."""
    return {
        "traced_mean": round(statistics.mean(traced), 1),
        "untraced_mean": round(statistics.mean(untraced), 1),
        "extra_per_message": round(statistics.mean(traced) - statistics.mean(untraced), 1),
    }


@contextmanager
def _server(stores: dict[str, Any], launcher: str) -> Iterator[Any]:
    from tests import zaqar_server as zs

    opts = dict(zs.PROFILER_ON, connection_string="otel://")
    env = {"OTEL_TRACES_EXPORTER": "none"}  # traced, not exported: only the store matters
    server = zs.ZaqarServer(stores, opts, env, launcher).start()
    try:
        yield server
    finally:
        server.close()


def redis_bytes(redis_url: str, sql_url: str, count: int, runs: int = 3) -> dict[str, Any]:
    import redis
    from tests.zaqar.test_server import redis_sql_stores

    result: dict[str, Any] = {}
    client = redis.Redis.from_url(redis_url)

    def grown(url: str, body: Any, signed: bool) -> tuple[float, list[str]]:
        client.flushall()
        before = int(client.info("memory")["used_memory"])
        ids = _ids(url, body, count, signed)
        return (int(client.info("memory")["used_memory"]) - before) / count, ids

    with _server(redis_sql_stores(redis_url, sql_url), "zaqar-otel-server") as server:
        for label, body in (("small_body", SMALL), ("1kib_body", LARGE)):
            per_message: dict[str, list[float]] = {"traced": [], "untraced": []}
            grown(server.url, body, True)  # warm-up, not counted (scripts, buffers, lazy frees)
            for _ in range(runs):
                for kind in ("untraced", "traced"):
                    size, ids = grown(server.url, body, kind == "traced")
                    per_message[kind].append(round(size, 1))
            values = {client.hstrlen(i, "otel") for i in ids}  # the last run: traced
            traced, untraced = (statistics.mean(per_message[k]) for k in ("traced", "untraced"))
            result[label] = {
                "traced_runs": per_message["traced"],
                "untraced_runs": per_message["untraced"],
                "extra_per_message": round(traced - untraced, 1),
                "stored_value_bytes": sorted(values),
                "encoding": client.object("encoding", ids[0]).decode(),
            }
    client.close()
    return result


def mongodb_bytes(ferretdb_url: str, count: int) -> dict[str, Any]:
    import bson
    import pymongo

    database = f"bytes_{uuid.uuid4().hex[:8]}"
    uri = f"{ferretdb_url}?serverSelectionTimeoutMS=5000"
    stores = {
        "drivers": {"message_store": "mongodb", "management_store": "mongodb"},
        "drivers:message_store:mongodb": {"uri": uri, "database": database, "partitions": "1"},
        "drivers:management_store:mongodb": {"uri": uri, "database": f"{database}_mgmt"},
    }
    result: dict[str, Any] = {}
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(ferretdb_url)
    with _server(stores, "ferretdb") as server:
        for label, body in (("small_body", SMALL), ("1kib_body", LARGE)):
            ids = {
                "traced": _ids(server.url, body, count, True),
                "untraced": _ids(server.url, body, count, False),
            }
            docs = client[f"{database}_messages_fifo_p0"].messages
            if docs.estimated_document_count() == 0:
                docs = client[f"{database}_messages_p0"].messages

            def size(message_id: str, docs: Any = docs) -> int:
                found = docs.find_one({"_id": bson.ObjectId(message_id)})
                return len(bson.encode(found))

            sizes = {k: [size(i) for i in v] for k, v in ids.items()}
            result[label] = _summary(sizes["traced"], sizes["untraced"])
    client.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200, help="per kind and body size")
    args = parser.parse_args(argv)
    import tempfile

    from tests import zaqar_server as zs
    from tests.servers import FerretDBServer, RedisServer

    with (
        tempfile.TemporaryDirectory(prefix="bench-bytes-") as tmp,
        RedisServer() as redis_server,
        FerretDBServer() as ferretdb,
    ):
        sql_url = f"sqlite:///{tmp}/zaqar.db"
        zs.create_management_tables(sql_url)
        result = {
            "messages_per_kind": args.messages,
            "redis": redis_bytes(redis_server.url, sql_url, args.messages),  # type: ignore[attr-defined]
            "mongodb_bson": mongodb_bytes(ferretdb.url, args.messages),  # type: ignore[attr-defined]
        }
    common.write_result("message_bytes", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
