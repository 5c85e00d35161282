"""Request latency and throughput of a real in-process Zaqar app, with and without the bridge.

Zaqar (Redis message store, SQLite management store) is bootstrapped in a
worker subprocess, one per configuration, and driven by direct WSGI calls
(webob ``Request.blank(...).get_response(app)``): one operation = POST one
message + GET the queue's messages. Configurations:

==================  ==========================================================
``not-installed``   stock ``[profiler]`` defaults; ``zaqar_otel`` never imported
``control``         ``not-installed`` again, in other processes: its ratio is the
                    method's noise floor (an A/A test)
``disabled``        the bridge installed (``zaqar.install()``, ``otel://``), ``enabled = false``
``stock-enabled``   no bridge; stock Zaqar with ``[profiler] enabled = true`` and its
                    three trace flags (OSProfiler's default driver): what Zaqar's own
                    tracing costs an unsigned request, for comparison
``enabled-unsigned`` ``enabled = true``, every trace flag, OTLP to a local receiver;
                    requests not signed
``enabled-signed``  the same, every request signed (``X-Trace-Info``/``-HMAC``)
``signed-unlinked`` the same with ``link_messages = false``: no create span, no stored
                    creation context, no links (what messaging-native tracing costs)
``signed-down``     signed, the collector's port refuses connections
``signed-blackhole`` signed, the collector accepts connections and never answers
==================  ==========================================================

Long-lived worker processes (``--replicas`` per configuration, bootstrapped and
warmed up once) run batches of operations interleaved in rounds (ABCDEF,
BCDEFA, ...) to cancel drift; a configuration's figure in a round is the mean
over its processes (one process alone can be a few percent off: layout,
placement); each ratio is the median over rounds of (config / not-installed)
in the same round.
On a machine shared with other work, ``*_q25`` also compares the lower
quartiles of the batch medians: the batches least disturbed by other load.

Usage::

    python -m bench.requests [--quick] [--rounds 20] [--ops 25] [--replicas 3] [--configs a,b]

Writes ``bench/results/requests.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import common

CONFIGS = (
    "not-installed",
    "control",
    "disabled",
    "stock-enabled",
    "enabled-unsigned",
    "enabled-signed",
    "signed-unlinked",
    "signed-down",
    "signed-blackhole",
)
STOCK = {"not-installed", "control", "stock-enabled"}  # zaqar_otel never imported
SIGNED = {"enabled-signed", "signed-unlinked", "signed-down", "signed-blackhole"}
HEALTHY_SIGNED = ("enabled-signed", "signed-unlinked")  # export to the healthy receiver
HMAC_KEY = "bench-secret"
TARGETS = {"disabled": 1.02, "enabled-unsigned": 1.01, "enabled-signed": 1.3}
RELIABILITY_TARGET = 1.1  # signed-down / signed-blackhole against enabled-signed
PROJECT = "bench-project"
STOCK_FLAGS = ("trace_wsgi_transport", "trace_message_store", "trace_management_store")
FLAGS = (
    "trace_wsgi_transport",
    "trace_message_store",
    "trace_management_store",
    "trace_redis",
    "trace_sqlalchemy",
)


# -- the worker (one configuration, one process)


def render_conf(config: str, redis_url: str, sql_url: str) -> str:
    """zaqar.conf for ``config``: Redis messages, SQL management, no auth."""
    from zaqar_otel.demo.stack import redis_sql_stores, render_ini

    sections: dict[str, dict[str, str]] = {
        "DEFAULT": {"auth_strategy": "", "unreliable": "true"},
        **redis_sql_stores(redis_url, sql_url),
    }
    if config == "stock-enabled":  # Zaqar's own tracing on, OSProfiler's default driver
        flags = [flag for flag in FLAGS if flag in STOCK_FLAGS]
        sections["profiler"] = {"enabled": "true", "hmac_keys": HMAC_KEY}
    elif config not in ("not-installed", "control"):
        flags = list(FLAGS)
        enabled = "false" if config == "disabled" else "true"
        sections["profiler"] = {"enabled": enabled, "hmac_keys": HMAC_KEY}
        sections["profiler"]["connection_string"] = "otel://"
        if config == "signed-unlinked":
            sections["profiler"]["link_messages"] = "false"
    else:
        return render_ini(sections)
    sections["profiler"].update(dict.fromkeys(flags, "true"))
    return render_ini(sections)


def build_stock_app(conf_path: str) -> Any:
    """Zaqar's WSGI app exactly as ``zaqar.transport.wsgi.app`` builds it, without the bridge."""
    from oslo_config import cfg
    from oslo_log import log
    from zaqar.common import consts

    from zaqar import bootstrap

    conf = cfg.CONF
    log.register_options(conf)
    conf(project="zaqar", prog="zaqar-queues", args=[], default_config_files=[conf_path])
    log.setup(conf, "zaqar")
    boot = bootstrap.Bootstrap(conf)
    conf.set_override("transport", consts.TRANSPORT_WSGI, "drivers")
    return boot.transport.app


