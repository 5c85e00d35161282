"""Flask services (Keystone): the request span named by the URL rule, with its status
(a real Flask app behind OSProfiler's WsgiMiddleware, signed requests)."""

from __future__ import annotations

from collections.abc import Iterator

import flask
import pytest
import webob
from opentelemetry.trace import SpanKind, StatusCode
from osprofiler import profiler, web

from tests import tracing
from zaqar_otel.bridge import flask_routes


def make_app() -> web.WsgiMiddleware:
    app = flask.Flask("keystone-like")

    @app.route("/v3/users/<string:user_id>")
    def user(user_id: str) -> tuple[str, int]:
        return user_id, 200

    @app.route("/v3/auth/tokens", methods=["GET", "POST"])
    def tokens() -> tuple[str, int]:
        return "", 401 if flask.request.method == "POST" else 200

    @app.route("/v3/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    return web.WsgiMiddleware(app, hmac_keys=tracing.HMAC_KEY, enabled=True)


@pytest.fixture
def app() -> Iterator[web.WsgiMiddleware]:
    tracing.init_bridge()  # the driver connects to Flask's signals (Flask is imported)
    yield make_app()
    profiler.clean()


def call(app: web.WsgiMiddleware, method: str, path: str, signed: bool = True) -> int:
    headers = {}
    if signed:
        tracing.start_profiling()
        headers = web.get_trace_id_headers()
        profiler.clean()
    return int(
        webob.Request.blank(path, method=method, headers=headers).get_response(app).status_int
    )


def server_span() -> object:
    [span] = [s for s in tracing.finished() if s.kind == SpanKind.SERVER]
    return span


def test_route_template():
    assert flask_routes.route_template("/v3/users/<string:user_id>") == "/v3/users/{user_id}"
    assert flask_routes.route_template("/v3/<a>/x/<int(min=1):b>") == "/v3/{a}/x/{b}"
    assert flask_routes.route_template("/v3/auth/tokens") == "/v3/auth/tokens"


def test_the_span_is_named_by_the_rule_not_the_path(app):
    assert call(app, "GET", "/v3/users/0123456789abcdef") == 200
    span = server_span()
    assert span.name == "GET /v3/users/{user_id}"
    assert span.attributes["http.route"] == "/v3/users/{user_id}"
    assert span.attributes["url.path"] == "/v3/users/0123456789abcdef"
    assert span.attributes["http.response.status_code"] == 200


def test_status_codes_and_server_errors(app):
    assert call(app, "POST", "/v3/auth/tokens") == 401
    span = server_span()
    assert span.name == "POST /v3/auth/tokens"
    assert span.attributes["http.response.status_code"] == 401
    assert span.status.status_code is StatusCode.UNSET
    tracing.EXPORTER.clear()
    assert call(app, "GET", "/v3/boom") == 500
    span = server_span()
    assert span.attributes["http.response.status_code"] == 500
    assert span.status.status_code is StatusCode.ERROR


def test_no_rule_keeps_the_method_name(app):
    assert call(app, "GET", "/v3/nothing/here") == 404
    span = server_span()
    assert span.name == "GET" and "http.route" not in span.attributes
    assert span.attributes["http.response.status_code"] == 404


def test_unsigned_requests_are_left_alone(app):
    assert call(app, "GET", "/v3/users/x", signed=False) == 200
    assert tracing.finished() == []
