"""The local demo (``nox -s demo``, ``python -m zaqar_otel.demo``).

Zaqar with the bridge, Redis, SQLite and Jaeger v2 on 127.0.0.1, five profiled calls
printed as trace trees. ``run`` is the program, ``stack`` starts and stops the servers,
``receiver`` is the in-process OTLP receiver used when there is no Jaeger.
"""
