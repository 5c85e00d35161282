"""Run tests/apps/profiled.py in a separate process (the build-from-OTEL_* path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def profiled_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without OTEL_*, a short batch delay, then ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    full.update(env or {})
    return full


def start_profiled(
    *args: str, env: dict[str, str] | None = None, stderr: Any = subprocess.PIPE
) -> subprocess.Popen[str]:
    """Start it; ``stderr`` may be a file, to watch its log lines while it runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.apps.profiled", *args],
        cwd=ROOT,
        env=profiled_env(env),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def result_of(stdout: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def run_profiled(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> dict[str, Any]:
    """Run to completion (exit 0 expected); the printed JSON plus stderr and wall time."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.apps.profiled", *args],
        cwd=ROOT,
        env=profiled_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    result = result_of(proc.stdout)
    result["stderr"] = proc.stderr
    result["wall"] = time.monotonic() - started
    return result
