"""What ships: the version is written once, every module in the wheel serves the package (none
is there only for the tests), LICENSE and CHANGELOG are where packagers look."""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

import tomllib

import zaqar_otel

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_is_written_once() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    version_from = PYPROJECT["tool"]["hatch"]["version"]
    assert version_from == {"path": "src/zaqar_otel/__init__.py"}
    assert importlib.metadata.version("zaqar-otel") == zaqar_otel.__version__
    written = [
        str(path.relative_to(ROOT))
        for path in [*SRC.rglob("*.py"), ROOT / "pyproject.toml"]
        if re.search(r"""^(version|__version__)\s*=\s*["']\d""", path.read_text(), re.M)
    ]
    assert written == ["src/zaqar_otel/__init__.py"]


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The zaqar_otel modules ``path`` imports (``from pkg import mod`` counts ``pkg.mod``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("zaqar_otel")}


def test_every_module_in_the_package_is_reached_from_an_entry_point() -> None:
    """Nothing in the wheel only the tests use: each module is an entry point (a console
    script, a plugin, ``python -m``, the WSGI application the Dockerfile serves, a ``.pth``
    hook) or imported by one, directly or not."""
    modules = {_module(path): path for path in SRC.rglob("*.py")}
    hooks = [hook.read_text() for hook in SRC.glob("*.pth")]
    entry_points = [
        *(name for text in hooks for name in re.findall(r"\bimport ([\w.]+)", text)),
        *PYPROJECT["project"]["scripts"].values(),
        *(ep for group in PYPROJECT["project"]["entry-points"].values() for ep in group.values()),
        *re.findall(r"zaqar_otel[\w.]+:application", (ROOT / "Dockerfile").read_text()),
    ]
    reached: set[str] = set()
    todo = ["zaqar_otel", *(ep.split(":")[0] for ep in entry_points)]
    todo += [name for name in modules if name.endswith("__main__")]  # python -m
    while todo:
        name = todo.pop()
        if name in reached or name not in modules:
            continue
        reached.add(name)
        parent = name.rpartition(".")[0]
        todo += [parent] if parent else []
        todo += sorted(_imports(modules[name]))
    assert sorted(set(modules) - reached) == []


def test_no_module_in_the_package_imports_the_tests_or_the_benchmarks() -> None:
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) (tests|bench)\b", text, re.M), path


def test_license_and_changelog() -> None:
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert PYPROJECT["build-system"]["requires"] == ["hatchling>=1.27"]  # PEP 639
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "https://keepachangelog.com/en/1.1.0/" in changelog
    headings = re.findall(r"^## \[([^\]]+)\]", changelog, re.M)
    assert headings and headings[0] == "Unreleased"
    kinds = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    assert set(re.findall(r"^### (\w+)", changelog, re.M)) <= kinds