def build_app(config: str, conf_path: str) -> Any:
    if config in STOCK:
        return build_stock_app(conf_path)
    from zaqar_otel.zaqar import wsgi

    return wsgi.build([conf_path])


class Client:
    """Direct WSGI calls to ``app`` for one queue; ``signed`` adds OSProfiler headers."""

    def __init__(self, app: Any, queue: str, signed: bool) -> None:
        self.app = app
        self.queue = queue
        self.signed = signed
        self.base = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": PROJECT}

    def headers(self) -> dict[str, str]:
        if not self.signed:
            return dict(self.base)
        from osprofiler import web

        from zaqar_otel.lookup.client import profiled

        with profiled(HMAC_KEY):
            return {**self.base, **web.get_trace_id_headers()}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, int]:
        """(status, nanoseconds in the app) for one request; headers made before the clock."""
        from webob import Request

        request = Request.blank(
            path,
            method=method,
            headers=self.headers(),
            body=json.dumps(body).encode() if body is not None else b"",
            content_type="application/json",
        )
        start = time.perf_counter_ns()
        response = request.get_response(self.app)
        elapsed = time.perf_counter_ns() - start
        return response.status_int, elapsed

    def operation(self, n: int) -> tuple[int, int]:
        """POST one message, then GET messages: (post ns, list ns)."""
        status, post = self.call(
            "POST",
            f"/v2/queues/{self.queue}/messages",
            {"messages": [{"ttl": 300, "body": {"n": n}}]},
        )
        if status != 201:
            raise RuntimeError(f"POST messages answered {status}")
        status, listed = self.call("GET", f"/v2/queues/{self.queue}/messages?echo=true&limit=10")
        if status != 200:
            raise RuntimeError(f"GET messages answered {status}")
        return post, listed


class App:
    """One configuration's Zaqar app in this process, with a fresh queue."""

    def __init__(self, config: str, conf_path: str) -> None:
        self.config = config
        app = build_app(config, conf_path)
        self.client = Client(app, f"bench-{uuid.uuid4().hex[:10]}", config in SIGNED)
        status, _ = self.client.call("PUT", f"/v2/queues/{self.client.queue}")
        if status not in (201, 204):
            raise RuntimeError(f"PUT queue answered {status}")
        self.done = 0

    def run(self, ops: int) -> dict[str, Any]:
        """``ops`` operations: median latencies, throughput, CPU per operation."""
        posts, lists = [], []
        wall, cpu = time.perf_counter_ns(), time.process_time_ns()
        for _ in range(ops):
            post, listed = self.client.operation(self.done)
            self.done += 1
            posts.append(post)
            lists.append(listed)
        wall, cpu = time.perf_counter_ns() - wall, time.process_time_ns() - cpu
        totals = [p + g for p, g in zip(posts, lists, strict=True)]
        return {
            "op_ns_median": common.median(totals),
            "post_ns_median": common.median(posts),
            "list_ns_median": common.median(lists),
            "ops_per_s": ops / (wall / 1e9),
            # all threads of this process (the exporter's too), client side included
            "cpu_ns_per_op": cpu / ops,
        }

    def status(self) -> dict[str, Any]:
        """Whether zaqar_otel was imported, and the bridge's counters if so."""
        result: dict[str, Any] = {"zaqar_otel_imported": "zaqar_otel" in sys.modules}
        if result["zaqar_otel_imported"]:
            import zaqar_otel

            if self.config in HEALTHY_SIGNED:  # healthy collector: all of it exported
                from opentelemetry import trace

                flush = getattr(trace.get_tracer_provider(), "force_flush", None)
                if callable(flush):
                    flush(10_000)
            result["bridge_status"] = zaqar_otel.status()
            # signed: every request traced (the PUT of the queue, then POST + GET each time)
            result["requests_made"] = 2 * self.done + 1
        return result


