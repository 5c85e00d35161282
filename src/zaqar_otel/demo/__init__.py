"""The local demo (``nox -s demo``, ``python -m zaqar_otel.demo``), and the servers it runs.

In: nothing but the programs (``redis-server``, ``zaqar-otel-server``, Jaeger v2, built on
first use). Out: five profiled Zaqar calls printed as trace trees, from Jaeger or, while
there is none, from an in-process OTLP receiver.

* ``run``: the program (workload, trees, messages);
* ``stack``: the servers it starts (Redis, Jaeger v2, Zaqar) and the zaqar.conf they get;
* ``process``: :class:`~.process.ServerProcess`, one server subprocess (tests and
  benchmarks run theirs with it too);
* ``build``: builds the Go servers with ``.ci/build-go-tools`` (foreground or background);
* ``receiver``: the in-process OTLP/HTTP receiver (and its relay into Jaeger).
"""
