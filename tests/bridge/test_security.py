"""Nothing secret leaves in a span: statements sanitised, credentials redacted."""

import sqlalchemy as sa
from osprofiler import profiler

from tests import tracing


def teardown_function():
    profiler.clean()


def test_function_arguments_with_credentials_are_redacted_even_with_content_on():
    tracing.init_bridge(trace_message_content=True)
    tracing.start_profiling()

    @profiler.trace("pools_controller", hide_args=False)
    def create(name, uri):
        return name

    with profiler.Trace("wsgi"):
        create("pool1", uri="redis://:topsecret@10.0.0.1:6379?password=alsosecret")
    exported = str([dict(s.attributes) for s in tracing.finished()])
    assert "topsecret" not in exported
    assert "alsosecret" not in exported
    assert "redis://:***@10.0.0.1" in exported


def _select_literal(tmp_path, **flags):
    tracing.init_bridge(trace_sqlalchemy=True, **flags)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    tracing.start_profiling()
    with profiler.Trace("wsgi"), engine.connect() as conn:
        conn.execute(sa.text("SELECT 'secret-literal', 4242"))
    profiler.clean()
    engine.dispose()
    [statement] = [
        s.attributes.get("db.statement") or s.attributes.get("db.query.text")
        for s in tracing.finished()
        if "SELECT" in s.name
    ]
    return statement


def test_sql_statements_lose_their_literal_values_by_default(tmp_path):
    statement = _select_literal(tmp_path)
    assert "secret-literal" not in statement
    assert "4242" not in statement
    assert statement.startswith("SELECT ?")


def test_full_statement_capture_is_an_explicit_opt_in(tmp_path):
    statement = _select_literal(tmp_path, trace_db_statements=True)
    assert "'secret-literal'" in statement
