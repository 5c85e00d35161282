"""outcomes: which exceptions of Zaqar's storage layer are answers (4xx), not failures."""

import pytest
from zaqar.storage import errors

from zaqar_otel.zaqar.outcomes import is_answer


@pytest.mark.parametrize(
    "cls",
    [
        errors.QueueDoesNotExist,
        errors.MessageDoesNotExist,
        errors.ClaimDoesNotExist,
        errors.QueueNotMapped,
        errors.MessageIsClaimed,
        errors.MessageNotClaimedBy,
        errors.ClaimDoesNotMatch,
        errors.QueueIsEmpty,
        errors.SubscriptionAlreadyExists,
    ],
)
def test_answers(cls):
    assert is_answer(f"{cls.__module__}.{cls.__name__}")


@pytest.mark.parametrize(
    "etype",
    [
        "zaqar.storage.errors.ConnectionError",  # 503
        "zaqar.storage.errors.MessageConflict",  # 503
        "zaqar.storage.errors.NoPoolFound",
        "redis.exceptions.ConnectionError",
        "KeyError",
        "zaqar.storage.errors.NoSuchThing",
        "zaqar.not.imported.Module",
    ],
)
def test_failures(etype):
    assert not is_answer(etype)


def test_an_answer_through_the_bridge_is_an_event_not_an_error():
    from opentelemetry.trace import StatusCode
    from osprofiler import profiler

    from tests import tracing

    tracing.init_bridge()
    tracing.start_profiling()

    @profiler.trace("redis_claim_controller")
    def get(claim_id):
        raise errors.ClaimDoesNotExist(claim_id, "q", "p")

    with pytest.raises(errors.ClaimDoesNotExist):
        get("claim-capability-1")
    profiler.clean()
    [span] = tracing.finished()
    assert span.status.status_code == StatusCode.UNSET
    [event] = span.events
    assert dict(event.attributes) == {"exception.type": "zaqar.storage.errors.ClaimDoesNotExist"}
    assert "claim-capability-1" not in str(dict(span.attributes))
