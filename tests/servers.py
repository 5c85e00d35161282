"""Real servers for the tests, started as subprocesses on 127.0.0.1 (random free ports).

Plain module, no pytest in here: every class can also be used from a script or a REPL
(``from tests.servers import RedisServer`` from the repository root)::

    with RedisServer() as redis_srv:
        print(redis_srv.url)

Servers:

* :class:`RedisServer` - Debian ``redis-server``, no persistence.
* :class:`PostgresServer` - Debian PostgreSQL (newest ``/usr/lib/postgresql/*/bin``), trust
  auth, run as the ``postgres`` system user when we are root; database ``zaqar`` created.
* :class:`FerretDBServer` - FerretDB v1 with the SQLite handler (a MongoDB wire server).
* :class:`JaegerServer` - Jaeger v2 (an OpenTelemetry Collector distribution) with memory
  storage, OTLP gRPC + HTTP receivers and the query API; restartable.
* :class:`OTLPReceiver` - an in-process OTLP/HTTP (protobuf) trace receiver that decodes the
  spans into :class:`ReceivedSpan` records, with switches to answer errors or hang (it lives
  in :mod:`zaqar_otel.demo.receiver`, which the demo uses too; re-exported here).

The Go binaries (``jaeger``, ``ferretdb``) are looked up in ``$ZAQAR_OTEL_TOOLS`` or
``~/.cache/zaqar-otel/bin`` first (where ``.ci/build-go-tools`` puts them), then on ``PATH``.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from zaqar_otel.demo.receiver import (
    OTLPReceiver,
    ReceivedRequest,
    ReceivedSpan,
)
from zaqar_otel.demo.stack import JaegerPorts, jaeger_config

__all__ = [
    "BinaryNotFoundError",
    "FerretDBServer",
    "JaegerServer",
    "OTLPReceiver",
    "PortInUseError",
    "PostgresServer",
    "ReceivedRequest",
    "ReceivedSpan",
    "RedisServer",
    "ServerError",
    "ServerStartError",
    "find_binary",
    "free_port",
    "listening_ports",
    "tools_dirs",
]

LOCALHOST = "127.0.0.1"
BUILD_HINT = "run .ci/build-go-tools to build it (it caches in ~/.cache/zaqar-otel/bin)"
APT_HINT = "install it with: apt-get install -y redis-server postgresql"


# --------------------------------------------------------------------------- errors


class ServerError(RuntimeError):
    """Base class of the errors raised by this module."""


class BinaryNotFoundError(ServerError):
    """A server binary is not installed (the test should be skipped, or fail in CI)."""


class ServerStartError(ServerError):
    """A server did not become ready in time or exited early; the message has its log tail."""


class PortInUseError(ServerStartError):
    """A server exited at start because one of its ports was taken."""


# --------------------------------------------------------------------------- helpers


def tools_dirs() -> list[Path]:
    """Directories searched for our own tool binaries before ``PATH``."""
    dirs: list[Path] = []
    env = os.environ.get("ZAQAR_OTEL_TOOLS")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path.home() / ".cache" / "zaqar-otel" / "bin")
    return dirs


def find_binary(name: str, *, extra_dirs: Sequence[Path] = (), hint: str = BUILD_HINT) -> str:
    """Absolute path of executable ``name``: tools dirs, then ``extra_dirs``, then ``PATH``.

    Raises :class:`BinaryNotFoundError` with an explanation of how to get it.
    """
    searched = [*tools_dirs(), *extra_dirs]
    for directory in searched:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    where = ", ".join(str(d) for d in searched)
    raise BinaryNotFoundError(f"{name!r} not found in {where} or on PATH; {hint}")


_ports_lock = threading.Lock()
_ports_given: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and not handed out before by this process."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOCALHOST, 0))
                port = int(sock.getsockname()[1])
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise ServerError("could not find a free TCP port on 127.0.0.1")


def port_open(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listening_ports(pid: int) -> set[int] | None:
    """TCP ports process ``pid`` listens on (from /proc); None where /proc cannot tell."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    inodes = set()
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url``: (status, body); (0, b'') if the connection failed."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()
    except (OSError, http.client.HTTPException):
        return 0, b""


# --------------------------------------------------------------------------- base class

