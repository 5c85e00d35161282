"""conventions: the instrumentations' DB attributes in the stable vocabulary, span names."""

import pytest
import redis

from zaqar_otel.bridge import conventions


def test_old_keys_become_stable_ones():
    old = {
        "db.system": "redis",
        "db.statement": "GET ?",
        "db.redis.database_index": 3,
        "net.peer.name": "h",
        "net.peer.port": 6379,
        "net.transport": "ip_tcp",
        "db.user": "zaqar",
        "db.connection_string": "redis://:pw@h",
        "db.redis.args_length": 2,
    }
    assert conventions.translate_all(old) == {
        "db.system.name": "redis",
        "db.query.text": "GET ?",
        "db.namespace": "3",
        "server.address": "h",
        "server.port": 6379,
        "network.transport": "tcp",
        "db.redis.args_length": 2,  # not a convention key: kept as is
    }


def test_database_dup_keeps_both():
    both = conventions.translate_all({"db.system": "sqlite", "db.user": "u"}, keep_old=True)
    assert both == {"db.system.name": "sqlite", "db.system": "sqlite", "db.user": "u"}


def test_a_stable_key_set_directly_wins_over_a_translated_one():
    both = conventions.translate_all({"db.query.text": "new", "db.statement": "old"})
    assert both == {"db.query.text": "new"}


@pytest.mark.parametrize(
    ("value", "opt_in"),
    [
        ("", False),
        ("http", False),
        ("database", False),
        ("database/dup", True),
        (" http, database/dup", True),
    ],
)
def test_keep_old_keys_only_for_database_dup(value, opt_in):
    assert conventions.keep_old_keys({"OTEL_SEMCONV_STABILITY_OPT_IN": value}) is opt_in


SQLITE = {"db.system.name": "sqlite", "db.namespace": "/var/lib/zaqar/zaqar.db"}


def test_sql_spans_are_named_by_their_query_summary_never_by_the_database_file():
    attrs = {**SQLITE, "db.query.text": 'SELECT "Queues".id FROM "Queues" WHERE x = ?'}
    name, extra = conventions.finish("SELECT /var/lib/zaqar/zaqar.db", attrs)
    assert name == 'SELECT "Queues"'
    assert extra == {"db.operation.name": "SELECT", "db.query.summary": 'SELECT "Queues"'}


def test_sql_connect_span_keeps_its_name():
    assert conventions.finish("connect", SQLITE) == ("connect", {})


@pytest.mark.parametrize(
    ("statement", "summary"),
    [
        ('INSERT INTO "Queues" (project, name) VALUES (?, ?)', 'INSERT "Queues"'),
        ('UPDATE "Queues" SET metadata=? WHERE id = 3', 'UPDATE "Queues"'),
        ('DELETE FROM "Queues" WHERE x', 'DELETE "Queues"'),
        ("BEGIN", "BEGIN"),
        ("SELECT * FROM songs, artists WHERE songs.a = artists.id", "SELECT songs artists"),
        (
            "SELECT d FROM (SELECT * FROM orders o JOIN customers c ON o.c = c.c)",
            "SELECT SELECT orders customers",
        ),
        (
            "INSERT INTO shipping (a) SELECT a FROM orders WHERE id = ?",
            "INSERT shipping SELECT orders",
        ),
        ("SELECT * FROM t FOR UPDATE", "SELECT t"),
        ("SELECT 'secret', 42", "SELECT"),
        ("/* comment */ SELECT a FROM b AS x, c y WHERE 1", "SELECT b c"),
    ],
)
def test_sql_summary(statement, summary):
    assert conventions.sql_summary(statement) == summary


def test_sql_summary_is_capped_at_255_characters_between_parts():
    statement = "SELECT * FROM " + ", ".join(f"table_number_{i}" for i in range(100))
    summary = conventions.sql_summary(statement)
    assert len(summary) <= 255 and summary.endswith(
        ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
    )


REDIS = {"db.system.name": "redis", "db.query.text": "?"}


@pytest.mark.parametrize(
    ("name", "transaction", "expected", "batch"),
    [
        ("HMSET EXPIRE HMSET EXPIRE", True, "MULTI", 4),
        ("HMSET EXPIRE", False, "PIPELINE", 2),
        ("HGETALL HGETALL HGETALL", True, "MULTI HGETALL", 3),
        ("HGETALL HGETALL", None, "MULTI HGETALL", 2),  # unknown: redis-py's default
        ("HMGET", True, "HMGET", None),  # a pipeline of one command is that command
    ],
)
def test_redis_pipelines_and_transactions(name, transaction, expected, batch):
    span_name, extra = conventions.finish(
        name, {**REDIS, "db.redis.pipeline_length": 1}, transaction
    )
    assert span_name == expected
    assert extra["db.operation.name"] == expected
    assert extra.get("db.operation.batch.size") == batch


def test_redis_commands_and_scripts():
    assert conventions.finish("SCRIPT LOAD", REDIS)[0] == "SCRIPT LOAD"
    script = {**REDIS, "db.stored_procedure.name": "claim_messages"}
    assert conventions.finish("EVALSHA", script) == (
        "EVALSHA claim_messages",
        {"db.operation.name": "EVALSHA"},
    )


def test_mongodb_names_say_operation_and_collection():
    attrs = {"db.system.name": "mongodb", "db.namespace": "zaqar", "db.collection.name": "queues"}
    assert conventions.finish("zaqar.find", attrs) == ("find queues", {"db.operation.name": "find"})
    no_collection = {"db.system.name": "mongodb", "db.namespace": "zaqar"}
    assert conventions.finish("zaqar.getMore", no_collection)[0] == "getMore zaqar"


def test_noscript_is_an_expected_response():
    assert conventions.expected_response(redis.exceptions.NoScriptError("x"))[0] == "NOSCRIPT"
    assert conventions.expected_response(redis.exceptions.ConnectionError("x")) is None


def test_error_attributes():
    wrong = redis.exceptions.ResponseError("WRONGTYPE Operation against a key")
    assert conventions.error_attributes(wrong) == {
        "db.response.status_code": "WRONGTYPE",
        "error.type": "WRONGTYPE",
    }
    refused = redis.exceptions.ConnectionError("Error 111 connecting")
    assert conventions.error_attributes(refused) == {
        "error.type": "redis.exceptions.ConnectionError"
    }
    assert conventions.error_attributes(KeyError("k")) == {"error.type": "KeyError"}
