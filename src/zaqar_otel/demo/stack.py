"""The servers of the demo: Redis, Jaeger v2 and Zaqar with the bridge, on 127.0.0.1.

In: the programs (``redis-server``, the ``jaeger`` that ``.ci/build-go-tools`` builds,
``zaqar-otel-server``) and a few choices (stores, ``[profiler]`` flags, ``OTEL_*``).
Out: running servers with their URLs. Each is a :class:`~.process.ServerProcess` (a
context manager: started on entry, stopped on exit), which the test suite
(``tests/servers.py``) and the benchmarks use too::

    with RedisServer() as redis, ZaqarServer(redis_sql_stores(redis.url, sql_url),
                                             profiler_options("SECRET")) as zaqar:
        print(zaqar.url)                    # http://127.0.0.1:PORT
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zaqar_otel.demo.process import (
    LOCALHOST,
    Missing,
    ServerProcess,
    find_binary,
    http_get,
    pick_port,
    port_open,
)

REDIS_HINT = "install it with: apt-get install -y redis-server"
JAEGER_HINT = "build it once with: .ci/build-go-tools jaeger (needs the Go toolchain)"
TRACE_FLAGS = (
    "trace_wsgi_transport",
    "trace_message_store",
    "trace_management_store",
    "trace_redis",
    "trace_mongodb",
    "trace_sqlalchemy",
    "trace_pooling",
)


# --------------------------------------------------------------------------- Redis


def find_redis() -> str:
    """``redis-server`` from ``PATH`` or ``/usr/bin``; :class:`Missing` if neither has it."""
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    if not found:
        raise Missing(f"redis-server is not installed (Zaqar's message store); {REDIS_HINT}")
    return found


class RedisServer(ServerProcess):
    """``redis-server`` without persistence; ``url`` is ``redis://127.0.0.1:PORT``.

    ``port`` fixes the port; without it a free one is picked (again after a port race).
    """

    name = "redis"

    def __init__(
        self, *, port: int | None = None, startup_timeout: float = 30.0, workdir: Path | None = None
    ) -> None:
        self.binary = find_redis()  # before the directory: a missing one leaves nothing behind
        super().__init__(port=port, startup_timeout=startup_timeout, workdir=workdir)

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}"

    def _command(self) -> list[str]:
        return [
            self.binary, "--port", str(self.port), "--bind", LOCALHOST, "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        import socket

        with socket.create_connection((LOCALHOST, self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")


# --------------------------------------------------------------------------- Jaeger v2


@dataclass(frozen=True)
class JaegerPorts:
    """The ports of a Jaeger v2 all-in-one (query API/UI, OTLP, health)."""

    query_http: int
    query_grpc: int
    otlp_grpc: int
    otlp_http: int
    health: int
    health_grpc: int

    @classmethod
    def usual(cls) -> JaegerPorts:
        """The usual ports (16686, 16685, 4317, 4318) where free, random ones elsewhere."""
        return cls(
            pick_port(16686), pick_port(16685), pick_port(4317), pick_port(4318), pick_port(),
            pick_port(),
        )  # fmt: skip

    @classmethod
    def random(cls) -> JaegerPorts:
        return cls(*(pick_port() for _ in dataclasses.fields(cls)))


def jaeger_config(ports: JaegerPorts, max_traces: int = 10_000) -> dict[str, Any]:
    """Jaeger v2 all-in-one: OTLP in, memory store, query API (a collector configuration).

    Every port is explicit (the health gRPC one too: its default, 13132, would collide
    between two instances); no Prometheus listener on :8888.
    """

    def ep(port: int) -> dict[str, str]:
        return {"endpoint": f"{LOCALHOST}:{port}"}

    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {
                "resource": {"service.name": "jaeger"},
                "metrics": {"level": "none"},
                "logs": {"level": "info"},
            },
        },
        "extensions": {
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": max_traces}}}},
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                "enable_tracing": False,  # keep Jaeger's own spans out of the store
                "http": ep(ports.query_http),
                "grpc": ep(ports.query_grpc),
            },
            "healthcheckv2": {
                "use_v2": True,
                "http": ep(ports.health),
                "grpc": ep(ports.health_grpc),
            },
        },
        "receivers": {
            "otlp": {"protocols": {"grpc": ep(ports.otlp_grpc), "http": ep(ports.otlp_http)}}
        },
        # a short batch timeout: spans are queryable quickly
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


class JaegerServer(ServerProcess):
    """Jaeger v2 (an OpenTelemetry Collector distribution) with memory storage.

    Receives OTLP over gRPC and HTTP, serves the query API (``url``). The ports are chosen
    once (``jaeger_ports``, random by default), so ``stop()`` + ``start()`` brings it back
    on the same endpoints with an empty store.
    """

    name = "jaeger"

    def __init__(
        self,
        *,
        jaeger_ports: JaegerPorts | None = None,
        max_traces: int = 10_000,
        startup_timeout: float = 60.0,
        workdir: Path | None = None,
    ) -> None:
        self.binary = find_binary("jaeger", hint=JAEGER_HINT, what="Jaeger v2")
        super().__init__(startup_timeout=startup_timeout, workdir=workdir)
        self.jaeger_ports = jaeger_ports or JaegerPorts.random()
        self.max_traces = max_traces
        self.config_path = self.workdir / "jaeger.yaml"

    @property
    def otlp_http_endpoint(self) -> str:
        """Base URL for OTLP/HTTP (``OTEL_EXPORTER_OTLP_ENDPOINT``; exporters add /v1/traces)."""
        return f"http://{LOCALHOST}:{self.jaeger_ports.otlp_http}"

    @property
    def otlp_grpc_endpoint(self) -> str:
        """host:port for OTLP/gRPC (insecure)."""
        return f"{LOCALHOST}:{self.jaeger_ports.otlp_grpc}"

    @property
    def url(self) -> str:
        """The query API (and UI) base URL."""
        return f"http://{LOCALHOST}:{self.jaeger_ports.query_http}"

    query_url = url

    def _ports(self) -> list[int]:
        return list(dataclasses.astuple(self.jaeger_ports))

    def _new_ports(self) -> bool:
        self.jaeger_ports = JaegerPorts.random()
        self._prepare()  # the configuration names the ports
        return True

    def _prepare(self) -> None:
        config = jaeger_config(self.jaeger_ports, self.max_traces)
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML

    def _command(self) -> list[str]:
        return [self.binary, "--config", str(self.config_path)]

    def _is_ready(self) -> bool:
        health = f"http://{LOCALHOST}:{self.jaeger_ports.health}/status"
        return (
            http_get(health, timeout=1)[0] == 200
            and port_open(self.jaeger_ports.otlp_http)
            and port_open(self.jaeger_ports.otlp_grpc)
            and http_get(f"{self.url}/api/services", timeout=1)[0] == 200
        )


# --------------------------------------------------------------------------- Zaqar


def profiler_options(hmac_key: str, **overrides: str) -> dict[str, str]:
    """``[profiler]`` with ``otel://``, this key and every trace flag on; then ``overrides``."""
    options = {"enabled": "true", "hmac_keys": hmac_key, "connection_string": "otel://"}
    options.update(dict.fromkeys(TRACE_FLAGS, "true"))
    options.update(overrides)
    return options


