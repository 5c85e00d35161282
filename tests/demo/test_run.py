"""The demo program (``python -m zaqar_otel.demo``, what ``nox -s demo`` runs), run as a user
would: a subprocess, its printed output checked.

* the whole demo: Redis, Jaeger v2 and zaqar-otel-server started, five profiled calls, five
  trees with the expected request span as root and their Jaeger query URLs, everything
  stopped at the end;
* without Jaeger (no binary in the tools dir, or ``--no-jaeger``): a "missing:" line, and the
  same five trees from the in-process receiver;
* against a running Zaqar and Jaeger (``--zaqar/--jaeger``, the compose ``loadgen``), with the
  right key and with a wrong one;
* no redis-server, or bad arguments: one line, no traceback.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import zaqar_server as zs
from tests.servers import JaegerServer, RedisServer
from zaqar_otel.demo import run as demo
from zaqar_otel.demo import stack
from zaqar_otel.demo.build import GO_MINIMUM
from zaqar_otel.demo.process import find_binary

ROOT = Path(__file__).resolve().parents[2]
ROOTS = [root for _, root in demo.OPERATIONS]


def run_demo(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> str:
    """Run the demo in a subprocess; its whole output (stdout + stderr). Asserts exit 0."""
    result = subprocess.run(
        [sys.executable, "-m", "zaqar_otel.demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 0, output
    return output


def trees(output: str) -> dict[int, tuple[str, int, list[str]]]:
    """{call number: (label, span count announced, the tree's lines)} from the output."""
    found: dict[int, tuple[str, int, list[str]]] = {}
    blocks = re.split(r"^\[(\d)/5\] ", output, flags=re.M)[1:]
    for number, block in zip(blocks[::2], blocks[1::2], strict=True):
        header, *lines = block.split("\n")
        match = re.fullmatch(r"(.+): trace ([0-9a-f]{32}) \((\d+) spans\)", header)
        assert match, header
        tree = [
            line
            for line in lines
            if line.strip() and not line.lstrip().startswith(("http", "no span", "==>", "note"))
        ]
        found[int(number)] = (match[1], int(match[3]), tree)
    return found


def assert_five_trees(output: str) -> None:
    found = trees(output)
    assert sorted(found) == [1, 2, 3, 4, 5], output
    for number, root in enumerate(ROOTS, 1):
        label, count, tree = found[number]
        assert tree[0].split("  ")[0] == root, (label, tree[0])
        assert all(line.startswith(("├─ ", "└─ ", "│  ", "   ")) for line in tree[1:]), tree
        assert len(tree) == count >= 4, (label, tree)  # request, controller, database spans
    # the database spans are in the trees: SQL of the management store, Redis commands
    everything = "\n".join(line for _, _, tree in found.values() for line in tree)
    assert re.search(r"[├└]─ (SELECT|INSERT) ", everything), everything
    assert re.search(r"[├└]─ (HMGET|ZRANGE|EVALSHA) ", everything), everything
    assert re.search(r"[├└]─ redis_message_controller MessageController\.post ", everything)


def assert_the_docs_trees_are_still_these(output: str) -> None:
    """The trees in README.md and docs/how-it-works.md hold what this run printed (spans,
    nesting, services, kinds, errors; not the timings)."""
    from tests.test_docs import load

    gen = load("generate_demo_trees")
    for path, fresh in gen.blocks(output).items():
        assert gen.shape(gen.between(path)) == gen.shape(fresh), (
            f"{path.name}: the demo prints other trees now; save its output and run "
            "python docs/generate_demo_trees.py --from OUTPUT (or without --from)"
        )


@pytest.mark.servers
@pytest.mark.zaqar
def test_demo_prints_five_trees_from_jaeger_and_stops_everything() -> None:
    output = run_demo()
    assert_five_trees(output)
    assert_the_docs_trees_are_still_these(output)
    [query] = re.findall(r"Jaeger: query API (http://127\.0\.0\.1:\d+)", output)
    urls = re.findall(r"^    (http://\S+/api/traces/[0-9a-f]{32})$", output, re.M)
    assert len(urls) == 5 and all(url.startswith(query) for url in urls)
    assert "placeholder" in output
    assert "missing:" not in output
    workdir = re.search(r"work directory (\S+)", output)
    assert workdir and not Path(workdir[1]).exists()
    assert running_in(workdir[1]) == [], "left running"


def running_in(directory: str) -> list[int]:
    """Processes whose working directory is (was) ``directory``: the demo runs its servers
    there. (Ports are no proof: another program on this machine may take 8888 next.)"""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd.removesuffix(" (deleted)") == directory:
            found.append(int(proc.name))
    return found


@pytest.mark.servers
@pytest.mark.zaqar
@pytest.mark.parametrize("how", ["no-binary", "--no-jaeger"])
def test_demo_without_jaeger_says_what_is_missing_and_still_shows_the_trees(
    tmp_path: Path, how: str
) -> None:
    if how == "no-binary":  # an empty tools dir, and no jaeger on PATH
        path = [d for d in os.environ["PATH"].split(":") if not (Path(d) / "jaeger").exists()]
        output = run_demo(env={"ZAQAR_OTEL_TOOLS": str(tmp_path), "PATH": ":".join(path)})
        assert f"missing: Jaeger v2 is not in {tmp_path} nor on PATH" in output
        assert ".ci/build-go-tools jaeger" in output
    else:
        output = run_demo("--no-jaeger")
        assert "missing: Jaeger switched off (--no-jaeger)" in output
    assert "in-process OTLP receiver" in output
    assert_five_trees(output)
    assert "/api/traces/" not in output


@pytest.fixture(scope="module")
def running_zaqar(
    redis_server: RedisServer, jaeger_server: JaegerServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[zs.ZaqarServer]:
    sql_url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'zaqar.db'}"
    stores = zs.redis_sql_stores(redis_server.url, zs.create_management_tables(sql_url))
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger_server.otlp_http_endpoint}
    server = zs.ZaqarServer(stores, zs.PROFILER_ON, env).start()
    yield server
    server.close()


@pytest.mark.servers
@pytest.mark.zaqar
def test_workload_against_a_running_zaqar_and_jaeger(
    running_zaqar: zs.ZaqarServer, jaeger_server: JaegerServer
) -> None:
    args = ["--zaqar", running_zaqar.url, "--jaeger", jaeger_server.query_url]
    output = run_demo(*args, "--key", zs.HMAC_KEY, "--ui", "http://localhost:16686")
    assert_five_trees(output)
    links = re.findall(r"^    http://localhost:16686/trace/([0-9a-f]{32})$", output, re.M)
    assert len(links) == 5
    for trace_id in links:  # what was printed is what Jaeger has
        assert jaeger_server.get_trace(trace_id) is not None


@pytest.mark.servers
@pytest.mark.zaqar
def test_a_wrong_key_finds_no_trace_and_says_why(
    running_zaqar: zs.ZaqarServer, jaeger_server: JaegerServer
) -> None:
    args = ["--zaqar", running_zaqar.url, "--jaeger", jaeger_server.query_url, "--wait", "3"]
    result = subprocess.run(
        [sys.executable, "-m", "zaqar_otel.demo", *args, "--key", "not-the-key"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout.count("no span of this trace arrived within 3 s") == 5
    assert "5 trace(s) did not reach" in result.stdout
    assert "hmac_keys" in result.stdout


def test_missing_redis_is_one_line_with_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stack.shutil, "which", lambda *a, **k: None)
    out = io.StringIO()
    assert demo.main(["--no-jaeger"], out=out) == 1
    assert out.getvalue() == (
        "==> error: redis-server is not installed (Zaqar's message store); "
        "install it with: apt-get install -y redis-server\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ui", "http://x"], "--ui goes with --jaeger"),
        (["--jaeger", "http://x"], "--jaeger goes with --zaqar"),
        (["--build-script", "/nonexistent"], "no such file"),
        (["--wait", "soon"], "invalid float value"),
    ],
)
def test_bad_arguments_are_a_usage_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        demo.main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_span_from_the_receiver_becomes_the_record_jaeger_would_give() -> None:
    from zaqar_otel.demo.receiver import ReceivedSpan

    span = ReceivedSpan(
        trace_id="ab" * 16, span_id="cd" * 8, parent_span_id="", name="PUT /v2/queues/{q}",
        kind=2, start_ns=2_000_000, end_ns=5_500_000, attributes={"http.route": "/v2"},
        status_code=2, status_message="boom", events=[], service_name="zaqar", scope_name="s",
        resource_attributes={"host.name": "h1"},
    )  # fmt: skip
    record = demo.span_record(span)
    assert (record.parent_id, record.kind, record.start_us, record.duration_us) == (
        "",
        "server",
        2000,
        3500,
    )
    assert record.error and record.error_message == "boom" and record.host == "h1"
    assert record.attributes == {"http.route": "/v2"} and record.service == "zaqar"


