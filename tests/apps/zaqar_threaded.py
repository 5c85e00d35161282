"""``zaqar-otel-server`` serving each request in its own thread (wsgiref's server with
``ThreadingMixIn``; stock ``zaqar-server`` serves one at a time), printing
``zaqar_otel.status()`` on SIGUSR1 like ``tests.apps.zaqar_status``: for tests of what
many requests at once do to a process (gunicorn's gthread workers do the same).

python -m tests.apps.zaqar_threaded --config-file zaqar.conf
"""

from __future__ import annotations

import socketserver
from typing import Any
from wsgiref import simple_server

from tests.apps import zaqar_status


class ThreadingWSGIServer(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True


def serve_in_threads() -> None:
    from zaqar.transport.wsgi import driver

    def server_cls(self: Any, host: str) -> type[simple_server.WSGIServer]:
        return ThreadingWSGIServer

    driver.Driver._get_server_cls = server_cls  # type: ignore[method-assign]


if __name__ == "__main__":
    serve_in_threads()
    zaqar_status.run()
