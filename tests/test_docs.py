"""The operator docs agree with what runs: the generated [profiler] reference is current,
the README's quick start is the two commands, every link and named file resolves, the
versions and the Go minimum are the build script's, and quoted log lines are real.
(The demo's trees are checked against a real run in tests/demo/test_run.py.)"""

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
from zaqar_otel.demo.build import GO_MINIMUM

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
REQUIRED_DOCS = {
    "production.md",
    "troubleshooting.md",
    "profiler-options.md",
    "client-and-cli.md",
    "how-it-works.md",
}
BUILD_SCRIPT = (ROOT / ".ci" / "build-go-tools").read_text()


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generator() -> ModuleType:
    return load("generate_profiler_reference")


def test_the_readme_is_short_and_the_depth_is_in_docs() -> None:
    assert len(README.read_text().splitlines()) <= 250
    assert {path.name for path in (ROOT / "docs").glob("*.md")} >= REQUIRED_DOCS
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", README.read_text()))
    assert linked >= REQUIRED_DOCS
    assert "](bench/README.md)" in README.read_text()


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
    page = gen.expected()[gen.TABLE]
    assert "| `trace_everything` | bool | `false` | zaqar-otel | A flag added later. |" in page


def reference_rows() -> dict[str, list[str]]:
    text = (ROOT / "docs" / "profiler-options.md").read_text()
    block = text.split(generator().BEGIN, 1)[1].split(generator().END, 1)[0]
    rows = {}
    for line in block.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_reference_has_every_profiler_option_once() -> None:
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


def test_quick_start_is_the_two_commands_and_nox_has_the_sessions() -> None:
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1]
    first_block = quick.split("```console", 1)[1].split("```", 1)[0]
    commands = re.findall(r"^\$ (.+?)(?:\s+#.*)?$", first_block, re.M)
    assert commands == ["nox -s demo", "nox -s tests"]
    noxfile = (ROOT / "noxfile.py").read_text()
    for session in ("demo", "tests", "unit", "lint", "typecheck"):
        assert re.search(rf"^def {session}\(session", noxfile, re.M), session
    assert '"zaqar_otel.demo"' in noxfile
    assert '"-m", "not servers"' in noxfile
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("-m nox -s tests") < ci.index("-m nox -s lint typecheck")


@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_links_and_named_files_resolve(doc: Path) -> None:
    text = doc.read_text()
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[\w-]+)?\)", text):
        web = target.startswith(("http://", "https://", "mailto:"))
        if not web and not (doc.parent / target).exists():
            missing.append(target)
    # paths in backticks are from the repository's root
    named = r"`((?:collector-config|docker|docs|\.ci|bench|tests|src)/[\w./-]+)`"
    for path in re.findall(named, text):
        if not (ROOT / path).exists():
            missing.append(path)
    assert not missing, missing


@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_anchors_resolve(doc: Path) -> None:
    def anchors(path: Path) -> set[str]:
        headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
        return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}

    broken = []
    for target, anchor in re.findall(r"\]\(([^)#\s]*)#([\w-]+)\)", doc.read_text()):
        path = doc.parent / target if target else doc
        if anchor not in anchors(path):
            broken.append(f"{target}#{anchor}")
    assert not broken, broken


def test_go_minimum_and_versions_are_the_build_scripts() -> None:
    """What the docs say about Go, Jaeger and FerretDB is what .ci/build-go-tools does."""
    jaeger = re.search(r'JAEGER_VERSION="(v[\d.]+)"', BUILD_SCRIPT)
    ferretdb = re.search(r'FERRETDB_VERSION="(v[\d.]+)"', BUILD_SCRIPT)
    assert jaeger and ferretdb
    for doc in DOCS:
        text = doc.read_text()
        for said in re.findall(r"\bGo(?: toolchain)?\s*\(?(?:go\s*)?>=\s*([\d.]+)", text, re.I):
            assert said == GO_MINIMUM, (doc.name, said)
        for said in re.findall(r"FerretDB (v\d[\d.]+)", text):
            assert said == ferretdb[1], (doc.name, said)
        for said in re.findall(r"module version (v\d[\d.]+)", text):
            assert said == jaeger[1], (doc.name, said)


def test_troubleshooting_quotes_the_bridges_real_log_lines() -> None:
    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    quoted = re.findall(r"`(zaqar-otel: [^`]+)`", text)
    assert len(quoted) >= 2
    source = (ROOT / "src" / "zaqar_otel" / "bridge" / "export.py").read_text()
    source = re.sub(r'"\s*\n\s*"', "", source)  # join implicitly concatenated strings
    for line in quoted:
        words = " ".join(line.split())  # the docs may wrap a quote
        pattern = ".*".join(re.escape(part) for part in re.split(r"\bN\b", words))  # N: a count
        assert re.search(pattern, source), words


def test_the_docs_name_the_demos_real_messages() -> None:
    """The troubleshooting page quotes the demo's own words for a missing Jaeger or Go."""
    text = " ".join((ROOT / "docs" / "troubleshooting.md").read_text().split())
    source = (ROOT / "src" / "zaqar_otel" / "demo" / "run.py").read_text()
    source = " ".join(re.sub(r'"\s*\n\s*f?"', "", source).split())
    for quote in ("Jaeger v2 is not built yet: building it in the background",):
        assert quote in text and quote in source
    assert f"the Go toolchain (go >= {GO_MINIMUM}) to build it is missing" in text


def test_demo_trees_in_the_docs_are_a_demo_run_s() -> None:
    """The trees between the markers are what the generator makes of a demo output (their
    shape is compared with a fresh run in tests/demo/test_run.py)."""
    gen = load("generate_demo_trees")
    for path in gen.MARKERS:
        rows = gen.shape(gen.between(path))
        assert rows and rows[0][2] == "server", path
        assert not any("/tmp/" in name for name, *_ in rows), path
