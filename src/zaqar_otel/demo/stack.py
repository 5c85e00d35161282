"""The local servers of the demo: Redis, Jaeger v2 and ``zaqar-otel-server``, on 127.0.0.1.

Each server is one subprocess with its log in a work directory; :class:`Stack` starts them
in order and stops everything it started, in reverse order, whatever happened::

    with Stack(Path(tempfile.mkdtemp())) as stack:
        redis = stack.start(redis_server(find_redis(), stack.workdir))
        print(redis.url)                     # redis://127.0.0.1:PORT

Missing programs raise :class:`Missing` with a one-line explanation of how to get them;
a server that does not come up raises :class:`StartFailed` with the tail of its log.
This module is for the demo; the test suite has its own, more thorough harness
(``tests/servers.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

LOCALHOST = "127.0.0.1"
REDIS_HINT = "install it with: apt-get install -y redis-server"
JAEGER_HINT = "build it once with: .ci/build-go-tools jaeger (needs the Go toolchain)"


class Missing(RuntimeError):
    """A program the demo needs is not installed; the message says how to get it."""


class StartFailed(RuntimeError):
    """A server exited or did not answer in time; the message has its log tail."""


# --------------------------------------------------------------------------- ports, binaries


def port_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:``port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the servers do: connections of an earlier run in TIME_WAIT do not count
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
    return not port_open(port)


def port_open(port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=timeout):
            return True
    except OSError:
        return False


_handed_out: set[int] = set()


def pick_port(preferred: int | None = None) -> int:
    """``preferred`` if it is free, else a random free port (never the same one twice)."""
    if preferred is not None and preferred not in _handed_out and port_free(preferred):
        _handed_out.add(preferred)
        return preferred
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOCALHOST, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def tools_dir() -> Path:
    """Where ``.ci/build-go-tools`` puts the Go servers: ``$ZAQAR_OTEL_TOOLS`` or the cache."""
    env = os.environ.get("ZAQAR_OTEL_TOOLS", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zaqar-otel" / "bin"


def find_jaeger() -> str:
    """The Jaeger v2 binary: in :func:`tools_dir`, else on ``PATH``; :class:`Missing` if none."""
    candidate = tools_dir() / "jaeger"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("jaeger")
    if found:
        return found
    raise Missing(f"Jaeger v2 is not in {tools_dir()} nor on PATH; {JAEGER_HINT}")


def find_redis() -> str:
    """``redis-server`` from ``PATH`` or ``/usr/bin``; :class:`Missing` if neither has it."""
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    if not found:
        raise Missing(f"redis-server is not installed (Zaqar's message store); {REDIS_HINT}")
    return found


def find_go() -> str | None:
    """The Go toolchain: on ``PATH`` or in ``/usr/local/go/bin``; None if absent."""
    return shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")


def http_status(url: str, timeout: float = 1.0) -> int:
    """Status of GET ``url``; 0 if there was no HTTP answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


# --------------------------------------------------------------------------- one server


@dataclass
class Server:
    """One server process: what to run, and how to tell that it is ready."""

    name: str
    command: list[str]
    ready: Callable[[], bool]
    log_path: Path
    url: str = ""
    env: Mapping[str, str] | None = None
    stop_signal: int = signal.SIGTERM
    startup_timeout: float = 60.0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Server:
        """Run the command (its own session: a Ctrl-C reaches us, not it) and wait."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if self.env is None else dict(self.env),
                cwd=self.log_path.parent,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise StartFailed(f"{self.name} exited with code {code}:\n{self.log_tail()}")
            with contextlib.suppress(Exception):
                if self.ready():
                    return self
            if time.monotonic() > deadline:
                raise StartFailed(
                    f"{self.name} not ready after {self.startup_timeout:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Signal it, wait; SIGKILL its process group after ``timeout``. Idempotent."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(self.stop_signal)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Stack:
    """Servers started in order and stopped in reverse order on exit (also on Ctrl-C)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[Server] = []

    def start(self, server: Server) -> Server:
        self.servers.append(server)
        return server.start()

    def stop(self) -> None:
        while self.servers:
            self.servers.pop().stop()

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- the servers


