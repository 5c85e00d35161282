"""docker-compose.yml, Dockerfile and docker/zaqar.conf, checked without a Docker engine.

* the compose file against the Compose Specification's JSON schema (the copy that the
  ``check-jsonschema`` package ships, from PyPI);
* its structure: the services the docs name, healthchecks, ``service_healthy``
  dependencies, memory limits that agree with the memory_limiter settings, published ports,
  the ``OTEL_*`` variables (each one the OpenTelemetry SDK reads), and that the names and
  ports the services use to reach each other are the ones the other files listen on;
* docker/zaqar.conf: every option is one Zaqar or zaqar-otel registers, and the file as it
  is (hosts aside) serves and traces the loadgen's workload on local Redis and FerretDB.
"""

from __future__ import annotations

import configparser
import copy
import importlib
import importlib.resources
import json
import re
import shlex
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SERVICES = {"zaqar", "redis", "mongodb", "otel-collector", "jaeger", "loadgen"}
PUBLISHED = {("jaeger", 16686), ("zaqar", 8888)}  # Jaeger UI and Zaqar API, nothing else


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def load_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def mebibytes(size: str) -> float:
    """Compose's byte values ('512M', '1G', '768m') in MiB."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([bkmg]?)b?", size.strip().lower())
    assert match, size
    factor = {"": 1 / 2**20, "b": 1 / 2**20, "k": 1 / 1024, "m": 1, "g": 1024}[match[2]]
    return float(match[1]) * factor


def command_args(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


# -- the schema


def compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    return schema


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_matches_the_compose_specification_schema() -> None:
    assert compose_schema()["title"] == "Compose Specification"
    assert schema_errors(compose()) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["services"]["zaqar"].update(helthcheck={"test": ["CMD", "true"]}),
        lambda d: d["services"]["zaqar"]["depends_on"]["redis"].update(condition="healthy"),
        lambda d: d["services"]["jaeger"].update(ports="16686"),
    ],
    ids=["misspelt-key", "bad-condition", "bad-port"],
)
def test_the_schema_check_catches_mistakes(break_it: Any) -> None:
    broken = copy.deepcopy(compose())
    break_it(broken)
    assert schema_errors(broken)


# -- structure


def test_services_are_the_documented_ones() -> None:
    assert set(services()) == SERVICES


def test_every_service_the_docs_name_exists() -> None:
    docs = "".join(path.read_text() for path in DOCS)
    guide = (ROOT / "docs" / "production.md").read_text()
    section = guide.split("## The demo stack with Docker Compose", 1)[1].split("\n## ", 1)[0]
    in_table = set(re.findall(r"^\| `([a-z-]+)` \|", section, re.M))
    assert in_table == set(services())
    commands = set(re.findall(r"docker compose (?:run --rm|logs(?: -f)?|restart) ([a-z-]+)", docs))
    header = COMPOSE.read_text().split("\nname:", 1)[0]  # the usage comment on top
    commands |= set(re.findall(r"docker compose run --rm ([a-z-]+)", header))
    assert "loadgen" in commands
    assert commands <= set(services()), commands - set(services())


def test_long_running_services_have_healthchecks_and_memory_limits() -> None:
    for name, service in services().items():
        limit = service["deploy"]["resources"]["limits"]["memory"]
        assert 64 <= mebibytes(limit) <= 2048, (name, limit)
        if name == "loadgen":  # runs once and exits
            assert service["profiles"] == ["load"]
            continue
        check = service["healthcheck"]["test"]
        assert check[0] in ("CMD", "CMD-SHELL") and len(check) > 1, name
        assert service.get("restart") == "unless-stopped", name


def test_dependencies_wait_for_healthy_services() -> None:
    all_services = services()
    edges = 0
    for name, service in all_services.items():
        for target, spec in service.get("depends_on", {}).items():
            assert spec == {"condition": "service_healthy"}, (name, target)
            assert "healthcheck" in all_services[target], target
            edges += 1
    assert set(all_services["zaqar"]["depends_on"]) == {"redis", "mongodb", "otel-collector"}
    assert set(all_services["otel-collector"]["depends_on"]) == {"jaeger"}
    assert edges >= 6


def test_only_the_ui_and_the_api_are_published_on_localhost() -> None:
    published = set()
    for name, service in services().items():
        for port in service.get("ports", []):
            host_ip, host_port, container_port = str(port).split(":")
            assert host_ip == "127.0.0.1", port
            assert host_port == container_port, port
            published.add((name, int(host_port)))
    assert published == PUBLISHED


# Variables the docs name that older SDKs do not read (the latest compat rows and
# nox -s tests check them against the newest SDK)
SINCE_SDK_1_45 = {"OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"}


def sdk_variables() -> set[str]:
    """The names the OpenTelemetry API, SDK (exporters included) and instrumentation read.
    ``_semconv``: where the instrumentations read ``OTEL_SEMCONV_STABILITY_OPT_IN`` (only
    0.58b0 and later also list it in ``environment_variables``)."""
    names = set()
    for module in (
        "opentelemetry.environment_variables",
        "opentelemetry.sdk.environment_variables",
        "opentelemetry.instrumentation.environment_variables",
        "opentelemetry.instrumentation._semconv",
    ):
        names |= {n for n in dir(importlib.import_module(module)) if n.startswith("OTEL_")}
    return names


def test_every_otel_variable_is_one_the_sdk_reads() -> None:
    known = sdk_variables()
    assert {"OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_BSP_SCHEDULE_DELAY"} <= known
    used = {
        key
        for service in services().values()
        for key in service.get("environment", {})
        if key.startswith("OTEL_")
    }
    dockerfile = (ROOT / "Dockerfile").read_text()
    used |= set(re.findall(r"\b(OTEL_[A-Z_]+)=", dockerfile))
    assert used, "no OTEL_* variable configures the export"
    assert used <= known, sorted(used - known)


def test_documented_otel_variables_are_spelt_as_the_sdk_reads_them() -> None:
    """The names in the docs and export.py's docstring, [_TRACES] expanded."""
    text = "".join(path.read_text() for path in DOCS)
    text += (ROOT / "src/zaqar_otel/bridge/export.py").read_text()
    names = set()
    for raw in re.findall(r"\bOTEL_[A-Z_\[\]*]+", text):
        if "*" in raw or raw.endswith("_"):  # a family: OTEL_BSP_*, OTEL_EXPORTER_OTLP_*KEY
            continue
        names |= {raw.replace("[_TRACES]", ""), raw.replace("[_TRACES]", "_TRACES")}
    assert len(names) > 5
    unknown = names - sdk_variables()
    if Version(version("opentelemetry-sdk")) < Version("1.45"):  # the oldest compat row
        unknown -= SINCE_SDK_1_45  # documented for the SDK the docs describe; read there
    assert not unknown, sorted(unknown)


