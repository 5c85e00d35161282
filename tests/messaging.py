"""Helpers of the messaging e2e tests: an OpenTelemetry-instrumented webhook subscriber
process, a producer process (``zaqar-otel call``), subscriptions, and a search of every
exported span for a string."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests

from tests import zaqar_server as zs
from tests.waiting import wait_until
from zaqar_otel.demo.process import ServerProcess, port_open

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "3381af92-2b9e-11e3-b191-71861300734c"
PROJECT = "e2e-project"
NOTIFIER = {"message_pipeline": "zaqar.notification.notifier"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ZAQAR_OTEL_"))}
    env.update(extra)
    return env


class Subscriber(ServerProcess):
    """``python -m tests.apps.subscriber`` on a free port, exporting to ``jaeger``."""

    name = "subscriber"

    def __init__(self, jaeger: Any, status: int = 200) -> None:
        super().__init__(startup_timeout=30)
        self.status = status
        self.otel_env = clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=jaeger.otlp_http_endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_SERVICE_NAME="subscriber",
        )
        self.start()

    def _command(self) -> list[str]:
        command = [sys.executable, "-m", "tests.apps.subscriber", "--port", str(self.port)]
        return [*command, "--status", str(self.status)]

    def _env(self) -> dict[str, str]:
        return self.otel_env

    def _cwd(self) -> Path:
        return ROOT

    def _is_ready(self) -> bool:
        return port_open(self.port)

    def url(self, path: str, userinfo: str = "", query: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")

    def deliveries(self) -> list[dict[str, Any]]:
        answer = requests.get(f"http://127.0.0.1:{self.port}/deliveries", timeout=5)
        answer.raise_for_status()
        found: list[dict[str, Any]] = answer.json()
        return found

    def wait_for(
        self, wanted: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 30
    ) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            found = [d for d in self.deliveries() if wanted(d)]
            return found if len(found) >= count else None

        return wait_until(enough, f"{count} deliver(ies)", timeout)


def headers(project: str = PROJECT) -> dict[str, str]:
    return {"Client-ID": CLIENT_ID, "X-Project-ID": project}


def create_queue(url: str, queue: str) -> None:
    answer = requests.put(f"{url}/v2/queues/{queue}", headers=headers(), timeout=10)
    assert answer.status_code in (201, 204), answer.text


def subscribe(url: str, queue: str, subscriber: str, options: dict[str, Any] | None = None) -> str:
    """Subscribe ``subscriber`` to ``queue`` (not profiled); the subscription id."""
    answer = requests.post(
        f"{url}/v2/queues/{queue}/subscriptions",
        json={"subscriber": subscriber, "ttl": 3600, "options": options or {}},
        headers=headers(),
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    subscription_id: str = answer.json()["subscription_id"]
    return subscription_id


def post(url: str, queue: str, bodies: Iterable[Any]) -> list[str]:
    """Post ``bodies`` (not profiled unless OSProfiler is initialised here); the message ids."""
    cli = zs.client(url, PROJECT)
    result = cli.queue(queue, auto_create=False).post([{"body": b, "ttl": 300} for b in bodies])
    return [href.rsplit("/", 1)[-1] for href in result["resources"]]


def produce(url: str, jaeger: Any, queue: str, *bodies: str) -> dict[str, Any]:
    """A producer in a process of its own: ``zaqar-otel call ... post`` (its CLIENT span is
    exported to ``jaeger``, the request is signed with the server's key); its JSON result."""
    otlp = jaeger.otlp_http_endpoint.removeprefix("http://")
    command = [str(BIN / "zaqar-otel"), "call", "--url", url, "--hmac-key", zs.HMAC_KEY]
    command += ["--project", PROJECT, "--connection-string", f"otel://{otlp}"]
    command += ["--jaeger", jaeger.query_url, "--json", "post", queue, *bodies]
    done = subprocess.run(command, capture_output=True, text=True, env=clean_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def hits(trace: dict[str, Any] | None, needle: str) -> list[str]:
    """Where ``needle`` occurs in a Jaeger trace (v1 JSON): span names, tags, logs,
    references, process tags: ``["<span name>: <key>", ...]``."""
    found = []
    for data in (trace or {}).get("data") or []:
        for process in (data.get("processes") or {}).values():
            if needle in json.dumps(process):
                found.append(f"process {process.get('serviceName')}")
        for span in data.get("spans") or []:
            name = span.get("operationName", "")
            if needle in name:
                found.append(f"{name}: name")
            for tag in span.get("tags") or []:
                if needle in json.dumps(tag.get("value")):
                    found.append(f"{name}: {tag.get('key')}")
            for log in span.get("logs") or []:
                if needle in json.dumps(log):
                    found.append(f"{name}: log")
    return found