_live_servers: set[ProcessServer] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:  # pragma: no cover - only on abnormal ends
    with _live_lock:
        servers = list(_live_servers)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


class ProcessServer:
    """A server run as one subprocess, with its files in a temp dir.

    Subclasses implement :meth:`_command` and :meth:`_is_ready` and may override
    :meth:`_prepare` (run once, before the first start) and :meth:`_after_ready`.
    ``start()`` is idempotent; ``stop()`` keeps the temp dir (and the ports) so that the
    server can be started again; ``close()`` stops and removes the temp dir.
    """

    name: ClassVar[str] = "server"
    stop_signal: ClassVar[int] = signal.SIGTERM

    def __init__(self, *, startup_timeout: float = 60.0, base_dir: str | None = None) -> None:
        self.startup_timeout = startup_timeout
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"zaqar-otel-{self.name}-", dir=base_dir))
        self.log_path = self.tmpdir / f"{self.name}.log"
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self._closed = False
        self._ever_started = False
        self._log_offset = 0

    # -- to override
    def _prepare(self) -> None:
        """One-time setup before the first start (write config, init data dir...)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _after_ready(self) -> None:
        """Run once the server answers, on every start."""

    def _env(self) -> dict[str, str] | None:
        return None

    def _ports(self) -> list[int]:
        """The TCP ports the process must listen on before it counts as started."""
        return []

    def _new_ports(self) -> bool:
        """Pick fresh ports after a port clash; False if the ports were fixed by the caller."""
        return False

    # -- lifecycle
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def ports(self) -> list[int]:
        """The TCP ports this server listens on (127.0.0.1)."""
        return self._ports()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> ProcessServer:
        """Start and wait until ready (idempotent). On a first start that loses a port race
        (another process took a chosen port), retry with fresh ports where possible."""
        if self._closed:
            raise ServerError(f"{self.name}: already closed")
        if self.running:
            return self
        started = time.monotonic()
        for attempt in range(1, 4):
            if not self._prepared:
                self._prepare()
                self._prepared = True
            try:
                self._launch()
                self._wait_ready(started)
                self._after_ready()
            except PortInUseError:
                self.stop()
                if self._ever_started or attempt == 3 or not self._new_ports():
                    raise
                continue
            except BaseException:
                self.stop()
                raise
            break
        self._ever_started = True
        self.startup_seconds = time.monotonic() - started
        return self

    def _launch(self) -> None:
        cmd = self._command()
        with self.log_path.open("ab") as log:
            log.write(f"\n--- starting: {' '.join(cmd)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmpdir,
                env=self._env(),
                start_new_session=True,  # a Ctrl-C of pytest does not hit it before stop()
            )
        with _live_lock:
            _live_servers.add(self)

    def _this_run_log(self) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout
        last_error: Exception | None = None
        while True:
            proc = self._proc
            assert proc is not None
            code = proc.poll()
            if code is not None:
                self._proc = None
                error = (
                    PortInUseError
                    if "already in use" in self._this_run_log().lower()
                    else ServerStartError
                )
                raise error(
                    f"{self.name} exited with code {code} while starting.\n"
                    f"command: {' '.join(self._command())}\n"
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                # our process must own the ports: a port race could leave another server
                # answering there while ours fails to bind
                owned = listening_ports(proc.pid)
                missing = [p for p in self._ports() if owned is not None and p not in owned]
                if missing:
                    last_error = ServerError(
                        f"ports {missing} not yet listened on by pid {proc.pid}"
                    )
                elif self._is_ready():
                    return
            except Exception as err:  # not ready yet, keep the reason for the message
                last_error = err
            if time.monotonic() > deadline:
                reason = f" (last check: {last_error!r})" if last_error else ""
                raise ServerStartError(
                    f"{self.name} not ready after {self.startup_timeout:.0f}s{reason}.\n"
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the process (signal, then SIGKILL after ``timeout``); restartable."""
        proc, self._proc = self._proc, None
        with _live_lock:
            _live_servers.discard(self)
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

    def kill(self) -> None:
        """SIGKILL the server (a crash, for fault tests); restartable with start()."""
        proc, self._proc = self._proc, None
        with _live_lock:
            _live_servers.discard(self)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def close(self) -> None:
        """Stop and delete the temp dir. Not restartable afterwards."""
        self.stop()
        self._closed = True
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def log(self, lines: int = 40) -> str:
        """Tail of the server's log (stdout + stderr)."""
        return log_tail(self.log_path, lines)

    def __enter__(self) -> ProcessServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {state} pid={self.pid} dir={self.tmpdir}>"


