"""The instrumentations' DB spans in today's semantic conventions, named to be read.

The redis, SQLAlchemy and pymongo instrumentations write the old database
conventions (``db.statement``, ``db.system``, ``net.peer.name``...) unless
``OTEL_SEMCONV_STABILITY_OPT_IN`` says ``database``, and they read that variable
once per process, whoever instruments first. The bridge writes the stable ones. So
that one trace speaks one vocabulary whatever the order, the gate passes every
attribute of a DB span through ``translate``: old keys become stable keys
(``STABLE``), keys with no successor are dropped (``REMOVED``). An operator's
``OTEL_SEMCONV_STABILITY_OPT_IN=database/dup`` keeps both, as the conventions say.

At the end of a DB span ``finish`` gives it the name of the current convention,
``{db.operation.name} {target}`` or the query summary:

* SQL: ``SELECT "Queues"`` (``db.query.summary`` from the statement), never
  ``SELECT /path/to/zaqar.db`` (SQLAlchemy puts the SQLite file in the name);
* Redis: the command; a pipeline of one command is that command, a transaction
  ``MULTI`` (``MULTI HMGET`` when every command is the same) and a plain pipeline
  ``PIPELINE``, with ``db.operation.batch.size`` (the commands stay in
  ``db.query.text``, one per line, without values); ``EVALSHA <script>``;
* MongoDB: ``find messages`` instead of ``zaqar.find``.

``expected_response`` tells a database answer that is a protocol step, not a
failure: redis-py's ``NOSCRIPT`` on the first ``EVALSHA`` of a script (it then
loads the script and retries).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from opentelemetry.semconv._incubating.attributes import db_attributes as old_db
from opentelemetry.semconv._incubating.attributes import net_attributes as old_net
from opentelemetry.semconv.attributes.db_attributes import (
    DB_COLLECTION_NAME,
    DB_NAMESPACE,
    DB_OPERATION_BATCH_SIZE,
    DB_OPERATION_NAME,
    DB_QUERY_SUMMARY,
    DB_QUERY_TEXT,
    DB_RESPONSE_STATUS_CODE,
    DB_STORED_PROCEDURE_NAME,
    DB_SYSTEM_NAME,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.network_attributes import (
    NETWORK_PEER_ADDRESS,
    NETWORK_PEER_PORT,
    NETWORK_TRANSPORT,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.util import types

REDIS_PIPELINE_LENGTH = "db.redis.pipeline_length"  # the redis instrumentation's own key
# Redis script sha1 -> a name to show instead (Zaqar's Lua scripts, see zaqar_otel.zaqar.patch)
SCRIPT_NAMES: dict[str, str] = {}

# old key -> stable key
STABLE: dict[str, str] = {
    old_db.DB_STATEMENT: DB_QUERY_TEXT,
    old_db.DB_SYSTEM: DB_SYSTEM_NAME,
    old_db.DB_NAME: DB_NAMESPACE,
    old_db.DB_OPERATION: DB_OPERATION_NAME,
    old_db.DB_SQL_TABLE: DB_COLLECTION_NAME,
    old_db.DB_MONGODB_COLLECTION: DB_COLLECTION_NAME,
    old_db.DB_REDIS_DATABASE_INDEX: DB_NAMESPACE,  # Redis: the index, as a string
    old_net.NET_PEER_NAME: SERVER_ADDRESS,
    old_net.NET_PEER_PORT: SERVER_PORT,
    old_net.NET_TRANSPORT: NETWORK_TRANSPORT,
    old_net.NET_SOCK_PEER_ADDR: NETWORK_PEER_ADDRESS,
    old_net.NET_SOCK_PEER_PORT: NETWORK_PEER_PORT,
}
# old keys without a successor (db.connection_string could hold credentials), and the
# redis instrumentation's pipeline length, which becomes db.operation.batch.size
REMOVED = frozenset({old_db.DB_USER, old_db.DB_CONNECTION_STRING, REDIS_PIPELINE_LENGTH})
_TRANSPORTS = {"ip_tcp": "tcp", "ip_udp": "udp", "unix": "unix", "pipe": "pipe"}


def keep_old_keys(environ: Mapping[str, str] = os.environ) -> bool:
    """True if the operator asked for both vocabularies (``database/dup``)."""
    values = {v.strip() for v in environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").split(",")}
    return "database/dup" in values


def translate(key: str, value: Any, keep_old: bool = False) -> list[tuple[str, Any]]:
    """(key, value) pairs to set for one attribute the instrumentation set."""
    stable = STABLE.get(key)
    if stable is None:
        if key in REMOVED:
            return [(key, value)] if keep_old else []
        return [(key, value)]
    if stable == NETWORK_TRANSPORT:
        new_value = _TRANSPORTS.get(str(value))
        pairs = [(stable, new_value)] if new_value else []
    elif stable == DB_NAMESPACE:
        pairs = [(stable, str(value))]
    else:
        pairs = [(stable, value)]
    return [*pairs, (key, value)] if keep_old else pairs


def translate_all(attributes: types.Attributes, keep_old: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        for new_key, new_value in translate(key, value, keep_old):
            result.setdefault(new_key, new_value)  # a stable key set directly wins
    return result


# -- names


def finish(
    name: str, attributes: Mapping[str, Any], transaction: bool | None = None
) -> tuple[str, dict[str, Any]]:
    """(span name, attributes to add) for a DB span ending with these attributes.

    ``transaction``: for a Redis pipeline, whether it ran as MULTI/EXEC (None: unknown).
    """
    system = attributes.get(DB_SYSTEM_NAME)
    if system == "redis":
        return _redis(name, attributes, transaction)
    if system == "mongodb":
        return _mongodb(name, attributes)
    statement = attributes.get(DB_QUERY_TEXT)
    if isinstance(statement, str) and statement.strip():
        return _sql(statement)
    return name, {}


def _sql(statement: str) -> tuple[str, dict[str, Any]]:
    summary = sql_summary(statement)
    operation = summary.split(" ", 1)[0] if summary else ""
    extra: dict[str, Any] = {}
    if operation:
        extra[DB_OPERATION_NAME] = operation
    if summary:
        extra[DB_QUERY_SUMMARY] = summary
    return summary or "SQL", extra


def _redis(
    name: str, attributes: Mapping[str, Any], transaction: bool | None
) -> tuple[str, dict[str, Any]]:
    if REDIS_PIPELINE_LENGTH in attributes or DB_OPERATION_BATCH_SIZE in attributes:
        commands = name.split()
        if len(commands) > 1:
            prefix = "PIPELINE" if transaction is False else "MULTI"
            operation = prefix if len(set(commands)) > 1 else f"{prefix} {commands[0]}"
            return operation, {DB_OPERATION_NAME: operation, DB_OPERATION_BATCH_SIZE: len(commands)}
    operation = name  # the command as redis-py sent it: "GET", "SCRIPT LOAD"
    extra: dict[str, Any] = {DB_OPERATION_NAME: operation}
    script = attributes.get(DB_STORED_PROCEDURE_NAME)
    return (f"{operation} {script}" if script else operation), extra


def _mongodb(name: str, attributes: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    operation = name.rsplit(".", 1)[-1]  # pymongo: "{database}.{command}"
    target = attributes.get(DB_COLLECTION_NAME) or attributes.get(DB_NAMESPACE)
    name = f"{operation} {target}" if target else operation
    return name, {DB_OPERATION_NAME: operation}


# -- SQL query summary (semantic conventions: "Generating a summary of the query")

_SQL_TOKENS = re.compile(
    r"""'(?:[^']|'')*'            # string literal: skipped
      | "(?:[^"]|"")*"(?:\.\S+)?  # quoted identifier, maybe qualified
      | `[^`]*`
      | [A-Za-z_][\w$.]*          # word or dotted identifier
      | --[^\n]*|/\*.*?\*/       # comments: skipped
      | [(),;]
    """,
    re.X | re.S,
)
_OPERATIONS = frozenset(
    {
        *("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE", "CREATE"),
        *("ALTER", "DROP", "TRUNCATE", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT"),
        *("RELEASE", "PRAGMA", "CALL", "EXEC", "EXECUTE", "SHOW"),
    }
)
_BEFORE_TARGET = frozenset({"FROM", "INTO", "JOIN", "TABLE", "UPDATE"})
_NOT_TARGET = frozenset({"SET", "SELECT", "IF", "ONLY", "LATERAL"})
_END_OF_LIST = frozenset({"WHERE", "GROUP", "ORDER", "LIMIT", "HAVING", "ON", "UNION", "("})
_SUMMARY_LIMIT = 255


def sql_summary(statement: str) -> str:
    """``SELECT "Queues".id FROM "Queues" WHERE ...`` -> ``SELECT "Queues"``.

    Operations and their targets (the table after FROM, INTO, JOIN, UPDATE, TABLE,
    every table of a FROM list), in order, as written, at most 255 characters.
    """
    parts: list[str] = []
    expect_target = from_list = False
    previous = ""
    for token in _SQL_TOKENS.findall(statement):
        if token[0] == "'" or token.startswith(("--", "/*")):
            continue
        upper = token.upper()
        if expect_target:
            expect_target = False
            if token[0] not in "(),;" and upper not in _NOT_TARGET:
                parts.append(token)
                previous = upper
                continue
        after_for = previous == "FOR"  # SELECT ... FOR UPDATE
        if upper in _OPERATIONS and not after_for:
            parts.append(token)
        if upper in _BEFORE_TARGET and not after_for:
            expect_target, from_list = True, upper == "FROM"
        elif token == "," and from_list:
            expect_target = True
        elif upper in _END_OF_LIST or token in ");":
            from_list = False
        previous = upper
    return _capped(parts)


def _capped(parts: list[str]) -> str:
    summary = ""
    for part in parts:
        candidate = f"{summary} {part}" if summary else part
        if len(candidate) > _SUMMARY_LIMIT:
            break
        summary = candidate
    return summary


# -- answers that are not errors


# exception class name -> (db.response.status_code, what happened)
EXPECTED_RESPONSES: dict[str, tuple[str, str]] = {
    "NoScriptError": (
        "NOSCRIPT",
        "script not in the server's cache yet: redis-py loads it (SCRIPT LOAD) and retries",
    ),
}
_REDIS_PREFIX = re.compile(r"^([A-Z][A-Z_]+)\b")


def expected_response(exception: BaseException) -> tuple[str, str] | None:
    """(status code, what happened) if ``exception`` is a protocol step, not a failure."""
    return EXPECTED_RESPONSES.get(type(exception).__name__)


def error_attributes(exception: BaseException) -> dict[str, Any]:
    """``error.type`` (and a Redis error prefix as ``db.response.status_code``)."""
    cls = type(exception)
    module = cls.__module__
    if module.startswith("redis") and cls.__name__.endswith("ResponseError"):
        match = _REDIS_PREFIX.match(str(exception))
        if match:
            return {DB_RESPONSE_STATUS_CODE: match.group(1), ERROR_TYPE: match.group(1)}
    qualified = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    return {ERROR_TYPE: qualified}
