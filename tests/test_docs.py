"""The operator docs: the generated [profiler] reference is current, the README's quick start
is the two commands, and the files the README points to exist."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from oslo_config import cfg

from zaqar_otel.bridge import options

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_profiler_reference", ROOT / "docs" / "generate_profiler_reference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_reference_is_up_to_date() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, text in generator().expected().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"stale: {stale}; run: python docs/generate_profiler_reference.py"


def test_a_new_option_makes_the_reference_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = cfg.BoolOpt("trace_everything", default=False, help="A flag added later.")
    monkeypatch.setattr(options, "BRIDGE_OPTS", [*options.BRIDGE_OPTS, extra])
    gen = generator()
    assert gen.main(["--check"]) == 1
    readme = gen.expected()[gen.README]
    assert "| `trace_everything` | bool | `false` | zaqar-otel | A flag added later. |" in readme


def reference_rows() -> dict[str, list[str]]:
    text = README.read_text()
    block = text.split(generator().BEGIN, 1)[1].split(generator().END, 1)[0]
    rows = {}
    for line in block.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_readme_reference_has_every_profiler_option_once() -> None:
    from zaqar.conf import opts as zaqar_opts

    rows = reference_rows()
    [(group, opts)] = options.list_opts()
    zaqar = [o for g, os in zaqar_opts.list_opts() if str(g) == "profiler" for o in os]
    names = [o.name for o in [*opts, *zaqar]]
    assert group == "profiler"
    assert sorted(rows) == sorted(names) and len(names) == len(set(names))
    assert rows["trace_redis"][3] == "zaqar-otel"
    assert rows["hmac_keys"][3] == "OSProfiler"
    assert rows["trace_wsgi_transport"][3] == "Zaqar"
    for opt in options.BRIDGE_OPTS:
        assert rows[opt.name][2] == f"`{str(opt.default).lower()}`"


def test_conf_sample_is_what_oslo_config_generator_prints() -> None:
    command = Path(sys.executable).parent / "oslo-config-generator"
    result = subprocess.run(
        [str(command), "--namespace", "zaqar_otel"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == (ROOT / "docs" / "zaqar-otel.conf.sample").read_text()
    for opt in options.BRIDGE_OPTS:
        assert f"#{opt.name} = {str(opt.default).lower()}" in result.stdout


def test_quick_start_is_the_two_commands_and_nox_has_both_sessions() -> None:
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1]
    first_block = quick.split("```console", 1)[1].split("```", 1)[0]
    commands = re.findall(r"^\$ (.+?)(?:\s+#.*)?$", first_block, re.M)
    assert commands == ["nox -s demo", "nox -s tests"]
    noxfile = (ROOT / "noxfile.py").read_text()
    assert re.search(r"^def demo\(session", noxfile, re.M)
    assert re.search(r"^def tests\(session", noxfile, re.M)
    assert '"zaqar_otel.demo"' in noxfile


def test_files_the_readme_names_exist() -> None:
    text = README.read_text()
    paths = set(re.findall(r"`((?:collector-config|docker|docs|\.ci)/[\w./-]+)`", text))
    paths |= set(re.findall(r"\]\(((?:docs|collector-config)/[\w./-]+)\)", text))
    paths |= {"Dockerfile", "docker-compose.yml"}
    assert len(paths) >= 8, paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, missing


def test_troubleshooting_quotes_the_bridges_real_log_lines() -> None:
    text = README.read_text().split("## Troubleshooting", 1)[1]
    quoted = re.findall(r"`(zaqar-otel: [^`]+)`", text)
    assert len(quoted) >= 2
    source = (ROOT / "src" / "zaqar_otel" / "bridge" / "export.py").read_text()
    source = re.sub(r'"\s*\n\s*"', "", source)  # join implicitly concatenated strings
    for line in quoted:
        words = " ".join(line.split())  # the README may wrap a quote
        pattern = ".*".join(re.escape(part) for part in re.split(r"\bN\b", words))  # N: a count
        assert re.search(pattern, source), words
