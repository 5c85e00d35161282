"""A tiny profiled program for subprocess tests: python -m tests.apps.profiled --help.

Initialises OSProfiler from a ConfigOpts with otel:// (the way an OpenStack
service does), runs N profiled "requests" (optionally in threads, optionally
touching Redis) and prints {"base_ids": [...]} as JSON. Spans leave by the
process's normal exit (atexit flush) unless --force-flush is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid

from oslo_config import cfg
from osprofiler import initializer, profiler

import zaqar_otel

HMAC_KEY = "subprocess-secret"


def one_request(index: int, redis_client: object | None) -> str:
    p = profiler.init(HMAC_KEY)
    base = p.get_base_id()
    try:
        info = {
            "request": {"method": "POST", "path": f"/v2/queues/q{index}/messages", "scheme": "http"}
        }
        with profiler.Trace("wsgi", info=info), profiler.Trace("redis_message_controller"):
            if redis_client is not None:
                key = f"k-{uuid.uuid4()}"
                redis_client.set(key, "v")  # type: ignore[attr-defined]
                redis_client.get(key)  # type: ignore[attr-defined]
    finally:
        profiler.clean()
    return base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connection-string", default="otel://")
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--redis")
    parser.add_argument("--flag", action="append", default=[], help="[profiler] flag to set true")
    parser.add_argument("--force-flush", action="store_true")
    parser.add_argument("--hold", type=float, default=0.0, help="sleep this long before exiting")
    parser.add_argument("--interval", type=float, default=0.0, help="pause between requests")
    args = parser.parse_args(argv)

    conf = cfg.ConfigOpts()
    zaqar_otel.register_opts(conf)
    conf([])
    conf.set_override("enabled", True, "profiler")
    conf.set_override("hmac_keys", HMAC_KEY, "profiler")
    conf.set_override("connection_string", args.connection_string, "profiler")
    for flag in args.flag:
        conf.set_override(flag, True, "profiler")
    initializer.init_from_conf(conf, context={}, project="zaqar", service="api", host="localhost")

    redis_client = None
    if args.redis:
        import redis

        redis_client = redis.Redis.from_url(args.redis)

    bases: list[str] = []
    lock = threading.Lock()

    def worker(start: int) -> None:
        for i in range(start, args.requests, args.threads):
            base = one_request(i, redis_client)
            with lock:
                bases.append(base)
            if args.interval:
                time.sleep(args.interval)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(args.threads)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    if args.force_flush:
        from opentelemetry import trace

        trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    status = zaqar_otel.status()
    print(json.dumps({"base_ids": bases, "elapsed": elapsed, "status": status}), flush=True)
    if args.hold:
        time.sleep(args.hold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
