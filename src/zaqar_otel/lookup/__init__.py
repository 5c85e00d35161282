"""The operator's side: profile a client call, read its trace back, show it.

In: a Zaqar client call (python-zaqarclient) or a trace id. Out: a signed, traced call,
and the trace as read from Jaeger's query API (a tree, JSON, an OSProfiler report).

* ``client``: a CLIENT span per zaqarclient request, signed OSProfiler headers;
* ``jaeger``: Jaeger query API client and tree rendering;
* ``report``: spans -> OSProfiler's report (``osprofiler trace show``);
* ``cli``: the ``zaqar-otel`` command (``call``, ``trace show``, ``osprofiler``).
"""
