"""Zaqar embedded in a program with its own ``ConfigOpts`` (not ``cfg.CONF``): one signed
request through Zaqar's WSGI app, in-process. python -m tests.apps.embedded CONF_FILE

Prints {"base_id": ..., "status": ...} as JSON; spans leave by the normal exit (atexit
flush), to ``OTEL_EXPORTER_OTLP_ENDPOINT``.
"""

from __future__ import annotations

import json
import sys

from oslo_config import cfg
from oslo_log import log
from osprofiler import profiler, web
from webob import Request

from tests.zaqar_server import HMAC_KEY
from zaqar_otel import zaqar as zaqar_otel_zaqar

CLIENT_ID = "3381af92-2b9e-11e3-b191-71861300734c"


def main(argv: list[str]) -> int:
    zaqar_otel_zaqar.install()
    from zaqar import bootstrap

    conf = cfg.ConfigOpts()
    log.register_options(conf)
    conf(args=[], project="zaqar", default_config_files=argv[:1])
    app = bootstrap.Bootstrap(conf).transport.app
    profiler.init(HMAC_KEY)
    base_id = profiler.get().get_base_id()
    headers = web.get_trace_id_headers()
    profiler.clean()
    request = Request.blank(
        f"/v2/queues/{argv[1]}",
        method="PUT",
        headers={**headers, "Client-ID": CLIENT_ID, "X-Project-ID": "embedded"},
    )
    response = request.get_response(app)
    print(json.dumps({"base_id": base_id, "status": response.status_int}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
