"""Real Zaqar server processes for end-to-end tests (the package's ZaqarServer, run by one of
the launchers operators use), and the client helpers the tests share."""

from __future__ import annotations

import json
import signal
import sys
import uuid
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from tests.waiting import wait_for_log, wait_until
from zaqar_otel.demo import stack
from zaqar_otel.demo.stack import create_management_tables, redis_sql_stores
from zaqar_otel.lookup import client as profiling

__all__ = [
    "HMAC_KEY",
    "PROFILER_ON",
    "ZaqarServer",
    "client",
    "create_management_tables",
    "fresh_queue_name",
    "profiled",
    "redis_sql_stores",
]

HMAC_KEY = "zaqar-e2e-secret"
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
PROFILER_ON = stack.profiler_options(HMAC_KEY)
APPS = {"status": "tests.apps.zaqar_status", "ferretdb": "tests.apps.zaqar_on_ferretdb"}
LAUNCHERS = (
    "zaqar-otel-server", "opentelemetry-instrument", *APPS, *(f"opentelemetry-instrument:{a}"
    for a in APPS), "uwsgi", "gunicorn",
)  # fmt: skip


class ZaqarServer(stack.ZaqarServer):
    """Zaqar with the bridge, run by ``launcher``:

    * ``zaqar-otel-server`` (the package's default), ``opentelemetry-instrument zaqar-server``;
    * ``status``: zaqar-otel-server printing ``status()`` on SIGUSR1 (``tests.apps.zaqar_status``;
      read it with :meth:`status`); ``ferretdb``: the same for Zaqar's MongoDB store on FerretDB
      (``tests.apps.zaqar_on_ferretdb``); ``opentelemetry-instrument:APP``: APP (``status`` or
      ``ferretdb``) running stock zaqar-server under ``opentelemetry-instrument``;
    * ``uwsgi`` (2 workers, recycled after ``uwsgi_max_requests`` if set), ``gunicorn``
      (2 workers): ``zaqar_otel.zaqar.wsgi:application`` in forked workers.
    """

    def __init__(
        self,
        stores: Mapping[str, Mapping[str, str]],
        profiler_opts: Mapping[str, str],
        env: Mapping[str, str],
        launcher: str = "zaqar-otel-server",
        uwsgi_max_requests: int = 0,
        transport: str = "wsgi",
    ) -> None:
        if launcher not in LAUNCHERS:
            raise ValueError(f"unknown launcher {launcher!r}; one of {LAUNCHERS}")
        super().__init__(stores, profiler_opts, env, transport=transport)
        self.launcher = launcher
        self.uwsgi_max_requests = uwsgi_max_requests
        if launcher in ("uwsgi", "gunicorn"):
            self.otel_env["ZAQAR_CONFIG_FILE"] = str(self.conf_path)

    def _cwd(self) -> Path:
        return ROOT  # python -m tests.apps...

    def _command(self) -> list[str]:
        conf = ["--config-file", str(self.conf_path)]
        app = "zaqar_otel.zaqar.wsgi:application"
        address = f"127.0.0.1:{self.port}"
        if self.launcher == "uwsgi":
            return [
                # SIGTERM stops as docs/production.md says: gracefully, workers flush
                str(BIN / "uwsgi"), "--master", "--hook-master-start",
                "unix_signal:15 gracefully_kill_them_all", "--http-socket", address,
                "--module", app, "--processes", "2", "--max-requests",
                str(self.uwsgi_max_requests), "--need-app", "--disable-logging",
            ]  # fmt: skip
        if self.launcher == "gunicorn":
            return [str(BIN / "gunicorn"), "--bind", address, "--workers", "2", app]
        instrument = str(BIN / "opentelemetry-instrument")
        if self.launcher in APPS:
            return [sys.executable, "-m", APPS[self.launcher], *conf]
        if self.launcher == "opentelemetry-instrument":
            return [instrument, str(BIN / "zaqar-server"), *conf]
        if self.launcher.startswith("opentelemetry-instrument:"):
            app = APPS[self.launcher.split(":", 1)[1]]
            return [instrument, sys.executable, "-m", app, "zaqar-server", *conf]
        return super()._command()

    def status(self, timeout: float = 20) -> dict[str, int]:
        """The server's ``zaqar_otel.status()`` (launchers ``status`` and ``ferretdb``)."""
        from tests.apps.zaqar_status import STATUS_PREFIX

        offset = self.log_size()
        self.send_signal(signal.SIGUSR1)
        since = wait_for_log(self, STATUS_PREFIX, offset, timeout)
        line = since.split(STATUS_PREFIX, 1)[1].splitlines()[0]
        result: dict[str, int] = json.loads(line)
        return result

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 20) -> None:
        """Until ``text`` appears ``count`` times in the server's log."""
        wait_until(lambda: self.log_since(0).count(text) >= count, f"{text!r} x{count}", timeout)


def client(url: str, project: str = "e2e-project") -> Any:
    """python-zaqarclient v2 for a noauth Zaqar."""
    return profiling.zaqar_client(url, project)


def profiled(key: str = HMAC_KEY) -> AbstractContextManager[str]:
    """Profile client calls made inside; yields the OSProfiler base id."""
    return profiling.profiled(key)


def fresh_queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"
