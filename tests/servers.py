"""The test suite's servers: the package's (Redis, Jaeger v2, Zaqar) plus PostgreSQL and
FerretDB, each a :class:`~zaqar_otel.demo.process.ServerProcess` on 127.0.0.1 (random ports).

Plain module, no pytest in here: every class can also be used from a script or a REPL
(``from tests.servers import RedisServer`` from the repository root)::

    with RedisServer() as redis_srv:
        print(redis_srv.url)

* :class:`RedisServer` - Debian ``redis-server``, no persistence (:mod:`zaqar_otel.demo.stack`).
* :class:`PostgresServer` - Debian PostgreSQL (newest ``/usr/lib/postgresql/*/bin``), trust
  auth, run as the ``postgres`` system user when we are root; database ``zaqar`` created.
* :class:`FerretDBServer` - FerretDB v1 with the SQLite handler (a MongoDB wire server).
* :class:`JaegerServer` - Jaeger v2 with memory storage (the package's), plus reading
  traces back as Jaeger's raw JSON; restartable.

The Go binaries (``jaeger``, ``ferretdb``) are looked up in ``$ZAQAR_OTEL_TOOLS`` or
``~/.cache/zaqar-otel/bin`` first (where ``.ci/build-go-tools`` puts them), then on ``PATH``;
``tests/conftest.py`` builds them there first if they are missing.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.waiting import wait_until
from zaqar_otel.demo import stack
from zaqar_otel.demo.process import (
    LOCALHOST,
    Missing,
    ServerError,
    ServerProcess,
    StartFailed,
    find_binary,
    http_get,
    port_open,
)
from zaqar_otel.demo.stack import RedisServer

__all__ = [
    "FerretDBServer",
    "JaegerServer",
    "PostgresServer",
    "RedisServer",
]

APT_HINT = "install it with: apt-get install -y redis-server postgresql"


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
    raise Missing(
        "PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin "
        f"or on PATH; {APT_HINT}"
    )


class PostgresServer(ServerProcess):
    """A throw-away PostgreSQL cluster: trust auth, TCP 127.0.0.1:<port>, socket in the temp dir.

    PostgreSQL refuses to run as root, so as root initdb and postgres run as the ``postgres``
    system user (``setpriv``), with a temp dir outside ``/root`` owned by it.
    Durability is switched off (fsync, synchronous_commit, full_page_writes) for speed.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown
    user = "postgres"
    database = "zaqar"

    def __init__(self, *, startup_timeout: float = 60.0) -> None:
        self.bin_dir = postgres_bin_dir()
        self._as_user: list[str] = []
        self._uid = self._gid = -1
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(self.user)
            except KeyError as err:
                raise Missing(
                    f"running as root but there is no {self.user!r} system user to run "
                    f"PostgreSQL as; {APT_HINT}"
                ) from err
            setpriv = find_binary("setpriv", hint="install util-linux")
            self._as_user = [
                setpriv, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--",
            ]  # fmt: skip
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
        super().__init__(startup_timeout=startup_timeout)  # in /tmp: the postgres user gets in
        self.data_dir = self.workdir / "data"
        self.socket_dir = self.workdir / "sock"

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
            for path in (self.workdir, self.socket_dir):
                os.chown(path, self._uid, self._gid)
            os.chmod(self.workdir, 0o700)
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
                cwd=self.workdir, timeout=self.startup_timeout, check=False,
            )  # fmt: skip
        if result.returncode != 0:
            raise StartFailed(
                f"initdb failed with code {result.returncode}.\nlog {self.log_path}:\n{self.log()}"
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


class FerretDBServer(ServerProcess):
    """FerretDB v1, SQLite handler, MongoDB wire protocol on 127.0.0.1:<port>."""

    name = "ferretdb"

    def __init__(self, *, startup_timeout: float = 60.0) -> None:
        self.binary = find_binary("ferretdb")
        super().__init__(startup_timeout=startup_timeout)
        self.sqlite_dir = self.workdir / "sqlite"
        self.state_dir = self.workdir / "state"

    @property
    def url(self) -> str:
        return f"mongodb://{LOCALHOST}:{self.port}/"

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
        return {**os.environ, "FERRETDB_TELEMETRY": "disable", "DO_NOT_TRACK": "1"}

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


class JaegerServer(stack.JaegerServer):
    """The package's Jaeger v2 (room for 100,000 traces), plus its query API's raw JSON:
    ``/api/traces/{id}`` (:meth:`get_trace`) and ``/api/v3/traces/{id}``."""

    def __init__(self, *, startup_timeout: float = 60.0) -> None:
        super().__init__(max_traces=100_000, startup_timeout=startup_timeout)

    def send_control_span(self) -> str:
        """One span sent by OTLP/HTTP, as the servers under test send theirs; its trace id.
        Once it is queryable, so is everything sent here before it (tests/waiting.py)."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = TracerProvider()
        exporter = OTLPSpanExporter(endpoint=f"{self.otlp_http_endpoint}/v1/traces")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        try:
            with provider.get_tracer("tests.control").start_as_current_span("control") as span:
                trace_id = f"{span.get_span_context().trace_id:032x}"
        finally:
            provider.shutdown()
        return trace_id

    # -- query API
    def get_trace(self, trace_hex: str) -> dict[str, Any] | None:
        """The v1-style JSON of ``/api/traces/{id}`` (``{"data": [trace], ...}``); None if 404."""
        return self._get_json(f"/api/traces/{trace_hex}")

    def get_trace_v3(self, trace_hex: str) -> dict[str, Any] | None:
        """OTLP-JSON of ``/api/v3/traces/{id}`` (``{"result": {"resourceSpans": ...}}``)."""
        return self._get_json(f"/api/v3/traces/{trace_hex}")

    def _get_json(self, path: str) -> dict[str, Any] | None:
        status, body = http_get(f"{self.query_url}{path}", timeout=5)
        if status == 404:
            return None
        if status != 200:
            raise ServerError(f"jaeger {path}: HTTP {status}: {body[:500]!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    @staticmethod
    def trace_spans(trace: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The spans of a ``get_trace`` answer ([] for None)."""
        if not trace:
            return []
        return [span for t in trace.get("data") or [] for span in t.get("spans") or []]

    def wait_for_trace(
        self, trace_hex: str, min_spans: int = 1, timeout: float = 20.0
    ) -> dict[str, Any]:
        """Poll ``/api/traces/{id}`` until it has ``min_spans`` spans; the v1-style JSON."""

        def enough() -> dict[str, Any] | None:
            trace = self.get_trace(trace_hex)
            return trace if len(self.trace_spans(trace)) >= min_spans else None

        return wait_until(enough, f"jaeger: trace {trace_hex} with {min_spans}+ spans", timeout)
