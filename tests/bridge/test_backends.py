"""[profiler] flags -> DB spans, against real Redis, SQLite, PostgreSQL and FerretDB."""

import uuid

import pymongo
import pytest
import redis
import sqlalchemy as sa
from osprofiler import profiler
from osprofiler import sqlalchemy as osprofiler_sqlalchemy

from tests import tracing
from zaqar_otel.bridge import backends, ids

pytestmark = pytest.mark.servers


def teardown_function():
    profiler.clean()


def _profiled(work):
    """Run work() inside an OSProfiler request span; return (root span, trace spans)."""
    p = tracing.start_profiling()
    with profiler.Trace("wsgi", info={"request": {"method": "POST", "path": "/x"}}):
        with profiler.Trace("message_controller"):
            work()
    profiler.clean()
    spans = tracing.by_trace(tracing.finished(), ids.trace_hex(p.get_base_id()))
    [controller] = [s for s in spans if s.name == "message_controller"]
    return controller, spans


def _db_spans(system):
    return [s for s in tracing.finished() if s.attributes.get("db.system.name") == system]


# Redis


def test_redis_spans_are_children_of_the_open_osprofiler_span(redis_server):
    tracing.init_bridge(trace_redis=True)
    client = redis.Redis.from_url(redis_server.url)
    key = f"k-{uuid.uuid4()}"
    controller, spans = _profiled(lambda: (client.set(key, "secret-value"), client.get(key)))
    commands = [s for s in spans if s in _db_spans("redis")]
    assert [s.name for s in commands] == ["SET", "GET"]
    for span in commands:
        assert span.parent.span_id == controller.context.span_id
        assert "secret-value" not in str(dict(span.attributes))


def test_redis_outside_a_profiled_request_exports_nothing(redis_server):
    tracing.init_bridge(trace_redis=True)
    redis.Redis.from_url(redis_server.url).ping()
    assert tracing.finished() == []


def test_redis_flag_false_means_no_redis_spans(redis_server):
    tracing.init_bridge(trace_redis=False)
    client = redis.Redis.from_url(redis_server.url)
    _, spans = _profiled(lambda: client.set(f"k-{uuid.uuid4()}", "v"))
    assert _db_spans("redis") == []
    assert {s.name for s in spans} == {"POST", "message_controller"}


# MongoDB wire protocol (FerretDB)


def test_mongodb_spans_are_children(ferretdb_server):
    tracing.init_bridge(trace_mongodb=True)
    client = pymongo.MongoClient(ferretdb_server.url, serverSelectionTimeoutMS=5000)
    collection = client["zaqar_otel_test"][f"c{uuid.uuid4().hex}"]
    controller, spans = _profiled(
        lambda: (collection.insert_one({"body": "secret"}), collection.find_one({}))
    )
    commands = [s for s in spans if s in _db_spans("mongodb")]
    assert len(commands) == 2
    for span in commands:
        assert span.parent.span_id == controller.context.span_id
        assert "secret" not in str(dict(span.attributes))
    client.close()


def test_mongodb_flag_false_means_no_mongodb_spans(ferretdb_server):
    tracing.init_bridge(trace_mongodb=False)
    client = pymongo.MongoClient(ferretdb_server.url, serverSelectionTimeoutMS=5000)
    _profiled(lambda: client["zaqar_otel_test"]["c"].find_one({}))
    assert _db_spans("mongodb") == []
    client.close()


def test_mongodb_outside_a_profiled_request_exports_nothing(ferretdb_server):
    tracing.init_bridge(trace_mongodb=True)
    client = pymongo.MongoClient(ferretdb_server.url, serverSelectionTimeoutMS=5000)
    client["zaqar_otel_test"]["c"].find_one({})
    assert tracing.finished() == []
    client.close()


def _distro_instrumented_pymongo_first():
    """The state opentelemetry-instrument leaves: pymongo's one listener, ungated, on."""
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    backends.reset()
    instrumentor = PymongoInstrumentor()
    instrumentor.instrument(tracer_provider=tracing.global_provider())
    listener = instrumentor._commandtracer_instance
    listener._tracer = tracing.global_provider().get_tracer("opentelemetry.instrumentation.pymongo")
    listener.capture_statement = None
    return listener


def test_mongodb_is_gated_even_if_the_distro_instrumented_pymongo_first(ferretdb_server):
    listener = _distro_instrumented_pymongo_first()
    tracing.init_bridge(trace_mongodb=True)
    assert _pymongo_listener() is listener  # the same, one per process
    client = pymongo.MongoClient(ferretdb_server.url, serverSelectionTimeoutMS=5000)
    client["zaqar_otel_test"]["c"].find_one({})
    assert tracing.finished() == []  # unprofiled: nothing
    controller, spans = _profiled(lambda: client["zaqar_otel_test"]["c"].find_one({}))
    [find] = [s for s in spans if s in _db_spans("mongodb")]
    assert find.parent.span_id == controller.context.span_id
    client.close()


def test_trace_db_statements_reaches_mongodb_at_run_time(ferretdb_server):
    _distro_instrumented_pymongo_first()
    driver = tracing.init_bridge(trace_mongodb=True, trace_db_statements=False)
    client = pymongo.MongoClient(ferretdb_server.url, serverSelectionTimeoutMS=5000)
    collection = client["zaqar_otel_test"]["c"]

    def statement():
        tracing.EXPORTER.clear()
        _profiled(lambda: collection.find_one({"queue": "secret-queue"}))
        [find] = _db_spans("mongodb")
        return find.attributes.get("db.statement") or find.attributes.get("db.query.text")

    assert statement() == "find"
    driver.conf.set_override("trace_db_statements", True, "profiler")
    assert "secret-queue" in statement()
    driver.conf.set_override("trace_db_statements", False, "profiler")
    assert statement() == "find"
    client.close()