def test_no_go_toolchain_is_named_as_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ZAQAR_OTEL_TOOLS", str(tmp_path))
    monkeypatch.setattr(stack.shutil, "which", lambda *a, **k: None)  # no jaeger, no go
    script = tmp_path / "build-go-tools"
    script.write_text("#!/bin/sh\nexit 0\n")
    choice = demo.locate_jaeger(no_jaeger=False, build_script=script)
    assert choice.binary is None and choice.build is None
    assert f"the Go toolchain (go >= {GO_MINIMUM}) to build it is missing" in choice.why_not
    assert str(tmp_path) in choice.why_not


@pytest.mark.servers
@pytest.mark.zaqar
def test_while_jaeger_builds_the_trees_come_first_then_the_same_traces_in_jaeger(
    tmp_path: Path,
) -> None:
    """A first run: no Jaeger yet. The build (here a stand-in that takes a few seconds and
    then puts the real binary in place) runs in the background; the five trees come from
    the in-process receiver at once, then the same five traces are in the new Jaeger."""
    real = find_binary("jaeger")
    tools = tmp_path / "bin"
    script = tmp_path / "build-go-tools"
    script.write_text(
        "#!/bin/sh\necho building $1...\nsleep 4\n"
        f'mkdir -p "$ZAQAR_OTEL_TOOLS" && cp {real} "$ZAQAR_OTEL_TOOLS/jaeger"\n'
        'echo "$ZAQAR_OTEL_TOOLS"\n'
    )
    script.chmod(0o755)
    path = [d for d in os.environ["PATH"].split(":") if not (Path(d) / "jaeger").exists()]
    env = {"ZAQAR_OTEL_TOOLS": str(tools), "PATH": ":".join(path)}
    output = run_demo("--build-script", str(script), env=env)
    assert "building it in the background" in output
    receiver, jaeger = output.split("the same traces in Jaeger", 1)
    assert "in-process OTLP receiver" in receiver and "Jaeger v2 built in" in jaeger
    assert_five_trees(receiver)
    counts = {n: count for n, (_, count, _) in trees(receiver).items()}
    in_jaeger = re.findall(r"^\[(\d)/5\] .+: (\d+) spans in Jaeger$", jaeger, re.M)
    assert {int(n): int(c) for n, c in in_jaeger} == counts  # the same traces, whole
    urls = re.findall(r"^    (http://\S+/api/traces/[0-9a-f]{32})$", jaeger, re.M)
    assert len(urls) == 5
    assert (tools / "jaeger").is_file()
