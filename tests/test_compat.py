"""The release matrix (noxfile.py ``COMPAT_ROWS``, ``nox -s compat``) is the one the docs
table, the ``zaqar`` extra and ``ZaqarInstrumentor`` state."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tomllib

from zaqar_otel.zaqar.instrumentor import ZaqarInstrumentor

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ROOT / "docs" / "production.md"


def matrix() -> list[tuple[str, str]]:
    """``COMPAT_ROWS`` as written in noxfile.py (read, not imported: no nox needed)."""
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMPAT_ROWS":
            rows: list[tuple[str, str]] = ast.literal_eval(node.value)
            return rows
    raise AssertionError("noxfile.py has no COMPAT_ROWS")


def session_name(zaqar: str, deps: str) -> str:
    """The session nox makes of one row (``nox -s "compat(zaqar='20', deps='latest')"``)."""
    return f"compat(zaqar={zaqar!r}, deps={deps!r})"


def table_sessions() -> list[str]:
    section = PRODUCTION.read_text().split("## Supported releases", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(compat\([^`]+\))` \|", section, re.M)


def test_the_table_names_the_rows_of_the_noxfile() -> None:
    assert table_sessions() == [session_name(*row) for row in matrix()]


def test_the_matrix_has_the_maintained_series_and_an_oldest_row() -> None:
    rows = matrix()
    assert {zaqar for zaqar, deps in rows if deps == "latest"} >= {"20", "21", "22", "23"}
    assert any(deps == "oldest" for _, deps in rows)
    assert len(set(rows)) == len(rows)


def oldest_series() -> int:
    return min(int(zaqar) for zaqar, _ in matrix())


def test_the_zaqar_extra_and_the_instrumentor_accept_the_oldest_row() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [zaqar] = [r for r in project["optional-dependencies"]["zaqar"] if r.startswith("zaqar")]
    assert zaqar.endswith(f">={oldest_series()}")
    assert ZaqarInstrumentor().instrumentation_dependencies() == (f"zaqar >= {oldest_series()}",)


def test_the_readme_links_the_table() -> None:
    assert "docs/production.md#supported-releases" in (ROOT / "README.md").read_text()


def test_the_opentelemetry_lower_bounds_are_one_release() -> None:
    """The oldest row pins every opentelemetry-* to its lower bound: they must install together
    (one SDK release, e.g. 1.35, and the instrumentations of that release, e.g. 0.56b0)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements.extend(extra)
    bounds = {
        match[1]: match[2]
        for match in (re.fullmatch(r"(opentelemetry-[\w-]+)>=([\w.]+)", r) for r in requirements)
        if match
    }
    assert len(bounds) >= 8, bounds
    assert len({v for v in bounds.values() if v.startswith("1.")}) == 1, bounds
    assert len({v for v in bounds.values() if v.startswith("0.")}) == 1, bounds
