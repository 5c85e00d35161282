"""zaqar-otel: OSProfiler events from Zaqar as OpenTelemetry traces.

``import zaqar_otel`` registers the ``otel://`` OSProfiler driver::

    import zaqar_otel
    from oslo_config import cfg
    from osprofiler import initializer

    conf = cfg.ConfigOpts()
    zaqar_otel.register_opts(conf)
    conf(["--config-file", "zaqar.conf"])   # [profiler] connection_string = otel://
    initializer.init_from_conf(conf, context={}, project="zaqar", service="api", host="h1")
"""

from __future__ import annotations

from zaqar_otel.bridge.options import list_opts, register_opts
from zaqar_otel.driver import OTelDriver, status

__version__ = "0.1.0"

__all__ = ["OTelDriver", "__version__", "list_opts", "register_opts", "status"]
