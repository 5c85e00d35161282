"""``zaqar-otel-server`` that prints ``zaqar_otel.status()`` on SIGUSR1, for tests that read
a real server's counters (SIGUSR2 is Zaqar's Guru Meditation report). With ``zaqar-server``
as first argument it runs stock ``zaqar-server`` instead.

python -m tests.apps.zaqar_status [zaqar-server] --config-file zaqar.conf

The line is ``zaqar-otel-status {json}`` on stderr (the server's log).
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

STATUS_PREFIX = "zaqar-otel-status "


def print_status_on_sigusr1() -> None:
    def handler(signum: int, frame: Any) -> None:
        import zaqar_otel

        print(STATUS_PREFIX + json.dumps(zaqar_otel.status()), file=sys.stderr, flush=True)

    signal.signal(signal.SIGUSR1, handler)


def run() -> None:
    """Run the server named by the first argument (default zaqar-otel-server)."""
    print_status_on_sigusr1()
    if sys.argv[1:2] == ["zaqar-server"]:
        del sys.argv[1]
        from zaqar.cmd import server

        server.run()  # what the zaqar-server script runs
        return
    from zaqar_otel.zaqar.server import main

    main()


if __name__ == "__main__":
    run()
