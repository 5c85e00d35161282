"""Sessions: tests (the CI command), unit, lint, typecheck, bench, demo.

pip's output is shown only when it fails: one line says what is being installed.
"""

from __future__ import annotations

from pathlib import Path

import nox

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
