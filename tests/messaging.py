"""Helpers of the messaging e2e tests: an OpenTelemetry-instrumented webhook subscriber
process, a producer process (``zaqar-otel call``), subscriptions, and a search of every
exported span for a string."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests

from tests import zaqar_server as zs
from tests.servers import free_port, port_open

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "3381af92-2b9e-11e3-b191-71861300734c"
PROJECT = "e2e-project"
NOTIFIER = {"message_pipeline": "zaqar.notification.notifier"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ZAQAR_OTEL_"))}
    env.update(extra)
    return env


class Subscriber:
    """``python -m tests.apps.subscriber`` on a free port, exporting to ``jaeger``."""

    def __init__(self, jaeger: Any, status: int = 200) -> None:
        self.port = free_port()
        env = clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=jaeger.otlp_http_endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_SERVICE_NAME="subscriber",
        )
        command = [sys.executable, "-m", "tests.apps.subscriber", "--port", str(self.port)]
        command += ["--status", str(status)]
        self.process = subprocess.Popen(command, env=env, cwd=ROOT)
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the subscriber did not start")
            time.sleep(0.1)

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
        deadline = time.monotonic() + timeout
        while True:
            found = [d for d in self.deliveries() if wanted(d)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} deliveries after {timeout} s")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


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
