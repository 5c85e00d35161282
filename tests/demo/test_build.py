"""Building the Go servers: progress in the foreground, a detached build in the background,
and the Go minimum the messages name is the one .ci/build-go-tools asks for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zaqar_otel.demo import build

ROOT = Path(__file__).resolve().parents[2]


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "build-go-tools"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_the_go_minimum_is_the_build_scripts() -> None:
    text = (ROOT / ".ci" / "build-go-tools").read_text()
    assert re.findall(r"Go toolchain \(>= ([\d.]+)\)", text) == [build.GO_MINIMUM]


@pytest.mark.servers  # runs a (shell) process
def test_the_build_shows_its_output_and_a_heartbeat_while_silent(tmp_path: Path) -> None:
    lines: list[str] = []
    slow = script(tmp_path, 'echo "building $1..." >&2\nsleep 0.5\necho /the/bin/dir\nexit 3')
    assert build.build_tools(slow, ["jaeger"], lines.append, heartbeat=0.1) is False
    assert "    building jaeger..." in lines
    assert any("still building jaeger" in line for line in lines)
    assert not any("/the/bin/dir" in line for line in lines)  # the bin dir is not progress


@pytest.mark.servers  # runs a (shell) process
def test_a_background_build_goes_on_alone_and_is_joined_not_doubled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "bin"
    monkeypatch.setenv("ZAQAR_OTEL_TOOLS", str(tools))
    fake = script(tmp_path, 'echo "building $1"\nsleep 1\ntouch "$ZAQAR_OTEL_TOOLS/$1"\n')
    first = build.BackgroundBuild(fake, "jaeger").start()
    second = build.BackgroundBuild(fake, "jaeger").start()  # joins the running one
    assert first.running and second.running
    lines: list[str] = []
    assert second.wait(lines.append, heartbeat=0.3) is True
    assert first.wait(lines.append, heartbeat=0.3) is True
    assert any("still building jaeger" in line and "building jaeger" in line for line in lines)
    assert (tools / "jaeger").is_file()
    assert first.log_path.read_text().count("building jaeger") == 1  # one build ran


@pytest.mark.servers  # runs a (shell) process
def test_a_failed_background_build_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZAQAR_OTEL_TOOLS", str(tmp_path / "bin"))
    failing = build.BackgroundBuild(script(tmp_path, "echo no module proxy\nexit 1"), "jaeger")
    assert failing.start().wait(lambda line: None, heartbeat=0.2) is False
    assert failing.last_line() == "no module proxy"
