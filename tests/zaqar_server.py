"""A real Zaqar server process for end-to-end tests, and a profiled client."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from osprofiler import profiler

from tests.servers import free_port, port_open

HMAC_KEY = "zaqar-e2e-secret"
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent

PROFILER_ON = {
    "enabled": "true",
    "hmac_keys": HMAC_KEY,
    "connection_string": "otel://",
    "trace_wsgi_transport": "true",
    "trace_message_store": "true",
    "trace_management_store": "true",
    "trace_redis": "true",
    "trace_mongodb": "true",
    "trace_sqlalchemy": "true",
    "trace_pooling": "true",
}


def create_sql_tables(url: str) -> None:
    from zaqar.storage.sqlalchemy import tables

    engine = sa.create_engine(url)
    tables.metadata.create_all(engine)
    engine.dispose()


def render_conf(
    port: int,
    stores: Mapping[str, Mapping[str, str]],
    profiler_opts: Mapping[str, str],
    transport: str = "wsgi",
) -> str:
    sections: dict[str, dict[str, str]] = {
        "DEFAULT": {"auth_strategy": "", "unreliable": "true", "debug": "false"},
        f"drivers:transport:{transport}": {"bind": "127.0.0.1", "port": str(port)},
        "profiler": dict(profiler_opts),
    }
    for name, values in stores.items():
        sections.setdefault(name, {}).update(values)
    sections.setdefault("drivers", {})["transport"] = transport
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {v}" for k, v in values.items())
        lines.append("")
    return "\n".join(lines)


class ZaqarServer:
    """``zaqar-otel-server`` (or ``opentelemetry-instrument zaqar-server``) on a free port."""

    def __init__(
        self,
        stores: Mapping[str, Mapping[str, str]],
        profiler_opts: Mapping[str, str],
        env: Mapping[str, str],
        launcher: str = "zaqar-otel-server",
        uwsgi_max_requests: int = 0,
        transport: str = "wsgi",
    ) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="zaqar-e2e-"))
        self.conf_path = self.dir / "zaqar.conf"
        self.conf_path.write_text(render_conf(self.port, stores, profiler_opts, transport))
        self.log_path = self.dir / "server.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self.env.update({"OTEL_BSP_SCHEDULE_DELAY": "200"}, **env)
        self.stats_port = free_port()
        if launcher == "uwsgi":
            self.env["ZAQAR_CONFIG_FILE"] = str(self.conf_path)
            self.command = [
                str(BIN / "uwsgi"),
                "--master",
                "--die-on-term",
                "--http-socket",
                f"127.0.0.1:{self.port}",
                "--module",
                "zaqar_otel.zaqar.wsgi:application",
                "--processes",
                "2",
                "--max-requests",
                str(uwsgi_max_requests),
                "--need-app",
                "--disable-logging",
                "--stats",  # wait_until_idle() reads the workers' state there
                f"127.0.0.1:{self.stats_port}",
            ]
            self.process = None
            return
        if launcher == "gunicorn":
            self.env["ZAQAR_CONFIG_FILE"] = str(self.conf_path)
            self.command = [
                str(BIN / "gunicorn"),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
                "zaqar_otel.zaqar.wsgi:application",
            ]
            self.process = None
            return
        self.command = self._server_command(launcher)
        self.command += ["--config-file", str(self.conf_path)]
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _server_command(launcher: str) -> list[str]:
        """``status``: zaqar-otel-server printing status() on SIGUSR1 (tests.apps.zaqar_status);
        ``ferretdb``: the same for FerretDB (tests.apps.zaqar_on_ferretdb);
        ``opentelemetry-instrument``: stock zaqar-server under it; ``opentelemetry-instrument:APP``:
        APP (status or ferretdb) running stock zaqar-server under it; else a script in BIN."""
        apps = {"status": "tests.apps.zaqar_status", "ferretdb": "tests.apps.zaqar_on_ferretdb"}
        instrument = str(BIN / "opentelemetry-instrument")
        if launcher in apps:
            return [sys.executable, "-m", apps[launcher]]
        if launcher == "opentelemetry-instrument":
            return [instrument, str(BIN / "zaqar-server")]
        if launcher.startswith("opentelemetry-instrument:"):
            app = apps[launcher.split(":", 1)[1]]
            return [instrument, sys.executable, "-m", app, "zaqar-server"]
        return [str(BIN / launcher)]

    def status(self, timeout: float = 20) -> dict[str, int]:
        """The server's ``zaqar_otel.status()`` (launchers ``status`` and ``ferretdb``)."""
        from tests.apps.zaqar_status import STATUS_PREFIX

        assert self.process is not None
        seen = self.log_path.read_text(errors="replace").count(STATUS_PREFIX)
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [
                line
                for line in self.log_path.read_text(errors="replace").splitlines()
                if line.startswith(STATUS_PREFIX)
            ]
            if len(lines) > seen:
                result: dict[str, int] = json.loads(lines[-1][len(STATUS_PREFIX) :])
                return result
            time.sleep(0.1)
        raise TimeoutError(f"no status line in {timeout}s:\n{self.log()}")

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 20) -> None:
        """Until ``text`` appears ``count`` times in the server's log."""
        deadline = time.monotonic() + timeout
        while self.log_path.read_text(errors="replace").count(text) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not logged {count}x in {timeout}s:\n{self.log()}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ZaqarServer:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"zaqar-server exited:\n{self.log()}")
            if port_open(self.port):
                return self
            time.sleep(0.2)
        raise RuntimeError(f"zaqar-server did not listen in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def wait_until_idle(self, timeout: float = 30) -> None:
        """uWSGI only: until every worker is idle. uWSGI skips the exit hooks (and so the
        span flush) of a worker it kills while busy, even just finishing a response."""
        deadline = time.monotonic() + timeout
        while True:
            with socket.create_connection(("127.0.0.1", self.stats_port), timeout=5) as conn:
                stats = json.loads(b"".join(iter(lambda: conn.recv(65536), b"")))
            if all(worker["status"] == "idle" for worker in stats["workers"]):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"uWSGI workers still busy after {timeout}s: {stats['workers']}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not os.environ.get("ZAQAR_E2E_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)


def client(url: str, project: str = "e2e-project") -> Any:
    from zaqarclient.queues.v2 import client as zclient

    return zclient.Client(
        url,
        version=2,
        conf={"auth_opts": {"backend": "noauth", "options": {"os_project_id": project}}},
    )


@contextmanager
def profiled(key: str = HMAC_KEY) -> Iterator[str]:
    """Profile client calls made inside; yields the OSProfiler base id."""
    profiler.clean()
    p = profiler.init(key)
    try:
        yield p.get_base_id()
    finally:
        profiler.clean()


def fresh_queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"