def _pymongo_listener():
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    return PymongoInstrumentor()._commandtracer_instance


# SQLAlchemy: SQLite and PostgreSQL


def _select_one(engine):
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return request.getfixturevalue("postgres_server").url


def test_sqlalchemy_spans_are_children_and_not_doubled(sql_url):
    tracing.init_bridge(trace_sqlalchemy=True)
    engine = sa.create_engine(sql_url)
    # OSProfiler's own SQL events too, as OpenStack services add them:
    osprofiler_sqlalchemy.add_tracing(sa, engine, "db")

    controller, spans = _profiled(lambda: _select_one(engine))
    selects = [s for s in spans if "SELECT" in s.name]
    assert len(selects) == 1, [s.name for s in spans]
    assert selects[0].parent.span_id == controller.context.span_id
    assert selects[0].instrumentation_scope.name.startswith(
        "opentelemetry.instrumentation.sqlalchemy"
    )
    engine.dispose()


def test_sqlalchemy_flag_false_means_no_sql_spans(sql_url):
    tracing.init_bridge(trace_sqlalchemy=False)
    engine = sa.create_engine(sql_url)
    osprofiler_sqlalchemy.add_tracing(sa, engine, "db")

    _, spans = _profiled(lambda: _select_one(engine))
    assert {s.name for s in spans} == {"POST", "message_controller"}
    engine.dispose()


def test_sqlalchemy_outside_a_profiled_request_exports_nothing(sql_url):
    tracing.init_bridge(trace_sqlalchemy=True)
    engine = sa.create_engine(sql_url)
    _select_one(engine)
    assert tracing.finished() == []
    engine.dispose()


def test_redis_noscript_then_script_load_is_no_error(redis_server):
    from opentelemetry.trace import StatusCode

    tracing.init_bridge(trace_redis=True)
    client = redis.Redis.from_url(redis_server.url)
    client.script_flush()
    script = client.register_script(f"return '{uuid.uuid4()}'")
    _, spans = _profiled(lambda: script())
    commands = [s for s in spans if s in _db_spans("redis")]
    evalsha = f"EVALSHA {script.sha}"  # semconv: the script's sha1 is its name
    assert [s.name for s in commands] == [evalsha, "SCRIPT LOAD", evalsha]
    noscript = commands[0]
    assert noscript.status.status_code == StatusCode.UNSET
    assert noscript.attributes["db.response.status_code"] == "NOSCRIPT"
    assert [e.name for e in noscript.events] == ["expected database response"]
    assert all(s.status.status_code == StatusCode.UNSET for s in spans)


def test_redis_script_names_known_to_the_bridge(redis_server, monkeypatch):
    from zaqar_otel.bridge import conventions

    client = redis.Redis.from_url(redis_server.url)
    script = client.register_script("return 1")
    monkeypatch.setitem(conventions.SCRIPT_NAMES, script.sha, "one")
    tracing.init_bridge(trace_redis=True)
    _, spans = _profiled(lambda: (script(), script()))
    names = [s.name for s in spans if s in _db_spans("redis")]
    assert names[-1] == "EVALSHA one"


@pytest.mark.parametrize(("transaction", "name"), [(True, "MULTI"), (False, "PIPELINE")])
def test_redis_pipelines_are_named_by_what_they_are(redis_server, transaction, name):
    tracing.init_bridge(trace_redis=True)
    client = redis.Redis.from_url(redis_server.url)
    key = f"k-{uuid.uuid4()}"

    def pipeline():
        pipe = client.pipeline(transaction=transaction)
        pipe.hset(key, "f", "secret-value").expire(key, 10).hset(key, "g", "v")
        pipe.execute()
        single = client.pipeline(transaction=transaction)
        single.hgetall(key)
        single.execute()

    _, spans = _profiled(pipeline)
    batch, single = [s for s in spans if s in _db_spans("redis")]
    assert batch.name == name
    assert batch.attributes["db.operation.batch.size"] == 3
    assert batch.attributes["db.query.text"].splitlines() == [
        "HSET ? ? ?",
        "EXPIRE ? ?",
        "HSET ? ? ?",
    ]
    assert "db.redis.pipeline_length" not in batch.attributes
    assert "secret-value" not in str(dict(batch.attributes))
    assert single.name == "HGETALL"
    assert "db.operation.batch.size" not in single.attributes


def test_redis_spans_speak_the_stable_conventions_only(redis_server):
    tracing.init_bridge(trace_redis=True)
    client = redis.Redis.from_url(redis_server.url)
    _profiled(lambda: client.get("k"))
    [get] = _db_spans("redis")
    port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    assert {k: v for k, v in get.attributes.items() if k != "db.redis.args_length"} == {
        "db.system.name": "redis",
        "db.query.text": "GET ?",
        "db.namespace": "0",
        "db.operation.name": "GET",
        "server.address": "127.0.0.1",
        "server.port": port,
        "network.transport": "tcp",
    }


def test_sqlite_spans_are_named_by_table_not_by_file(tmp_path):
    tracing.init_bridge(trace_sqlalchemy=True)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))

    def work():
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT x FROM t WHERE x = 42"))

    _, spans = _profiled(work)
    names = {s.name for s in spans if s in _db_spans("sqlite")}
    assert "SELECT t" in names
    assert not [n for n in names if str(tmp_path) in n]
    engine.dispose()
