"""redact: credentials, capability ids in URLs, values in exception texts."""

import pytest

from zaqar_otel.bridge import redact


def test_redact_hides_passwords_in_uris_and_queries():
    assert redact.redact("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact.redact("mysql+pymysql://zaqar:s3@db/z") == "mysql+pymysql://zaqar:***@db/z"
    assert redact.redact("redis://h?password=pw&db=1") == "redis://h?password=***&db=1"
    assert redact.redact("password=pw&x=1") == "password=***&x=1"
    assert redact.redact("mail user@example.com") == "mail user@example.com"


@pytest.mark.parametrize(
    ("path", "scrubbed"),
    [
        ("/v2/queues/q/claims/abc", "/v2/queues/q/claims/REDACTED"),
        ("/v2/queues/q/claims/abc/", "/v2/queues/q/claims/REDACTED/"),
        ("/v2/queues/q/claims", "/v2/queues/q/claims"),  # POST: no id yet
        ("/v2/queues/claims/messages/m1", "/v2/queues/claims/messages/m1"),  # a queue "claims"
        ("/v2/queues/q/messages/m1", "/v2/queues/q/messages/m1"),
    ],
)
def test_claim_ids_in_paths(path, scrubbed):
    assert redact.scrub_url_path(path) == scrubbed


def test_claim_ids_in_queries_and_full_urls():
    assert redact.scrub_url_query("claim_id=c1&pop=2") == "claim_id=REDACTED&pop=2"
    assert redact.scrub_url_query("ids=a,b") == "ids=a,b"
    assert redact.scrub_url("http://h:8888/v2/queues/q/claims/c1?x=1") == (
        "http://h:8888/v2/queues/q/claims/REDACTED?x=1"
    )
    assert redact.scrub_url("https://h/v2/queues/q/messages/m?claim_id=c1") == (
        "https://h/v2/queues/q/messages/m?claim_id=REDACTED"
    )


def test_error_texts_lose_quoted_values_and_what_follows_the_first_line():
    sqlalchemy = (
        "(sqlite3.IntegrityError) UNIQUE constraint failed: Queues.name\n"
        "[SQL: INSERT INTO Queues VALUES (?)]\n[parameters: ('secret body',)]"
    )
    assert redact.scrub_error_text(sqlalchemy) == (
        "(sqlite3.IntegrityError) UNIQUE constraint failed: Queues.name"
    )
    redis_echo = "unknown command 'FOO', with args beginning with: 'secret' \"more\""
    assert redact.scrub_error_text(redis_echo) == (
        "unknown command '?', with args beginning with: '?' '?'"
    )
    refused = "Error 111 connecting to 127.0.0.1:6379. Connection refused."
    assert redact.scrub_error_text(refused) == refused  # the diagnosis stays
    assert redact.scrub_error_text("x" * 5000).endswith("...")


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
    assert redact.redact_url(url) == recorded