def test_zaqar_exports_to_the_collector_which_exports_to_jaeger() -> None:
    all_services = services()
    env = all_services["zaqar"]["environment"]
    endpoint = urlparse(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    collector = all_services["otel-collector"]
    [mount] = collector["volumes"]
    source, target, mode = mount.split(":")
    assert mode == "ro" and option(command_args(collector), "--config") == target
    assert (ROOT / source).resolve() == ROOT / "collector-config" / "otel-collector.yaml"
    config = load_yaml(ROOT / source)
    http_receiver = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert endpoint.hostname == "otel-collector"
    assert http_receiver.endswith(f":{endpoint.port}")

    exporter = config["exporters"]["otlp/jaeger"]["endpoint"]
    host, port = exporter.split(":")
    jaeger = all_services["jaeger"]
    [jaeger_mount] = jaeger["volumes"]
    jaeger_source, jaeger_target, _ = jaeger_mount.split(":")
    assert option(command_args(jaeger), "--config") == jaeger_target
    jaeger_config = load_yaml(ROOT / jaeger_source)
    assert host == "jaeger"
    assert jaeger_config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(port)
    ui = jaeger_config["extensions"]["jaeger_query"]["http"]["endpoint"]
    assert ui.endswith(":16686")


@pytest.mark.parametrize(
    "service, config", [("otel-collector", "collector-config/otel-collector.yaml"),
                        ("jaeger", "docker/jaeger.yaml")]
)  # fmt: skip
def test_memory_limiter_stops_below_the_container_limit(service: str, config: str) -> None:
    limit = mebibytes(services()[service]["deploy"]["resources"]["limits"]["memory"])
    limiter = load_yaml(ROOT / config)["processors"]["memory_limiter"]
    assert limiter["limit_mib"] <= 0.85 * limit, (limiter, limit)
    assert 0 < limiter["spike_limit_mib"] < limiter["limit_mib"]


# -- the Zaqar image and its configuration


def zaqar_conf() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((ROOT / "docker/zaqar.conf").read_text())
    return parser


def registered_options() -> dict[str, set[str]]:
    """Every option Zaqar, zaqar-otel and oslo.log register, by group."""
    from oslo_log import _options as log_options
    from zaqar.conf import opts as zaqar_opts

    from zaqar_otel.bridge.options import list_opts

    known: dict[str, set[str]] = {}
    for group, opts in [*zaqar_opts.list_opts(), *list_opts()]:
        known.setdefault(str(group), set()).update(o.name for o in opts)
    for opts in (log_options.common_cli_opts, log_options.logging_cli_opts):
        known["DEFAULT"].update(o.name for o in opts)
    return known


def test_zaqar_conf_sets_only_real_options() -> None:
    known = registered_options()
    conf = zaqar_conf()
    sections = ["DEFAULT", *conf.sections()]
    for section in sections:
        items = conf.defaults() if section == "DEFAULT" else conf[section]
        for key in items:
            if section != "DEFAULT" and key in conf.defaults():
                continue
            assert key in known.get(section, set()), f"[{section}] {key}"


def test_zaqar_conf_stores_and_profiler_match_the_compose_services() -> None:
    conf = zaqar_conf()
    assert conf["drivers"]["message_store"] == "redis"
    assert conf["drivers"]["management_store"] == "mongodb"
    assert urlparse(conf["drivers:message_store:redis"]["uri"]).hostname == "redis"
    assert urlparse(conf["drivers:management_store:mongodb"]["uri"]).hostname == "mongodb"
    profiler = conf["profiler"]
    assert profiler["enabled"] == "true" and profiler["connection_string"] == "otel://"
    for flag in ("trace_wsgi_transport", "trace_message_store", "trace_management_store",
                 "trace_redis", "trace_mongodb"):  # fmt: skip
        assert profiler[flag] == "true", flag
    loadgen = command_args(services()["loadgen"])
    assert option(loadgen, "--key") in profiler["hmac_keys"].split(",")
    zaqar_url = urlparse(option(loadgen, "--zaqar"))
    assert zaqar_url.hostname == "zaqar"
    assert str(zaqar_url.port) == conf["drivers:transport:wsgi"]["port"] == "8888"
    assert urlparse(option(loadgen, "--jaeger")).hostname == "jaeger"


def test_dockerfile_copies_what_exists_and_serves_the_wsgi_app() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for sources in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), source
    assert "COPY docker/zaqar.conf /etc/zaqar/zaqar.conf" in dockerfile
    zaqar = services()["zaqar"]
    assert zaqar["environment"]["ZAQAR_CONFIG_FILE"] == "/etc/zaqar/zaqar.conf"
    assert zaqar["build"] == "." and services()["loadgen"]["image"] == zaqar["image"]
    [app] = re.findall(r'"([a-z_.]+:[a-z_]+)"', dockerfile)
    module, attribute = app.split(":")
    assert hasattr(importlib.import_module(module), attribute)
    assert "0.0.0.0:8888" in dockerfile


