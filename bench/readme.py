"""The results table of bench/README.md, written from a run: ``python -m bench.readme [JSON]``.

In: ``bench/results/bench.json`` (what ``python -m bench`` / ``nox -s bench`` wrote;
another file as the argument). Out: bench/README.md with the part between the two
markers replaced by the run's date, machine, load and table, exactly as the run printed
it. A ``--quick`` run (tiny counts: no numbers worth keeping) is refused.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT

README = ROOT / "bench" / "README.md"
BEGIN = "<!-- bench-table: written by `python -m bench.readme` from the last `nox -s bench` -->"
END = "<!-- /bench-table -->"


class ReadmeError(ValueError):
    """The README has no place for the table, or the report is not a full run."""


def _load(load: list[float] | None) -> str:
    return "/".join(f"{value:.2f}" for value in load or []) or "unknown"


def render(report: dict[str, Any]) -> str:
    """The run's date, machine and load, then its table."""
    machine = report["machine"]
    minutes = sum(report.get("seconds", {}).values()) / 60
    return (
        f"Taken {report.get('taken_at', 'at an unrecorded time')} by `python -m bench`"
        f" ({minutes:.0f} minutes): {machine['nproc']} CPUs ({machine['cpu']}),"
        f" {machine['memory_gib']} GiB, Python {machine['python']};"
        f" load average (1/5/15 min) {_load(machine.get('loadavg_at_start'))} at the start,"
        f" {_load(report.get('loadavg_at_end'))} at the end.\n\n{report['table']}"
    )


def update(text: str, report: dict[str, Any]) -> str:
    """``text`` (the README) with the table of ``report`` between the markers."""
    if report.get("quick"):
        raise ReadmeError("a --quick run's numbers are not kept: run `nox -s bench`")
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ReadmeError(f"no {BEGIN!r} ... {END!r} in the README")
    return f"{text[: start + len(BEGIN)]}\n{render(report)}\n{text[end:]}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    source = Path(args[0]) if args else RESULTS / "bench.json"
    try:
        report = json.loads(source.read_text())
        README.write_text(update(README.read_text(), report))
    except (OSError, ValueError, KeyError) as error:
        print(f"bench.readme: {source}: {error}", file=sys.stderr)
        return 1
    print(f"{README}: table of {report.get('taken_at', source)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