# --------------------------------------------------------------------------- Redis


class RedisServer(ProcessServer):
    """``redis-server`` on 127.0.0.1:<port>, no RDB/AOF persistence."""

    name = "redis"

    def __init__(self, *, port: int | None = None, startup_timeout: float = 30.0) -> None:
        # binaries first: a missing one must not leave a temp dir behind
        self.binary = find_binary("redis-server", extra_dirs=[Path("/usr/bin")], hint=APT_HINT)
        super().__init__(startup_timeout=startup_timeout)
        self.port = port or free_port()
        self._fixed_port = port is not None

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def _ports(self) -> list[int]:
        return [self.port]

    def _new_ports(self) -> bool:
        if self._fixed_port:
            return False
        self.port = free_port()
        return True

    def _command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", LOCALHOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.tmpdir),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        with socket.create_connection((LOCALHOST, self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb and postgres in it."""
    candidates = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        bin_dir = Path(path)
        version = bin_dir.parent.name
        if (bin_dir / "postgres").exists() and (bin_dir / "initdb").exists():
            key = tuple(int(p) if p.isdigit() else 0 for p in version.split("."))
            candidates.append((key, bin_dir))
    if candidates:
        return max(candidates)[1]
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise BinaryNotFoundError(
        "PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin "
        f"or on PATH; {APT_HINT}"
    )


