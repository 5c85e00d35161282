"""The Zaqar integration: what makes a Zaqar server produce one trace per profiled request.

In: a Zaqar process (``zaqar-server``, a WSGI container, ``opentelemetry-instrument``).
Out: OSProfiler events of Zaqar, named and annotated, handed to the core bridge
(``zaqar_otel.bridge``) through ``otel://``.

* ``patch``: ``install()`` applies the hooks below to Zaqar (idempotent);
* ``fixes``: Zaqar bugs that ``[profiler]`` flags trip over;
* ``releases``: what differs between Zaqar 20 to 23, levelled;
* ``request_span``: the request span outermost, around auth (keystonemiddleware);
* ``sampled_requests``: there, unsigned requests traced by sampling or a trusted W3C parent;
* ``middleware``: route, status and messaging attributes on the request span;
* ``websocket``: traces the websocket transport;
* ``lazy``: generators and cursors of the storage layer are consumed inside their call's span;
* ``outcomes``: Zaqar's "does not exist" exceptions are answers (4xx), not errors;
* ``producer``, ``stores``, ``consumer``: a PRODUCER span per posted message, its
  context stored with the message (Redis, MongoDB), links from claims/lists/gets;
* ``notifications``: webhook and email notifications in the post's trace;
* ``server``, ``wsgi``, ``instrumentor``: the three ways to run Zaqar with the bridge.
"""

from __future__ import annotations

from zaqar_otel.zaqar.patch import install

__all__ = ["install"]