def redis_sql_stores(redis_url: str, sql_url: str) -> dict[str, dict[str, str]]:
    """zaqar.conf sections: Redis for messages, SQLAlchemy (``sql_url``) for management."""
    return {
        "drivers": {"message_store": "redis", "management_store": "sqlalchemy"},
        "drivers:message_store:redis": {"uri": f"{redis_url}?socket_timeout=5"},
        "drivers:management_store:sqlalchemy": {"uri": sql_url},
    }


def create_management_tables(sql_url: str) -> str:
    """Zaqar's management tables in the database at ``sql_url`` (SQLAlchemy); the URL."""
    import sqlalchemy as sa
    from zaqar.storage.sqlalchemy import tables

    engine = sa.create_engine(sql_url)
    tables.metadata.create_all(engine)
    engine.dispose()
    return sql_url


def render_ini(sections: Mapping[str, Mapping[str, str]]) -> str:
    """An oslo.config file from ``{section: {option: value}}``."""
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def zaqar_conf(
    port: int,
    stores: Mapping[str, Mapping[str, str]],
    profiler: Mapping[str, str],
    transport: str = "wsgi",
) -> str:
    """zaqar.conf: no auth, ``transport`` on 127.0.0.1:``port``, these stores and profiler."""
    sections: dict[str, dict[str, str]] = {
        "DEFAULT": {"auth_strategy": "", "unreliable": "true", "debug": "false"},
        f"drivers:transport:{transport}": {"bind": LOCALHOST, "port": str(port)},
        "profiler": dict(profiler),
    }
    for name, values in stores.items():
        sections.setdefault(name, {}).update(values)
    sections.setdefault("drivers", {})["transport"] = transport
    return render_ini(sections)


def without_otel_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``OTEL_*``, a 200 ms batch delay, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    env.update(extra)
    return env


class ZaqarServer(ServerProcess):
    """``zaqar-otel-server`` with a generated zaqar.conf (``conf_path``); ``url`` its API.

    ``otel_env`` are the ``OTEL_*`` variables it gets (none of this process's own).
    Subclasses may run it otherwise by overriding ``_command`` (a WSGI container...).
    """

    name = "zaqar"
    stop_timeout = 60.0  # workers flush their spans on the way out (OTEL_EXPORTER_OTLP_TIMEOUT)

    def __init__(
        self,
        stores: Mapping[str, Mapping[str, str]],
        profiler: Mapping[str, str],
        otel_env: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        transport: str = "wsgi",
        startup_timeout: float = 60.0,
        workdir: Path | None = None,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout, workdir=workdir)
        self.stores, self.profiler, self.transport = stores, profiler, transport
        self.otel_env = dict(otel_env or {})
        self.conf_path = self.workdir / "zaqar.conf"

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def _prepare(self) -> None:
        self.conf_path.write_text(zaqar_conf(self.port, self.stores, self.profiler, self.transport))

    def _new_ports(self) -> bool:
        fresh = super()._new_ports()
        if fresh:
            self._prepare()  # the configuration names the port
        return fresh

    def _env(self) -> dict[str, str]:
        return without_otel_env(**self.otel_env)

    def _command(self) -> list[str]:
        launcher = Path(sys.executable).parent / "zaqar-otel-server"
        if launcher.exists():
            return [str(launcher), "--config-file", str(self.conf_path)]
        # not installed as a script: the entry point by module
        entry = "from zaqar_otel.zaqar.server import main; main()"
        return [sys.executable, "-c", entry, "--config-file", str(self.conf_path)]

    def _is_ready(self) -> bool:
        return port_open(self.port)
