"""One server run as a subprocess on 127.0.0.1: start it, wait until it answers, stop it.

In: a command, its ports and a readiness check (a subclass of :class:`ServerProcess`).
Out: a running process with its log file, stopped again by :meth:`ServerProcess.close`
(or the ``with`` block), also when the program ends abnormally.

The one class that runs server processes: the demo's servers (:mod:`.stack`), the
test suite's (``tests/servers.py``) and the benchmarks' (``bench/sink.py``) subclass it::

    class Echo(ServerProcess):
        name = "echo"

        def _command(self) -> list[str]:
            return ["python3", "-m", "http.server", str(self.port), "-b", LOCALHOST]

        def _is_ready(self) -> bool:
            return port_open(self.port)

    with Echo() as echo:          # started and ready; stopped and cleaned up at the end
        print(echo.port, echo.log())

A program that is not installed raises :class:`Missing` (its message says how to get
it); a server that exits or does not answer in time raises :class:`StartFailed` with the
tail of its log. A server that loses a port race at its first start (another process took
a port between the pick and the bind) is started again on fresh ports.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
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
from typing import ClassVar, TypeVar

LOCALHOST = "127.0.0.1"
BUILD_HINT = "build it once with: .ci/build-go-tools (needs the Go toolchain)"


class ServerError(RuntimeError):
    """Base class of the errors raised here."""


class Missing(ServerError):
    """A program is not installed; the message says how to get it."""


class StartFailed(ServerError):
    """A server exited or did not answer in time; the message has its log tail."""


class PortInUse(StartFailed):
    """A server exited at start because one of its ports was taken."""


# --------------------------------------------------------------------------- ports


def port_open(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


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


_ports_lock = threading.Lock()
_ports_given: set[int] = set()


def pick_port(preferred: int | None = None) -> int:
    """``preferred`` if it is free, else a random free port; never the same one twice."""
    with _ports_lock:
        if preferred is not None and preferred not in _ports_given and port_free(preferred):
            _ports_given.add(preferred)
            return preferred
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOCALHOST, 0))
                port = int(sock.getsockname()[1])
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise ServerError("could not find a free TCP port on 127.0.0.1")


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


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url``: (status, body); (0, b'') if there was no HTTP answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()
    except (OSError, http.client.HTTPException):
        return 0, b""


# --------------------------------------------------------------------------- programs


def tools_dir() -> Path:
    """Where ``.ci/build-go-tools`` puts the Go servers: ``$ZAQAR_OTEL_TOOLS`` or the cache."""
    env = os.environ.get("ZAQAR_OTEL_TOOLS", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zaqar-otel" / "bin"


def find_binary(
    name: str, *, extra_dirs: Sequence[Path] = (), hint: str = BUILD_HINT, what: str = ""
) -> str:
    """The executable ``name``: in :func:`tools_dir`, then ``extra_dirs``, then ``PATH``.

    Raises :class:`Missing` naming it (``what``, default ``name``) and how to get it (``hint``).
    """
    searched = [tools_dir(), *extra_dirs]
    for directory in searched:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    where = ", ".join(str(d) for d in searched)
    raise Missing(f"{what or name} is not in {where} nor on PATH; {hint}")


def find_go() -> str | None:
    """The Go toolchain: on ``PATH`` or in ``/usr/local/go/bin``; None if absent."""
    return shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- the class

S = TypeVar("S", bound="ServerProcess")
_live: set[ServerProcess] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:  # pragma: no cover - only on abnormal ends
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


class ServerProcess:
    """A server run as one subprocess, with its files (log, configuration) in a directory.

    Subclasses implement :meth:`_command` and :meth:`_is_ready`, and may override
    :meth:`_prepare` (once, before the first start), :meth:`_after_ready`, :meth:`_env`,
    :meth:`_cwd`, :meth:`_ports` (what the process must listen on; by default ``port``)
    and :meth:`_new_ports` (after a port race; by default a new ``port``).
    ``start()`` is idempotent; ``stop()`` keeps the directory and the ports, so the server
    can be started again; ``close()`` stops it and removes the directory it made.
    ``port`` (optional) fixes the port, else a free one is picked; ``workdir`` (optional)
    is a directory to share with other servers: kept on close.
    """

    name: ClassVar[str] = "server"
    stop_signal: ClassVar[int] = signal.SIGTERM
    stop_timeout: ClassVar[float] = 20.0  # then SIGKILL for the whole process group

    def __init__(
        self,
        *,
        port: int | None = None,
        startup_timeout: float = 60.0,
        workdir: Path | None = None,
    ) -> None:
        self.port = port or pick_port()
        self._fixed_port = port is not None
        self.startup_timeout = startup_timeout
        self._owns_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"zaqar-otel-{self.name}-"))
        self.log_path = self.workdir / f"{self.name}.log"
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = self._closed = self._ever_started = False
        self._log_offset = 0

    # -- to override
    def _prepare(self) -> None:
        """One-time setup before the first start (write a configuration, a data dir...)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _after_ready(self) -> None:
        """Run once the server answers, on every start."""

    def _env(self) -> dict[str, str] | None:
        return None

    def _cwd(self) -> Path:
        return self.workdir

    def _ports(self) -> list[int]:
        """The TCP ports the process must listen on before it counts as started."""
        return [self.port]

    def _new_ports(self) -> bool:
        """Pick fresh ports after a port clash; False if the ports are fixed."""
        if not self._fixed_port:
            self.port = pick_port()
        return not self._fixed_port

    # -- state
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

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the process (SIGHUP: reload); nothing if it is not running."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signum)

    def log(self, lines: int = 40) -> str:
        """The tail of the server's log (its stdout and stderr)."""
        return log_tail(self.log_path, lines)

    def log_size(self) -> int:
        """The log's size in bytes now: pass it to :meth:`log_since` to read what follows."""
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def run_log(self) -> str:
        """What the server logged since its last start."""
        return self.log_since(self._log_offset)

    def log_since(self, offset: int) -> str:
        """What the server logged after byte ``offset``."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -- lifecycle
    def start(self: S) -> S:
        """Start and wait until ready (idempotent). A first start that loses a port race
        is retried on fresh ports where the subclass can pick them."""
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
            except PortInUse:
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
        command = self._command()
        with self.log_path.open("ab") as log:
            log.write(f"\n--- starting: {' '.join(command)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._cwd(),
                env=self._env(),
                start_new_session=True,  # a Ctrl-C reaches us, not it: we stop it in order
            )
        with _live_lock:
            _live.add(self)

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout
        last_error: Exception | None = None
        while True:
            proc = self._proc
            assert proc is not None
            code = proc.poll()
            if code is not None:
                self._proc = None
                this_run = self.run_log().lower()
                error = PortInUse if "already in use" in this_run else StartFailed
                raise error(
                    f"{self.name} exited with code {code} while starting.\n"
                    f"command: {' '.join(self._command())}\n"
                    f"log {self.log_path}:\n{self.log()}"
                )
            try:
                # our process must own the ports: after a port race another server could
                # answer there while ours failed to bind
                owned = listening_ports(proc.pid)
                missing = [p for p in self._ports() if owned is not None and p not in owned]
                if missing:
                    last_error = ServerError(f"ports {missing} not yet listened on")
                elif self._is_ready():
                    return
            except Exception as err:  # not ready yet: keep the reason for the message
                last_error = err
            if time.monotonic() > deadline:
                reason = f" (last check: {last_error!r})" if last_error else ""
                raise StartFailed(
                    f"{self.name} not ready after {self.startup_timeout:.0f}s{reason}.\n"
                    f"log {self.log_path}:\n{self.log()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the process (its stop signal, SIGKILL after ``timeout``, by default
        ``stop_timeout``); restartable."""
        timeout = self.stop_timeout if timeout is None else timeout
        proc = self._forget()
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(self.stop_signal)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_group(proc)

    def kill(self) -> None:
        """SIGKILL the server (a crash); restartable with start()."""
        proc = self._forget()
        if proc is not None and proc.poll() is None:
            self._kill_group(proc)

    def _forget(self) -> subprocess.Popen[bytes] | None:
        proc, self._proc = self._proc, None
        with _live_lock:
            _live.discard(self)
        return proc

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)

    def close(self) -> None:
        """Stop, and remove the directory if this server made it. Not restartable."""
        self.stop()
        self._closed = True
        if self._owns_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {state} pid={self.pid} dir={self.workdir}>"
