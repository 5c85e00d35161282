"""Shared helpers of the benchmarks: timing, subprocess workers, results, the machine.

Usage::

    from bench import common

    rounds = [common.time_per_op(fn, 10_000) for _ in range(7)]   # ns per call
    common.median(rounds)
    common.write_result("span_cost", {...})                       # bench/results/span_cost.json
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# where the JSON goes; $ZAQAR_OTEL_BENCH_RESULTS elsewhere (the smoke test's temp dir)
RESULTS = Path(os.environ.get("ZAQAR_OTEL_BENCH_RESULTS") or ROOT / "bench" / "results")
RESULT_MARK = "BENCH-RESULT "


def median(values: Sequence[float]) -> float:
    """The median (0.0 for no values)."""
    return float(statistics.median(values)) if values else 0.0


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` rounded to 3 places (inf for a zero denominator)."""
    return round(numerator / denominator, 3) if denominator else float("inf")


def time_per_op(fn: Callable[[], object], n: int) -> float:
    """Mean nanoseconds per call of ``fn`` over ``n`` calls."""
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(n):
        fn()
    return (clock() - start) / n


def cpu_per_op(fn: Callable[[], object], n: int) -> float:
    """Mean process CPU nanoseconds (all threads) per call of ``fn`` over ``n`` calls.

    CPU time, not wall time: on a machine shared with other work, time spent waiting
    for a core does not count (what other processes do to the caches still does).
    """
    clock = time.process_time_ns
    start = clock()
    for _ in range(n):
        fn()
    return (clock() - start) / n


def rss_kib() -> int:
    """This process's resident set size (VmRSS) in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory, Python, load: where the numbers were taken."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def write_result(name: str, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as ``bench/results/<name>.json``; the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def run_worker(
    module: str,
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    stderr: Any = subprocess.PIPE,
) -> Any:
    """Run ``python -m <module> <args>`` from the repo root; the result it ``emit``ted.

    ``OTEL_*`` variables are not inherited (``env`` may set them). A worker that
    fails raises ``RuntimeError`` with the tail of its stderr (if captured).
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{module} {' '.join(args)} exited with {proc.returncode}:\n"
            f"{(proc.stderr or '')[-3000:]}"
        )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    raise RuntimeError(f"{module} {' '.join(args)} printed no result:\n{proc.stdout[-2000:]}")


def emit(data: Any) -> None:
    """Print ``data`` as a worker's result line (what ``run_worker`` reads)."""
    print(RESULT_MARK + json.dumps(data), flush=True)


class Worker:
    """A long-lived ``python -m <module> <args>`` answering one command per stdin line.

    ``ask("run 25")`` writes the line and returns the next result the worker
    ``emit``s. Its stderr goes to a temporary file, shown if it fails.
    """

    def __init__(self, module: str, args: Sequence[str], env: Mapping[str, str]) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        full_env.update(env)
        self.name = f"{module} {' '.join(args)}"
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )

    def read(self) -> Any:
        """The next result line of the worker."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(RESULT_MARK):
                return json.loads(line[len(RESULT_MARK) :])
        self.process.wait(30)
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    def ask(self, command: str) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A Markdown table."""
    cells = [[str(c) for c in header], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def verdict(value: float, limit: float, at_most: bool = True) -> str:
    """``PASS`` / ``MISS`` for a target (``value <= limit``, or ``>=`` if not at_most)."""
    passed = value <= limit if at_most else value >= limit
    return "PASS" if passed else "MISS"


def paired(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """The median over rounds of the same-round ratio, rounded to 3 places."""
    return round(median([a / b for a, b in zip(numerators, denominators, strict=True)]), 3)


def spread(values: Sequence[float]) -> tuple[float, float]:
    """(lowest, highest) of ``values``, rounded to 3 places."""
    return (round(min(values), 3), round(max(values), 3)) if values else (0.0, 0.0)
