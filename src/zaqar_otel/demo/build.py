"""Building the Go servers (Jaeger v2, FerretDB) with ``.ci/build-go-tools``.

In: the repository's build script and the tools to build. Out: the binaries in
:func:`~.process.tools_dir`, built once and cached there. Two ways:

* :func:`build_tools`: in the foreground, the script's lines shown as they come, and an
  elapsed-time line every ``heartbeat`` seconds while Go is silent (the test session);
* :class:`BackgroundBuild`: detached, its output in a log file, so the demo can show its
  traces meanwhile; the build goes on if the demo ends first.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from zaqar_otel.demo.process import find_go, tools_dir

GO_MINIMUM = "1.26"  # what .ci/build-go-tools asks for (tests/demo/test_build.py checks)
Say = Callable[[str], None]


def go_env() -> dict[str, str]:
    """This environment with the Go toolchain's directory on ``PATH`` (often /usr/local/go)."""
    env = dict(os.environ)
    go = find_go()
    if go and str(Path(go).parent) not in env.get("PATH", "").split(":"):
        env["PATH"] = f"{Path(go).parent}:{env.get('PATH', '')}"
    return env


def build_tools(script: Path, tools: Sequence[str], say: Say, heartbeat: float = 15.0) -> bool:
    """Run ``script TOOL...`` in the foreground, its lines passed to ``say`` as they come,
    with an elapsed-time line every ``heartbeat`` seconds of silence. True if it succeeded."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(script), *tools],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=go_env(),
        text=True,
    )
    done = threading.Event()

    def tick() -> None:
        while not done.wait(heartbeat):
            say(f"    ... still building {' and '.join(tools)} ({time.monotonic() - started:.0f}s)")

    threading.Thread(target=tick, daemon=True).start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line and not line.startswith("/"):  # the last line is the bin dir
                say(f"    {line}")
        code = proc.wait()
    finally:
        done.set()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
    return code == 0


def _alive(pid: int) -> bool:
    """True if process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class BackgroundBuild:
    """``script TOOL`` detached from this process, its output in :attr:`log_path`.

    A build of the same tool that another process started (and that still runs) is
    joined instead of started twice.
    """

    def __init__(self, script: Path, tool: str) -> None:
        self.script, self.tool = script, tool
        self.log_path = tools_dir() / f".{tool}-build.log"
        self._pid_path = tools_dir() / f".{tool}-build.pid"
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self.started = time.monotonic()

    def start(self) -> BackgroundBuild:
        """Start the build, or join the one that runs already."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        other = self._running_pid()
        if other is not None:
            self._pid = other
            return self
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [str(self.script), self.tool],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=go_env(),
                start_new_session=True,  # not ended by a Ctrl-C of the demo
            )
        self._pid = self._proc.pid
        self._pid_path.write_text(f"{self._pid}\n")
        return self

    def _running_pid(self) -> int | None:
        try:
            pid = int(self._pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    @property
    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._pid is not None and _alive(self._pid)

    def succeeded(self) -> bool:
        """Finished, and the binary is there (a joined build: judged by the binary alone)."""
        if self.running:
            return False
        if self._proc is not None and self._proc.returncode != 0:
            return False
        return (tools_dir() / self.tool).is_file()

    def last_line(self) -> str:
        """The last line the build printed (its progress)."""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
            return lines[-1] if lines else ""
        return ""

    def wait(self, say: Say, heartbeat: float = 15.0) -> bool:
        """Wait until the build ends, saying how long it has taken every ``heartbeat`` s;
        True if it succeeded."""
        while self.running:
            deadline = time.monotonic() + heartbeat
            while self.running and time.monotonic() < deadline:
                time.sleep(0.5)
            if self.running:
                elapsed = time.monotonic() - self.started
                say(f"    ... still building {self.tool} ({elapsed:.0f}s): {self.last_line()}")
        with contextlib.suppress(OSError):
            self._pid_path.unlink()
        return self.succeeded()
