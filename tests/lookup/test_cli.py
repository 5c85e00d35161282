"""The zaqar-otel console script: trace show, the osprofiler CLI through otel://."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.lookup.test_jaeger import Element, client_server_trace
from tests.servers import JaegerServer
from zaqar_otel.bridge import ids
from zaqar_otel.demo.process import pick_port
from zaqar_otel.lookup import cli
from zaqar_otel.lookup.jaeger import JaegerQuery

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def known_trace(jaeger_server) -> tuple[str, dict[str, Element]]:
    base_id, tree = client_server_trace(jaeger_server.otlp_http_endpoint, uuid.uuid4().hex[:8])
    JaegerQuery(jaeger_server.query_url).wait_for_trace(base_id, 4, timeout=20)
    return base_id, tree


@pytest.fixture(autouse=True)
def _no_jaeger_env(monkeypatch):
    monkeypatch.delenv(cli.ENV_QUERY, raising=False)
    monkeypatch.delenv(cli.ENV_UI, raising=False)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A console script of this environment (zaqar-otel, osprofiler) in a process of its own."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ZAQAR_OTEL_"))}
    clean.update(env or {})
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=clean, timeout=120
    )


# -- zaqar-otel trace show (in this process: it only reads from Jaeger)


@pytest.mark.servers
def test_trace_show_prints_the_tree(jaeger_server, known_trace, capsys, monkeypatch):
    base_id, tree = known_trace
    monkeypatch.setenv(cli.ENV_QUERY, jaeger_server.query_url)
    monkeypatch.setenv(cli.ENV_UI, "http://ui:16686/")
    assert cli.main(["trace", "show", base_id]) == 0
    out = capsys.readouterr().out.splitlines()
    trace_hex = ids.trace_hex(base_id)
    assert out[0] == f"trace {trace_hex} ({base_id})"
    services = ", ".join(sorted({tree["client"].service, tree["wsgi"].service}))
    assert out[1] == f"4 spans, services: {services}, 1 in error"
    assert out[2] == f"http://ui:16686/trace/{trace_hex}"
    rows = out[3:]
    assert len(rows) == 4
    assert rows[0].split()[:3] == ["PUT", tree["client"].service, "client"]
    assert rows[1].startswith("└─ PUT /v2/queues/{queue_name}")
    assert tree["wsgi"].service in rows[1] and " server " in rows[1]
    assert rows[2].startswith("   ├─ redis_queue_controller QueueController.create")
    assert rows[2].rstrip().endswith("[ERROR] ValueError: boom")
    assert rows[3].startswith("   └─ SELECT")
    for row in rows:
        assert " ms  +" in row


@pytest.mark.servers
def test_trace_show_json_by_hex_id(jaeger_server, known_trace, capsys):
    base_id, tree = known_trace
    trace_hex = ids.trace_hex(base_id)
    assert (
        cli.main(["trace", "show", trace_hex, "--jaeger", jaeger_server.query_url, "--json"]) == 0
    )
    document = json.loads(capsys.readouterr().out)
    assert (document["trace_id"], document["base_id"], document["url"]) == (
        trace_hex,
        base_id,
        None,
    )
    spans = document["spans"]
    assert [(s["depth"], s["kind"]) for s in spans] == [
        (0, "client"),
        (1, "server"),
        (2, "internal"),
        (2, "client"),
    ]
    assert spans[0]["span_id"] == ids.span_hex(tree["client"].id)
    assert spans[1]["parent_id"] == spans[0]["span_id"]
    assert [s["error"] for s in spans] == [False, False, True, False]
    assert spans[1]["attributes"]["http.route"] == "/v2/queues/{queue_name}"


@pytest.mark.servers
def test_trace_show_errors_and_exit_codes(jaeger_server, capsys, monkeypatch):
    def show(*args: str) -> tuple[int, list[str]]:
        code = cli.main(["trace", "show", *args])
        captured = capsys.readouterr()
        assert captured.out == ""
        return code, captured.err.splitlines()

    query = ["--jaeger", jaeger_server.query_url]
    code, err = show("not-a-trace-id", *query)
    assert code == 2 and len(err) == 1 and "'not-a-trace-id' is not a trace id" in err[0]
    unknown = str(uuid.uuid4())
    code, err = show(unknown, *query)
    assert (code, err) == (
        1,
        [f"zaqar-otel: trace {ids.trace_hex(unknown)} not found in Jaeger at {query[1]}"],
    )
    code, err = show(unknown, *query, "--wait", "0.5")
    assert code == 1 and len(err) == 1
    code, err = show(unknown)
    assert code == 2 and err == [
        "zaqar-otel: error: no Jaeger query API: pass --jaeger URL or set ZAQAR_OTEL_JAEGER_QUERY"
    ]
    code, err = show(unknown, "--jaeger", "jaeger:16686")
    assert code == 2 and "not a Jaeger query URL" in err[0]
    code, err = show(unknown, "--jaeger", jaeger_server.otlp_http_endpoint)  # not the query port
    assert code == 3 and len(err) == 1 and "query API" in err[0]


@pytest.mark.servers
def test_a_stopped_jaeger_is_exit_3_with_one_line():
    private = JaegerServer()
    try:
        private.start()
        url = private.query_url
        private.stop()
        result = run("zaqar-otel", "trace", "show", str(uuid.uuid4()), env={cli.ENV_QUERY: url})
    finally:
        private.close()
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"zaqar-otel: cannot reach Jaeger's query API at {url}: [Errno 111] Connection refused"
    ]


# -- osprofiler's own CLI reading from Jaeger through otel://


@pytest.mark.servers
def test_osprofiler_trace_show_json_html_dot_and_list(jaeger_server, known_trace, tmp_path):
    base_id, tree = known_trace
    connection = f"otel://?query={jaeger_server.query_url}"
    shown = run("zaqar-otel", "osprofiler", "trace", "show", base_id, "--connection-string",
                connection, "--json")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    [root] = report["children"]
    assert (root["info"]["name"], root["trace_id"]) == ("requests", tree["client"].id)
    assert [c["info"]["name"] for c in root["children"]] == ["wsgi"]
    html = tmp_path / "trace.html"
    as_html = run("zaqar-otel", "osprofiler", "trace", "show", ids.trace_hex(base_id),
                  "--connection-string", connection, "--html", "--out", str(html))  # fmt: skip
    assert as_html.returncode == 0, as_html.stderr
    assert "<html" in html.read_text() and tree["wsgi"].id in html.read_text()
    pytest.importorskip("graphviz")
    dot = run("zaqar-otel", "osprofiler", "trace", "show", base_id, "--connection-string",
              connection, "--dot")  # fmt: skip
    assert dot.returncode == 0, dot.stderr
    assert "wsgi" in dot.stdout and "PUT /v2/queues/q" in dot.stdout
    listed = run("zaqar-otel", "osprofiler", "trace", "list", "--connection-string", connection)
    assert listed.returncode == 0 and base_id in listed.stdout


@pytest.mark.servers
def test_osprofiler_trace_show_errors(jaeger_server):
    unknown = str(uuid.uuid4())
    connection = f"otel://?query={jaeger_server.query_url}"
    missing = run("zaqar-otel", "osprofiler", "trace", "show", unknown, "--connection-string",
                  connection, "--json")  # fmt: skip
    assert missing.returncode == 1
    assert missing.stdout.strip() == (
        f"Trace with UUID {unknown} not found. Please check the HMAC key used in the command."
    )
    down = f"otel://?query=http://127.0.0.1:{pick_port()}"
    refused = run("zaqar-otel", "osprofiler", "trace", "show", unknown, "--connection-string",
                  down, "--json")  # fmt: skip
    assert refused.returncode == 1
    assert refused.stdout.startswith("cannot reach Jaeger's query API")
    assert "Traceback" not in refused.stdout + refused.stderr
    nowhere = run("zaqar-otel", "osprofiler", "trace", "show", unknown, "--connection-string",
                  "otel://", "--json")  # fmt: skip
    assert nowhere.returncode == 1 and "?query=http://JAEGER:16686" in nowhere.stdout


@pytest.mark.servers
def test_the_plain_osprofiler_command_knows_otel(jaeger_server, known_trace):
    """No wrapper, no opt-in: zaqar-otel's .pth lets OSProfiler's own CLI find otel://."""
    base_id, tree = known_trace
    shown = run("osprofiler", "trace", "show", base_id, "--connection-string",
                f"otel://?query={jaeger_server.query_url}", "--json")  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert json.loads(shown.stdout)["children"][0]["trace_id"] == tree["client"].id
    switched_off = run("osprofiler", "trace", "show", base_id, "--connection-string",
                       f"otel://?query={jaeger_server.query_url}", "--json",
                       env={"ZAQAR_OTEL_NO_DISCOVERY": "1"})  # fmt: skip
    # OSProfiler < 4.4 prints it in a traceback (its CLI reads the ValueError's .message)
    said = switched_off.stdout + switched_off.stderr
    assert "Driver not found for connection string: otel://" in said


def test_bad_usage_is_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["trace"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        cli.main(["call", "--url", "http://z", "--hmac-key", "k"])  # no operation
    assert exit_.value.code == 2
    capsys.readouterr()


def test_the_osprofiler_cli_builds_a_reading_driver_with_no_side_effects():
    from opentelemetry import trace

    from zaqar_otel import driver

    before = (trace.get_tracer_provider(), driver._current)
    reader = driver.OTelDriver("otel://?query=http://127.0.0.1:1", conn_str="otel://")
    assert reader.bridge is None
    assert reader.status() == {}
    reader.notify({"name": "x-start"})  # ignored, never raises
    assert (trace.get_tracer_provider(), driver._current) == before
