"""attributes: one handler per OSProfiler info shape, and what content may leave."""

import pytest
from opentelemetry.trace import SpanKind

from zaqar_otel.bridge import attributes
from zaqar_otel.bridge.attributes import Capture

CONTENT = Capture(content=True)
BODY = "{'messages': [{'ttl': 300, 'body': {'text': 'secret-body'}}], 'project': 'p'}"


def test_every_shape_has_one_handler_in_the_order_they_are_tried():
    assert [key for key, _ in attributes.SHAPES] == [
        "request",
        "requests",
        "db",
        "websocket",
        "function",
    ]


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


def test_claim_ids_in_request_urls_are_redacted_unless_content_is_on():
    request = {
        "request": {
            "method": "DELETE",
            "path": "/v2/queues/q/messages/m1",
            "query": "claim_id=c-123&pop=2",
        }
    }
    _, _, attrs = attributes.describe_start("wsgi", request)
    assert attrs["url.path"] == "/v2/queues/q/messages/m1"  # message ids are kept
    assert attrs["url.query"] == "claim_id=REDACTED&pop=2"
    claim = {"request": {"method": "PATCH", "path": "/v2/queues/q/claims/c-123"}}
    assert attributes.describe_start("wsgi", claim)[2]["url.path"] == "/v2/queues/q/claims/REDACTED"
    assert attributes.describe_start("wsgi", request, CONTENT)[2]["url.query"] == (
        "claim_id=c-123&pop=2"
    )


def test_function_spans_name_the_function_and_carry_no_arguments_by_default():
    info = {
        "function": {
            "name": "zaqar.storage.redis.messages.MessageController.post",
            "args": "('q1',)",
            "kwargs": BODY,
        }
    }
    name, kind, attrs = attributes.describe_start("redis_message_controller", info)
    assert name == "redis_message_controller MessageController.post"
    assert kind == SpanKind.INTERNAL
    assert attrs["code.function.name"] == "zaqar.storage.redis.messages.MessageController.post"
    assert "secret-body" not in str(attrs)
    assert not any(key.startswith("osprofiler.function") for key in attrs)


def test_function_arguments_only_with_the_content_opt_in():
    info = {"function": {"name": "m.C.post", "args": "('q1',)", "kwargs": BODY}}
    _, _, attrs = attributes.describe_start("x", info, CONTENT)
    assert attrs["osprofiler.function.args"] == "('q1',)"
    assert "secret-body" in attrs["osprofiler.function.kwargs"]


def test_a_function_without_a_name_is_a_plain_internal_span():
    name, kind, attrs = attributes.describe_start("rpc", {"function": {}})
    assert (name, kind) == ("rpc", SpanKind.INTERNAL)
    assert "code.function.name" not in attrs


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
        "db", {"db": {"statement": "SELECT 'x'", "params": {"a": 1}}}, Capture(statements=True)
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


def test_http_client_span_hides_claim_ids():
    info = {
        "requests": {
            "method": "DELETE",
            "hostname": "h",
            "port": 8888,
            "path": "/v2/queues/q/claims/c-1",
            "query": "",
        }
    }
    _, _, attrs = attributes.describe_start("requests", info)
    assert attrs["url.full"] == "http://h:8888/v2/queues/q/claims/REDACTED"


def test_websocket_span_keeps_queue_count_and_project():
    info = {
        "websocket": {
            "action": "message_post",
            "queue_name": "q1",
            "project_id": "p",
            "message_count": 2,
        }
    }
    name, kind, attrs = attributes.describe_start("websocket", info)
    assert (name, kind) == ("websocket message_post", SpanKind.SERVER)
    assert attrs["messaging.destination.name"] == "q1"
    assert attrs["messaging.batch.message_count"] == 2
    assert attrs["zaqar.project_id"] == "p"


def test_stop_with_an_error_marks_it_with_a_scrubbed_message():
    stop = attributes.describe_stop({"etype": "ValueError", "message": "bad 'secret' value"})
    assert stop.error == "ValueError: bad '?' value"
    assert stop.attributes == {"error.type": "ValueError"}
    assert stop.event == {"exception.type": "ValueError", "exception.message": "bad '?' value"}


def test_stop_with_an_expected_exception_is_an_event_without_its_message():
    stop = attributes.describe_stop(
        {"etype": "zaqar.storage.errors.ClaimDoesNotExist", "message": "Claim c-1 does not exist"},
        expected=lambda etype: etype.endswith("DoesNotExist"),
    )
    assert stop.error is None
    assert "error.type" not in stop.attributes
    assert stop.event == {"exception.type": "zaqar.storage.errors.ClaimDoesNotExist"}


def test_stop_with_the_content_opt_in_keeps_exception_texts():
    stop = attributes.describe_stop(
        {"etype": "KeyError", "message": "'secret'"}, Capture(content=True)
    )
    assert stop.error == "KeyError: 'secret'"


def test_stop_status_code_and_result_only_with_content():
    info = {"requests": {"status_code": 201}, "function": {"result": "'ok'"}}
    stop = attributes.describe_stop(info)
    assert stop.error is None
    assert stop.attributes == {"http.response.status_code": 201}
    with_content = attributes.describe_stop(info, CONTENT)
    assert with_content.attributes["osprofiler.function.result"] == "'ok'"


@pytest.mark.parametrize(("status", "error"), [(404, False), (500, True), (503, True)])
def test_websocket_status_is_an_error_only_from_500(status, error):
    stop = attributes.describe_stop({"websocket": {"status": status}})
    assert stop.attributes["zaqar.response.status"] == status
    assert (stop.error is not None) == error
    assert ("error.type" in stop.attributes) == error


def test_long_values_are_capped():
    info = {"function": {"name": "m.f", "args": "a" * 5000}}
    _, _, attrs = attributes.describe_start("x", info, CONTENT)
    assert len(attrs["osprofiler.function.args"]) == attributes.MAX_VALUE


def test_extra_scalar_info_is_kept_and_nested_values_ignored():
    _, _, attrs = attributes.describe_start("x", {"queue": "q1", "count": 3, "nested": {"a": 1}})
    assert attrs["osprofiler.queue"] == "q1"
    assert attrs["osprofiler.count"] == 3
    assert not any(k.startswith("osprofiler.nested") for k in attrs)


def test_host_is_no_span_attribute():
    _, _, attrs = attributes.describe_start("x", {"host": "h1"})
    assert "host.name" not in attrs
