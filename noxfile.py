"""Sessions: tests (the CI command), unit, lint, typecheck, bench, demo, compat (the release
matrix).

pip's output is shown only when it fails: one line says what is being installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import nox
import tomllib

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


def install(session: nox.Session, *packages: str) -> None:
    """``pip install`` quietly (its output only on failure), after a line saying what."""
    session.log(f"pip install {' '.join(packages)} (quiet; about a minute the first time)")
    session.install(*packages, silent=True)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite, server tests included (the tests start the servers; Jaeger v2
    and FerretDB are built first with .ci/build-go-tools if they are missing)."""
    install(session, "-e", ".[all,test]")
    session.run("pytest", *(session.posargs or ["-ra"]))


@nox.session(python=PYTHON)
def unit(session: nox.Session) -> None:
    """The tests that need no server (not marked ``servers``): under a minute."""
    install(session, "-e", ".[all,test]")
    session.run("pytest", "-m", "not servers", *(session.posargs or ["-q"]))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    install(session, "ruff")
    paths = [p for p in ("src", "tests", "bench", "docs", "noxfile.py") if Path(p).exists()]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    install(session, "-e", ".[all]", "mypy")
    session.run("mypy")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Overhead benchmarks (bench/README.md): a table on stdout, JSON in bench/results/.
    Needs redis-server. ``nox -s bench -- --quick`` checks that they run."""
    install(session, "-e", ".[all,bench]")
    session.run("python", "-m", "bench", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Zaqar with the bridge, Redis, SQLite and Jaeger v2 on 127.0.0.1: five profiled calls
    printed as trace trees. Builds Jaeger once (.ci/build-go-tools, cached) in the background
    if it is missing, showing the trees from an in-process receiver meanwhile.
    Arguments after ``--`` go to the demo: ``nox -s demo -- --keep``."""
    install(session, "-e", ".[all]")
    build = "--build-script", ".ci/build-go-tools"
    session.run("python", "-m", "zaqar_otel.demo", *build, *session.posargs)


# -- the release matrix (docs/production.md, "Supported releases")

# (Zaqar series, dependency set): "latest" takes the newest patch of the series and whatever
# OSProfiler / OpenTelemetry / DB clients pip resolves for it; "oldest" pins OSProfiler and
# every OpenTelemetry package to the lower bound pyproject.toml allows.
COMPAT_ROWS = [
    ("20", "latest"),
    ("21", "latest"),
    ("22", "latest"),
    ("23", "latest"),
    ("20", "oldest"),
]
# What each row runs. "latest": the Zaqar end-to-end tests, every test marked ``zaqar`` (a real
# Zaqar), wherever it is (the rest runs with these versions in ``nox -s tests``). "oldest": the
# whole suite (the bridge's unit tests meet the oldest OSProfiler and OpenTelemetry there), but
# the docs checks, which compare generated files with the newest OSProfiler's options.
COMPAT_TESTS = {
    "latest": ["-m", "zaqar"],
    "oldest": ["--ignore=tests/test_docs.py"],
}
# Printed per row, so that the CI log shows what the row really ran.
COMPAT_REPORT = [
    "zaqar",
    "osprofiler",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation",
    "opentelemetry-api",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-instrumentation-pymongo",
    "opentelemetry-instrumentation-redis",
    "opentelemetry-instrumentation-sqlalchemy",
    "opentelemetry-semantic-conventions",
    "falcon",
    "pymongo",
    "redis",
    "SQLAlchemy",
    "python-zaqarclient",
    "oslo.utils",
]
# What the oldest OSProfiler needs from its own era: OSProfiler < 4.3 calls
# oslo_utils.secretutils.constant_time_compare, which oslo.utils 9.0 removed.
OLDEST_ERA = ["oslo.utils<9"]
# The table, then one line (.ci/run's summary quotes it) with the first four names.
_PRINT_VERSIONS = """
import sys
from importlib.metadata import version
names = sys.argv[1:]
width = max(map(len, names))
for name in names:
    print(f"  {name:<{width}}  {version(name)}")
print("compat resolved:", ", ".join(f"{name} {version(name)}" for name in names[:4]))
"""


def oldest_pins() -> list[str]:
    """``name==lower`` for OSProfiler and every OpenTelemetry package pyproject.toml names
    (dependencies and extras), from their ``>=`` lower bounds."""
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements.extend(extra)
    pins = set()
    for requirement in requirements:
        match = re.fullmatch(r"(osprofiler|opentelemetry-[\w-]+)>=([\w.]+)", requirement)
        if match:
            pins.add(f"{match[1]}=={match[2]}")
    return [*sorted(pins), *OLDEST_ERA]


@nox.session(python=PYTHON)
@nox.parametrize(("zaqar", "deps"), COMPAT_ROWS)
def compat(session: nox.Session, zaqar: str, deps: str) -> None:
    """One supported release: Zaqar ``zaqar``.x from PyPI with the newest (``deps='latest'``:
    the Zaqar end-to-end tests, ``-m zaqar``) or the oldest allowed (``deps='oldest'``: the
    whole suite) OSProfiler and OpenTelemetry. One venv per row (reused on reruns)."""
    pins = oldest_pins() if deps == "oldest" else []
    install(session, "-e", ".[all,test]", f"zaqar[redis,mongodb]=={zaqar}.*", *pins)
    session.run("python", "-c", _PRINT_VERSIONS, *COMPAT_REPORT, silent=False)
    session.run(
        "pytest", *(session.posargs or [*COMPAT_TESTS[deps], "-q", "-ra", "--durations=10"])
    )
