"""``zaqar-otel-server``: ``zaqar-server`` with the bridge, for people who use neither
``opentelemetry-instrument`` nor a WSGI container. Same arguments as ``zaqar-server``.
"""

from __future__ import annotations


def main() -> None:
    from zaqar.cmd import server

    from zaqar_otel import zaqar

    zaqar.install()
    server.run()