def redis_server(binary: str, workdir: Path) -> Server:
    """``redis-server`` on a free port, no persistence."""
    port = pick_port(None)

    def ready() -> bool:
        with socket.create_connection((LOCALHOST, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    command = [
        binary, "--port", str(port), "--bind", LOCALHOST, "--save", "", "--appendonly", "no",
        "--dir", str(workdir), "--daemonize", "no", "--logfile", "",
    ]  # fmt: skip
    return Server("redis", command, ready, workdir / "redis.log", url=f"redis://{LOCALHOST}:{port}")


@dataclass(frozen=True)
class JaegerPorts:
    """The ports of a Jaeger v2 all-in-one (query/UI, OTLP, health)."""

    query_http: int
    query_grpc: int
    otlp_grpc: int
    otlp_http: int
    health: int
    health_grpc: int = 0

    @classmethod
    def pick(cls) -> JaegerPorts:
        """The usual ports (16686, 16685, 4317, 4318) where free, random ones elsewhere."""
        return cls(
            pick_port(16686), pick_port(16685), pick_port(4317), pick_port(4318), pick_port()
        )


def jaeger_config(ports: JaegerPorts, max_traces: int = 10_000) -> dict[str, Any]:
    """Jaeger v2 all-in-one: OTLP in, memory store, query API (a collector configuration).

    Every port is explicit (``health_grpc`` too, when set: its default, 13132,
    would collide between two instances); no Prometheus listener on :8888.
    """

    def ep(port: int) -> dict[str, str]:
        return {"endpoint": f"{LOCALHOST}:{port}"}

    health: dict[str, Any] = {"use_v2": True, "http": ep(ports.health)}
    if ports.health_grpc:
        health["grpc"] = ep(ports.health_grpc)
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
            "healthcheckv2": health,
        },
        "receivers": {
            "otlp": {"protocols": {"grpc": ep(ports.otlp_grpc), "http": ep(ports.otlp_http)}}
        },
        # a short batch timeout: spans are queryable quickly
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


def jaeger_server(binary: str, workdir: Path, ports: JaegerPorts) -> Server:
    """Jaeger v2 with :func:`jaeger_config`; ``url`` is the query API base URL."""
    config = workdir / "jaeger.yaml"
    config.write_text(json.dumps(jaeger_config(ports), indent=2) + "\n")  # JSON is YAML
    query = f"http://{LOCALHOST}:{ports.query_http}"

    def ready() -> bool:
        return (
            http_status(f"http://{LOCALHOST}:{ports.health}/status") == 200
            and port_open(ports.otlp_http)
            and port_open(ports.otlp_grpc)
            and http_status(f"{query}/api/services") == 200
        )

    return Server(
        "jaeger", [binary, "--config", str(config)], ready, workdir / "jaeger.log", url=query
    )


def create_sqlite_store(path: Path) -> str:
    """A SQLite file with Zaqar's management tables; its SQLAlchemy URL."""
    import sqlalchemy as sa
    from zaqar.storage.sqlalchemy import tables

    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    tables.metadata.create_all(engine)
    engine.dispose()
    return url


def zaqar_conf(port: int, redis_url: str, sql_url: str, hmac_key: str) -> str:
    """zaqar.conf: Redis messages, SQL management store, no auth, every trace flag on."""
    sections = {
        "DEFAULT": {"auth_strategy": "", "unreliable": "true", "debug": "false"},
        "drivers": {"message_store": "redis", "management_store": "sqlalchemy"},
        "drivers:transport:wsgi": {"bind": LOCALHOST, "port": str(port)},
        "drivers:message_store:redis": {"uri": f"{redis_url}?socket_timeout=5"},
        "drivers:management_store:sqlalchemy": {"uri": sql_url},
        "profiler": {
            "enabled": "true",
            "hmac_keys": hmac_key,
            "connection_string": "otel://",
            "trace_wsgi_transport": "true",
            "trace_message_store": "true",
            "trace_management_store": "true",
            "trace_redis": "true",
            "trace_mongodb": "true",
            "trace_sqlalchemy": "true",
            "trace_pooling": "true",
        },
    }
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def zaqar_server(conf_path: Path, port: int, otlp_http_endpoint: str) -> Server:
    """``zaqar-otel-server`` exporting OTLP/HTTP to ``otlp_http_endpoint``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_http_endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_SERVICE_NAME="zaqar",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    launcher = Path(sys.executable).parent / "zaqar-otel-server"
    command = [str(launcher), "--config-file", str(conf_path)]
    if not launcher.exists():  # not installed as a script: run the entry point by module
        command = [sys.executable, "-c", "from zaqar_otel.zaqar.server import main; main()"]
        command += ["--config-file", str(conf_path)]
    return Server(
        "zaqar",
        command,
        lambda: port_open(port),
        conf_path.parent / "zaqar.log",
        url=f"http://{LOCALHOST}:{port}",
        env=env,
    )