def serve(config: str, conf_path: str, warmup: int) -> None:
    """Worker loop: build the app, warm up, then answer ``run N`` / ``status`` on stdin."""
    app = App(config, conf_path)
    app.run(warmup)
    common.emit({"ready": config})
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "run":
            common.emit(app.run(int(arg)))
        elif command == "status":
            common.emit(app.status())
        else:
            break
    # No exit-time flush: against a blackholed collector it would wait for the
    # exporter's timeout, and nothing is measured any more.
    os._exit(0)


# -- the orchestrator


def otel_env(config: str, endpoints: dict[str, str]) -> dict[str, str]:
    if config in STOCK:
        # as if zaqar-otel were not installed: its .pth would import the otel:// driver
        # wherever OSProfiler's drivers load (src/_zaqar_otel_discovery.py)
        return {"ZAQAR_OTEL_NO_DISCOVERY": "1"}
    if config == "disabled":
        return {}
    endpoint = {
        "signed-down": endpoints["down"],
        "signed-blackhole": endpoints["blackhole"],
    }.get(config, endpoints["healthy"])
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }


def run_rounds(
    workers: dict[str, list[common.Worker]], rounds: int, ops: int
) -> dict[str, list[dict[str, Any]]]:
    """{config: [result per round]}: each round one batch of ``ops`` per worker process,
    the order rotated every round (ABC, BCA, CAB, ...) so that drift cancels; a
    config's figures in a round are the means over its processes (replicas), so
    that one process's own bias (memory layout, placement) averages out."""
    slots = [(config, i) for config, group in workers.items() for i in range(len(group))]
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in workers}
    for r in range(rounds):
        batches: dict[str, list[dict[str, Any]]] = {c: [] for c in workers}
        for config, i in slots[r % len(slots) :] + slots[: r % len(slots)]:
            batches[config].append(workers[config][i].ask(f"run {ops}"))
        for config, group in batches.items():
            results[config].append(
                {key: sum(b[key] for b in group) / len(group) for key in group[0]}
            )
    return results


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per config and ratios (median over rounds of the same-round ratio)."""
    base = results.get("not-installed")
    signed = results.get("enabled-signed")
    unlinked = results.get("signed-unlinked")
    summary: dict[str, Any] = {}
    for config, runs in results.items():
        entry: dict[str, Any] = {
            "op_ms_median": round(common.median([r["op_ns_median"] for r in runs]) / 1e6, 3),
            "post_ms_median": round(common.median([r["post_ns_median"] for r in runs]) / 1e6, 3),
            "list_ms_median": round(common.median([r["list_ns_median"] for r in runs]) / 1e6, 3),
            "ops_per_s_median": round(common.median([r["ops_per_s"] for r in runs]), 1),
            "cpu_ms_per_op_median": round(
                common.median([r["cpu_ns_per_op"] for r in runs]) / 1e6, 3
            ),
        }
        if base:
            entry["latency_ratio"] = _paired(runs, base, "op_ns_median")
            entry["latency_ratio_q25"] = round(
                _q25(runs, "op_ns_median") / _q25(base, "op_ns_median"), 3
            )
            entry["latency_ratio_rounds"] = _rounds(runs, base, "op_ns_median")
            entry["latency_ratio_spread"] = common.spread(entry["latency_ratio_rounds"])
            entry["throughput_ratio"] = _paired(runs, base, "ops_per_s")
            entry["cpu_ratio"] = _paired(runs, base, "cpu_ns_per_op")
        if signed and config in ("signed-down", "signed-blackhole"):
            entry["latency_ratio_vs_signed_healthy"] = _paired(runs, signed, "op_ns_median")
            entry["latency_ratio_vs_signed_healthy_q25"] = round(
                _q25(runs, "op_ns_median") / _q25(signed, "op_ns_median"), 3
            )
            entry["latency_ratio_vs_signed_healthy_rounds"] = _rounds(runs, signed, "op_ns_median")
        if unlinked and config == "enabled-signed":  # the cost of link_messages
            for key in ("post", "list"):
                entry[f"{key}_ratio_vs_unlinked"] = _paired(runs, unlinked, f"{key}_ns_median")
                extra = [
                    r[f"{key}_ns_median"] - u[f"{key}_ns_median"]
                    for r, u in zip(runs, unlinked, strict=True)
                ]
                entry[f"{key}_extra_us_vs_unlinked"] = round(common.median(extra) / 1000, 1)
        summary[config] = entry
    return summary


def _q25(runs: list[dict[str, Any]], key: str) -> float:
    """The lower quartile over rounds: the batches least disturbed by other load."""
    values = sorted(r[key] for r in runs)
    return float(values[len(values) // 4])


def _rounds(runs: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> list[float]:
    """The ratio run/base of ``key`` in each round."""
    return [round(r[key] / b[key], 3) for r, b in zip(runs, base, strict=True)]


def _paired(runs: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> float:
    """The median over rounds of the same-round ratio."""
    return round(common.median(_rounds(runs, base, key)), 3)


def measure(
    configs: Sequence[str], rounds: int, ops: int, warmup: int, replicas: int
) -> dict[str, Any]:
    from bench import sink
    from zaqar_otel.demo.stack import RedisServer, create_management_tables

    with (
        tempfile.TemporaryDirectory(prefix="bench-zaqar-") as tmp,
        RedisServer() as redis_server,
        sink.Sink() as receiver,
        contextlib.closing(sink.Blackhole()) as hole,
    ):
        sql_url = create_management_tables(f"sqlite:///{tmp}/zaqar.db")
        endpoints = {
            "healthy": receiver.endpoint,
            "down": sink.refused_endpoint(),
            "blackhole": hole.endpoint,
        }
        workers: dict[str, list[common.Worker]] = {}
        try:
            for config in configs:
                conf = Path(tmp) / f"{config}.conf"  # written here: a stock worker must
                conf.write_text(render_conf(config, redis_server.url, sql_url))  # not import us
                args = ["--worker", config, "--conf", str(conf), "--warmup", str(warmup)]
                env = otel_env(config, endpoints)
                workers[config] = [
                    common.Worker("bench.requests", args, env) for _ in range(replicas)
                ]
            for group in workers.values():
                for worker in group:
                    worker.read()  # ready: bootstrapped and warmed up
            started = time.monotonic()
            results = run_rounds(workers, rounds, ops)
            seconds = time.monotonic() - started
            statuses = {config: group[0].ask("status") for config, group in workers.items()}
        finally:
            for group in workers.values():
                for worker in group:
                    worker.close()
        received = receiver.count()
    for config in STOCK:
        if statuses.get(config, {}).get("zaqar_otel_imported", False):
            raise RuntimeError(f"the {config} worker imported zaqar_otel")
    summary = summarize(results)
    for config, status in statuses.items():
        summary[config].update(status)
        made = status.get("requests_made")
        if config == "enabled-signed" and made:
            exported = status.get("bridge_status", {}).get("exported", 0)
            summary[config]["spans_per_request"] = round(exported / made, 1)
    return {
        "rounds": rounds,
        "processes_per_config": replicas,
        "ops_per_batch": ops,
        "warmup_ops": warmup,
        "operation": "POST 1 message + GET messages (limit 10), direct WSGI calls",
        "seconds_measuring": round(seconds, 1),
        "receiver": received,
        "configs": summary,
        "targets": {"latency_ratio_at_most": TARGETS, "reliability_at_most": RELIABILITY_TARGET},
        "per_round": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke test)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--ops", type=int, default=25, help="operations per batch")
    parser.add_argument("--replicas", type=int, default=3, help="processes per config")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--conf", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        serve(args.worker, args.conf, args.warmup)
        return 0
    configs = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown config(s) {unknown}; known: {', '.join(CONFIGS)}")
    rounds, ops, warmup, replicas = (
        (2, 3, 2, 1) if args.quick else (args.rounds, args.ops, args.warmup, args.replicas)
    )
    result = measure(configs, rounds, ops, warmup, replicas)
    result["quick"] = args.quick
    common.write_result("requests", result)
    common.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