# -- the Zaqar configuration at work, without Docker


@pytest.mark.servers
@pytest.mark.zaqar
def test_zaqar_conf_serves_and_traces_the_loadgen_workload(
    redis_server: Any, ferretdb_server: Any, jaeger_server: Any
) -> None:
    """docker/zaqar.conf as it is, but for the hosts (the compose services become local
    servers; FerretDB speaks MongoDB's protocol): the loadgen's workload gets five traces
    with Redis and MongoDB spans under Zaqar's controllers."""
    import io

    from tests import zaqar_server as zs
    from zaqar_otel.demo import run as demo

    conf = zaqar_conf()
    stores = {s: dict(conf[s]) for s in conf.sections() if s.startswith("drivers")}
    del stores["drivers:transport:wsgi"]  # the test harness picks a free port
    stores["drivers:message_store:redis"]["uri"] = redis_server.url
    stores["drivers:management_store:mongodb"]["uri"] = ferretdb_server.url
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger_server.otlp_http_endpoint}
    server = zs.ZaqarServer(stores, dict(conf["profiler"]), env, launcher="ferretdb").start()
    loadgen = command_args(services()["loadgen"])
    out = io.StringIO()
    try:
        args = ["--zaqar", server.url, "--jaeger", jaeger_server.query_url]
        code = demo.main([*args, "--key", option(loadgen, "--key")], out=out)
    finally:
        server.close()
    output = out.getvalue()
    assert code == 0, output
    assert output.count(" spans)\n") == 5
    assert re.search(r"└─ mongodb_queues_controller Queue\.create .*\n +└─ insert \S+ ", output)
    assert re.search(r"redis_message_controller MessageController\.post", output)
    assert "EVALSHA" in output