class PostgresServer(ProcessServer):
    """A throw-away PostgreSQL cluster: trust auth, TCP 127.0.0.1:<port>, socket in the temp dir.

    PostgreSQL refuses to run as root, so as root initdb and postgres run as the ``postgres``
    system user (``setpriv``), with a temp dir outside ``/root`` owned by it.
    Durability is switched off (fsync, synchronous_commit, full_page_writes) for speed.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown
    user = "postgres"
    database = "zaqar"

    def __init__(self, *, port: int | None = None, startup_timeout: float = 60.0) -> None:
        self.bin_dir = postgres_bin_dir()
        self._as_user: list[str] = []
        self._uid = self._gid = -1
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(self.user)
            except KeyError as err:
                raise BinaryNotFoundError(
                    f"running as root but there is no {self.user!r} system user to run "
                    f"PostgreSQL as; {APT_HINT}"
                ) from err
            setpriv = find_binary("setpriv", hint="install util-linux")
            self._as_user = [
                setpriv, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--",
            ]  # fmt: skip
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
        # /tmp, not pytest's 0700 basetemp, so that the postgres user can get in
        super().__init__(startup_timeout=startup_timeout, base_dir=tempfile.gettempdir())
        self.port = port or free_port()
        self._fixed_port = port is not None
        self.data_dir = self.tmpdir / "data"
        self.socket_dir = self.tmpdir / "sock"

    def _ports(self) -> list[int]:
        return [self.port]

    def _new_ports(self) -> bool:
        if self._fixed_port:
            return False
        self.port = free_port()
        return True

    # -- URLs
    def url_for(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}@{LOCALHOST}:{self.port}/{database}"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``zaqar`` database."""
        return self.url_for(self.database)

    @property
    def dsn(self) -> str:
        """libpq DSN of the ``zaqar`` database (for psycopg2.connect)."""
        return self.url_for(self.database, driver="postgresql")

    def _prepare(self) -> None:
        self.socket_dir.mkdir()
        if self._as_user:
            for path in (self.tmpdir, self.socket_dir):
                os.chown(path, self._uid, self._gid)
            os.chmod(self.tmpdir, 0o700)
        initdb = [
            *self._as_user,
            str(self.bin_dir / "initdb"),
            "--pgdata", str(self.data_dir),
            "--username", self.user,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--no-locale",
            "--no-sync",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                initdb, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.tmpdir, timeout=self.startup_timeout, check=False,
            )  # fmt: skip
        if result.returncode != 0:
            raise ServerStartError(
                f"initdb failed with code {result.returncode}.\n"
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def _command(self) -> list[str]:
        settings = {
            "listen_addresses": LOCALHOST,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "logging_collector": "off",
        }
        cmd = [*self._as_user, str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        return cmd

    def _connect(self, database: str = "postgres") -> Any:
        import psycopg2  # test dependency (psycopg2-binary)

        return psycopg2.connect(
            host=LOCALHOST, port=self.port, user=self.user, dbname=database, connect_timeout=2
        )

    def _is_ready(self) -> bool:
        conn = self._connect()
        conn.close()
        return True

    def _after_ready(self) -> None:
        self.create_database(self.database, drop=False)

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement in autocommit mode; returns the rows (if any)."""
        conn = self._connect(database)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str, *, drop: bool = True) -> str:
        """Create database ``name`` (dropping an old one if ``drop``); returns its URL."""
        ident = '"' + name.replace('"', '""') + '"'
        if drop:
            self.execute(f"DROP DATABASE IF EXISTS {ident} WITH (FORCE)")
        literal = "'" + name.replace("'", "''") + "'"
        exists = self.execute(f"SELECT 1 FROM pg_database WHERE datname = {literal}")
        if not exists:
            self.execute(f"CREATE DATABASE {ident}")
        return self.url_for(name)


# --------------------------------------------------------------------------- FerretDB


class FerretDBServer(ProcessServer):
    """FerretDB v1, SQLite handler, MongoDB wire protocol on 127.0.0.1:<port>."""

    name = "ferretdb"

    def __init__(self, *, port: int | None = None, startup_timeout: float = 60.0) -> None:
        self.binary = find_binary("ferretdb")
        super().__init__(startup_timeout=startup_timeout)
        self.port = port or free_port()
        self._fixed_port = port is not None
        self.sqlite_dir = self.tmpdir / "sqlite"
        self.state_dir = self.tmpdir / "state"

    @property
    def url(self) -> str:
        return f"mongodb://{LOCALHOST}:{self.port}/"

    def _ports(self) -> list[int]:
        return [self.port]

    def _new_ports(self) -> bool:
        if self._fixed_port:
            return False
        self.port = free_port()
        return True

    def _prepare(self) -> None:
        self.sqlite_dir.mkdir()
        self.state_dir.mkdir()

    def _command(self) -> list[str]:
        return [
            self.binary,
            "--handler=sqlite",
            f"--sqlite-url=file:{self.sqlite_dir}/",
            f"--listen-addr={LOCALHOST}:{self.port}",
            f"--state-dir={self.state_dir}",
            "--debug-addr=-",
            "--telemetry=disable",
            "--log-level=info",
        ]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FERRETDB_TELEMETRY"] = "disable"
        env["DO_NOT_TRACK"] = "1"
        return env

    def _is_ready(self) -> bool:
        if not port_open(self.port):
            return False
        import pymongo  # optional dependency [mongodb]

        client: Any = pymongo.MongoClient(
            self.url, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
        )
        try:
            client.admin.command("ping")
        finally:
            client.close()
        return True


# --------------------------------------------------------------------------- Jaeger v2


class JaegerServer(ProcessServer):
    """Jaeger v2 (``jaeger`` binary, an OTel Collector distribution) with memory storage.

    Receives OTLP over gRPC and HTTP and serves the query API (``/api/traces/{id}``,
    ``/api/v3/traces/{id}``). All ports are chosen once, so ``stop()`` + ``start()`` brings it
    back on the same endpoints (with an empty store) - for collector down/up tests.
    """

    name = "jaeger"

    def __init__(self, *, startup_timeout: float = 60.0, max_traces: int = 100_000) -> None:
        self.binary = find_binary("jaeger")
        super().__init__(startup_timeout=startup_timeout)
        self.max_traces = max_traces
        self.otlp_grpc_port = self.otlp_http_port = self.query_http_port = 0
        self.query_grpc_port = self.health_http_port = self.health_grpc_port = 0
        self._pick_ports()
        self.config_path = self.tmpdir / "config.yaml"

    # -- endpoints
    @property
    def otlp_http_endpoint(self) -> str:
        """Base URL for OTLP/HTTP (the exporter appends /v1/traces)."""
        return f"http://{LOCALHOST}:{self.otlp_http_port}"

    @property
    def otlp_traces_url(self) -> str:
        return f"{self.otlp_http_endpoint}/v1/traces"

    @property
    def otlp_grpc_endpoint(self) -> str:
        """host:port for OTLP/gRPC (insecure)."""
        return f"{LOCALHOST}:{self.otlp_grpc_port}"

    @property
    def query_url(self) -> str:
        return f"http://{LOCALHOST}:{self.query_http_port}"

    @property
    def health_url(self) -> str:
        return f"http://{LOCALHOST}:{self.health_http_port}/status"

    def config(self) -> dict[str, Any]:
        """The collector configuration (written as YAML - JSON is valid YAML)."""
        ports = JaegerPorts(
            query_http=self.query_http_port,
            query_grpc=self.query_grpc_port,
            otlp_grpc=self.otlp_grpc_port,
            otlp_http=self.otlp_http_port,
            health=self.health_http_port,
            health_grpc=self.health_grpc_port,
        )
        return jaeger_config(ports, self.max_traces)

    def _ports(self) -> list[int]:
        return [
            self.otlp_grpc_port,
            self.otlp_http_port,
            self.query_http_port,
            self.query_grpc_port,
            self.health_http_port,
            self.health_grpc_port,
        ]

    def _pick_ports(self) -> None:
        self.otlp_grpc_port = free_port()
        self.otlp_http_port = free_port()
        self.query_http_port = free_port()
        self.query_grpc_port = free_port()
        self.health_http_port = free_port()
        self.health_grpc_port = free_port()

    def _new_ports(self) -> bool:
        self._pick_ports()
        self._prepare()  # the config names the ports
        return True

    def _prepare(self) -> None:
        text = "# generated by tests/servers.py (JSON is YAML)\n"
        text += json.dumps(self.config(), indent=2) + "\n"
        self.config_path.write_text(text)

    def _command(self) -> list[str]:
        return [self.binary, "--config", str(self.config_path)]

    def _is_ready(self) -> bool:
        status, _ = _http_get(self.health_url, timeout=1)
        if status != 200:
            return False
        if not (port_open(self.otlp_grpc_port) and port_open(self.otlp_http_port)):
            return False
        status, _ = _http_get(f"{self.query_url}/api/services", timeout=1)
        return status == 200

    # -- query API
    def get_trace(self, trace_id_hex: str) -> dict[str, Any] | None:
        """The v1-style JSON of ``/api/traces/{id}`` (``{"data": [trace], ...}``); None if 404."""
        status, body = _http_get(f"{self.query_url}/api/traces/{trace_id_hex}", timeout=5)
        if status == 404:
            return None
        if status != 200:
            raise ServerError(f"jaeger /api/traces/{trace_id_hex}: HTTP {status}: {body[:500]!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    def get_trace_v3(self, trace_id_hex: str) -> dict[str, Any] | None:
        """OTLP-JSON of ``/api/v3/traces/{id}`` (``{"result": {"resourceSpans": ...}}``)."""
        status, body = _http_get(f"{self.query_url}/api/v3/traces/{trace_id_hex}", timeout=5)
        if status == 404:
            return None
        if status != 200:
            raise ServerError(
                f"jaeger /api/v3/traces/{trace_id_hex}: HTTP {status}: {body[:500]!r}"
            )
        result: dict[str, Any] = json.loads(body)
        return result

    @staticmethod
    def trace_spans(trace: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The spans of a ``get_trace`` answer ([] for None)."""
        if not trace:
            return []
        return [span for t in trace.get("data") or [] for span in t.get("spans") or []]

    def wait_for_trace(
        self, trace_id_hex: str, min_spans: int = 1, timeout: float = 20.0
    ) -> dict[str, Any]:
        """Poll ``/api/traces/{id}`` until it has ``min_spans`` spans; the v1-style JSON."""
        deadline = time.monotonic() + timeout
        trace: dict[str, Any] | None = None
        while True:
            trace = self.get_trace(trace_id_hex)
            count = len(self.trace_spans(trace))
            if count >= min_spans and trace is not None:
                return trace
            if time.monotonic() > deadline:
                names = sorted(s.get("operationName", "?") for s in self.trace_spans(trace))
                raise TimeoutError(
                    f"jaeger: trace {trace_id_hex} has {count} span(s) after {timeout}s, "
                    f"wanted {min_spans}: {names}"
                )
            time.sleep(0.2)
