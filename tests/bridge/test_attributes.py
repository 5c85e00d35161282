import pytest
from opentelemetry.trace import SpanKind

from zaqar_otel.bridge import attributes


def test_request_without_route_is_named_by_method():
    name, kind, attrs = attributes.describe_start(
        "wsgi",
        {
            "request": {
                "method": "POST",
                "path": "/v2/queues/q/messages",
                "query": "",
                "scheme": "http",
            }
        },
    )
    assert (name, kind) == ("POST", SpanKind.SERVER)
    assert attrs["url.path"] == "/v2/queues/q/messages"
    assert attrs["http.request.method"] == "POST"
    assert "url.query" not in attrs


def test_request_with_route_is_named_by_method_and_route():
    name, _, attrs = attributes.describe_start(
        "wsgi",
        {"request": {"method": "POST", "path": "/v2/queues/q", "route": "/v2/queues/{queue_name}"}},
    )
    assert name == "POST /v2/queues/{queue_name}"
    assert attrs["http.route"] == "/v2/queues/{queue_name}"


def test_function_names_are_never_truncated():
    name, kind, attrs = attributes.describe_start(
        "redis_message_controller",
        {"function": {"name": "zaqar.storage.redis.messages.MessageController.post"}},
    )
    assert name == "redis_message_controller MessageController.post"
    assert kind == SpanKind.INTERNAL
    assert attrs["code.function.name"] == "zaqar.storage.redis.messages.MessageController.post"


def test_base_name_strips_only_the_suffix():
    assert attributes.base_name("rest-start") == "rest"
    assert attributes.base_name("start-start") == "start"
    assert attributes.base_name("tasks-stop") == "tasks"


def test_sql_is_sanitised_by_default():
    _, kind, attrs = attributes.describe_start(
        "db",
        {"db": {"statement": "SELECT * FROM t WHERE name = 'secret' AND n = 42", "params": {}}},
    )
    assert kind == SpanKind.CLIENT
    assert attrs["db.operation.name"] == "SELECT"
    assert attrs["db.query.text"] == "SELECT * FROM t WHERE name = ? AND n = ?"


def test_full_statements_on_request():
    _, _, attrs = attributes.describe_start(
        "db", {"db": {"statement": "SELECT 'x'", "params": {"a": 1}}}, full_statements=True
    )
    assert attrs["db.query.text"] == "SELECT 'x'"
    assert "osprofiler.db.params" in attrs


def test_http_client_span():
    name, kind, attrs = attributes.describe_start(
        "requests",
        {
            "requests": {
                "method": "GET",
                "hostname": "h",
                "port": 8888,
                "path": "/v2",
                "query": "a=1",
                "scheme": "http",
            }
        },
    )
    assert (name, kind) == ("GET", SpanKind.CLIENT)
    assert attrs["url.full"] == "http://h:8888/v2?a=1"
    assert attrs["server.port"] == 8888


def test_stop_with_error():
    attrs, error = attributes.describe_stop({"etype": "ValueError", "message": "bad"})
    assert error == ("ValueError", "bad")
    assert attrs == {}


def test_stop_with_status_and_result():
    attrs, error = attributes.describe_stop(
        {"requests": {"status_code": 201}, "function": {"result": "'ok'"}}
    )
    assert error is None
    assert attrs == {"http.response.status_code": 201, "osprofiler.function.result": "'ok'"}


def test_long_values_are_capped():
    _, _, attrs = attributes.describe_start("x", {"function": {"name": "m.f", "args": "a" * 5000}})
    assert len(attrs["osprofiler.function.args"]) == attributes.MAX_VALUE


def test_extra_scalar_info_is_kept_and_nested_values_ignored():
    _, _, attrs = attributes.describe_start("x", {"queue": "q1", "count": 3, "nested": {"a": 1}})
    assert attrs["osprofiler.queue"] == "q1"
    assert attrs["osprofiler.count"] == 3
    assert not any(k.startswith("osprofiler.nested") for k in attrs)


@pytest.mark.parametrize(
    ("url", "recorded"),
    [
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
        (
            "https://u:pw@hooks.example.com/in?token=abc&v=2#frag",
            "https://REDACTED:REDACTED@hooks.example.com/in?token=REDACTED&v=REDACTED#REDACTED",
        ),
        ("http://user@h/p?bare", "http://REDACTED@h/p?REDACTED"),
        ("http://[::1]:80/a", "http://[::1]:80/a"),
        ("mailto:alice@example.com", "mailto:REDACTED@example.com"),
        ("mailto:a@x.org,b@y.org?cc=c@z.org", "mailto:REDACTED@x.org,REDACTED@y.org?cc=REDACTED"),
        ("mailto:nobody", "mailto:REDACTED"),
        ("no scheme at all", "REDACTED"),
        (
            "https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/Xy4abcDEFgh5ijkLMNop6qrs",
            "https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/REDACTED",
        ),
        (
            "http://h/v2/servers/6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b/action",
            "http://h/v2/servers/6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b/action",
        ),
        ("http://h/very-long-but-only-words", "http://h/very-long-but-only-words"),
        ("http://h:99999/", "REDACTED"),
    ],
)
def test_redact_url_keeps_where_and_drops_secrets(url, recorded):
    assert attributes.redact_url(url) == recorded
