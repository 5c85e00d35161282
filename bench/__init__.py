"""Overhead benchmarks of zaqar-otel (``nox -s bench``; see README "Benchmarks").

Every figure is a ratio of two things measured side by side in the same run:

* ``python -m bench.requests``: a real in-process Zaqar app (Redis + SQLite),
  bridge not installed / disabled / enabled (unsigned, signed), collector down
  or blackholed;
* ``python -m bench.span_cost``: one OSProfiler span through the bridge against
  a bare OTel SDK span and OSProfiler with a no-op notifier;
* ``python -m bench.export``: spans per second through the OTLP exporter to a
  local receiver, and the drops of a burst larger than the queue;
* ``python -m bench.memory``: RSS after 100,000 traced spans against 1,000;
* ``python -m bench``: all of them, one table, ``bench/results/bench.json``.

Each takes ``--quick`` (tiny counts: checks that the code runs, measures nothing).
"""
