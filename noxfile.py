"""Sessions: tests (the CI command), lint, typecheck, bench, demo."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite, server tests included (servers are started by the tests)."""
    session.install("-e", ".[all,test]")
    session.run("pytest", *(session.posargs or ["-ra"]))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff")
    paths = [p for p in ("src", "tests", "bench", "noxfile.py") if Path(p).exists()]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[all]", "mypy")
    session.run("mypy")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Overhead benchmarks (bench/, README "Benchmarks"): a table on stdout, JSON in
    bench/results/. Needs redis-server. ``nox -s bench -- --quick`` checks that they run."""
    session.install("-e", ".[all,bench]")
    session.run("python", "-m", "bench", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Zaqar with the bridge, Redis, SQLite and Jaeger v2 on 127.0.0.1: five profiled calls
    printed as trace trees. Builds Jaeger once (.ci/build-go-tools, cached) if it is missing.
    Arguments after ``--`` go to the demo: ``nox -s demo -- --keep``."""
    session.install("-e", ".[all]", silent=False)
    build = "--build-script", ".ci/build-go-tools"
    session.run("python", "-m", "zaqar_otel.demo", *build, *session.posargs)
