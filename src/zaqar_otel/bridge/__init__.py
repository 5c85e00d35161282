"""The core bridge: OSProfiler notifications in, OpenTelemetry spans out, exported by OTLP.

Nothing here knows Zaqar; any OSProfiler-instrumented process can use it.
The data flow, one module per stage::

    OSProfiler notification (dict)
      -> spans.SpanBridge        pairs -start/-stop by id, parents, context attach
           attributes            info -> span name, kind, semantic-convention attributes
           redact                what must not leave: credentials, claim ids, echoed values
           ids                   OSProfiler UUIDs -> OTel trace/span ids
      -> provider                the SDK TracerProvider (found or built), chosen ids
           gate                  DB spans only inside profiled requests, no literal values
           conventions           the instrumentations' DB spans in today's conventions, names
           backends              [profiler] flags -> pymongo / redis / SQLAlchemy instrumentors
      -> export                  otel:// -> OTLP exporter, counted drops and failures

``options`` holds the ``[profiler]`` options; ``logs`` keeps SDK log floods to one line.
Around the request, for any OpenStack service: ``keystoneauth`` makes keystoneauth1 calls
(keystonemiddleware's token validation) CLIENT spans the callee joins; ``flask_routes``
names the request spans of Flask services (Keystone) by their route, with the status.
"""
