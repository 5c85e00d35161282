"""Zaqar's notifications (subscriptions) in the trace of the post that triggered them.

Zaqar's notifier sends webhooks and emails from a thread pool, where no trace
context exists. With these hooks, for a post in a profiled request (and
``[profiler] trace_notifications`` on):

* the notifier's executor carries the request's OpenTelemetry context into the
  pool (``outgoing.ContextExecutor``);
* every webhook HTTP attempt is a CLIENT span ``notify <queue>`` (made by the
  python-requests hook of ``zaqar_otel.bridge.outgoing``): ``url.full`` without
  credentials or query values, ``http.response.status_code``, the subscription
  id, ``http.request.resend_count`` on Zaqar's retries; the request carries
  ``traceparent`` for that span and never OSProfiler's ``X-Trace-*`` headers;
* every email notification (``mailto:``) is a CLIENT span ``notify <queue>`` with
  the addresses' local parts redacted; an error Zaqar logs while sending marks
  it as failed (Zaqar itself swallows the error).
"""

from __future__ import annotations

import contextvars
import functools
import logging
from typing import Any

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
from opentelemetry.semconv.attributes import error_attributes, url_attributes
from opentelemetry.trace import SpanKind, Status, StatusCode

from zaqar_otel.bridge import options, outgoing, provider
from zaqar_otel.bridge.attributes import AttributeValue
from zaqar_otel.bridge.gate import in_profiled_request
from zaqar_otel.bridge.redact import redact_url
from zaqar_otel.zaqar import producer

SUBSCRIPTION_ID = "messaging.zaqar.subscription.id"
MAIL_LOGGER = "zaqar.notification.tasks.mailto"


def _flag_on() -> bool:
    return options.flag("trace_notifications", True)


def _enabled() -> bool:
    return in_profiled_request() and _flag_on()


def _attributes(subscription: Any, messages: Any) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        messaging.MESSAGING_SYSTEM: producer.SYSTEM,
        messaging.MESSAGING_OPERATION_NAME: "notify",
        messaging.MESSAGING_OPERATION_TYPE: "send",
    }
    source = subscription.get("source") if isinstance(subscription, dict) else None
    if isinstance(source, str):
        attrs[messaging.MESSAGING_DESTINATION_NAME] = source
    sub_id = subscription.get("id") if isinstance(subscription, dict) else None
    if isinstance(sub_id, str):
        attrs[SUBSCRIPTION_ID] = sub_id
    if isinstance(messages, list) and len(messages) > 1:
        attrs[messaging.MESSAGING_BATCH_MESSAGE_COUNT] = len(messages)
    return attrs


def _span_name(subscription: Any) -> str:
    source = subscription.get("source") if isinstance(subscription, dict) else None
    return f"notify {source}" if isinstance(source, str) else "notify"


# -- the notifier's thread pool


def carrying_executor(original: Any) -> Any:
    """``NotifierDriver.__init__``, then its executor carries the submitter's context."""

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        executor = getattr(self, "executor", None)
        if executor is not None and not isinstance(executor, outgoing.ContextExecutor):
            self.executor = outgoing.ContextExecutor(executor, when=_flag_on)

    __init__.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return __init__


# -- webhooks


def traced_webhook(original: Any) -> Any:
    """``WebhookTask.execute``: its HTTP requests are ``notify <queue>`` CLIENT spans."""

    @functools.wraps(original)
    def execute(self: Any, subscription: Any, messages: Any, *args: Any, **kwargs: Any) -> Any:
        if not _enabled():
            return original(self, subscription, messages, *args, **kwargs)
        # one message per HTTP request: no batch count on the attempts
        what = outgoing.Purpose(_span_name(subscription), _attributes(subscription, None))
        with outgoing.purpose(what):
            return original(self, subscription, messages, *args, **kwargs)

    execute.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return execute


def counting_retries(original: Any) -> Any:
    """``WebhookTask._retry_post``: the attempts inside are resends 1, 2, ..."""

    @functools.wraps(original)
    def _retry_post(self: Any, *args: Any, **kwargs: Any) -> Any:
        what = outgoing.current_purpose()
        if what is None:
            return original(self, *args, **kwargs)
        try:
            return original(self, *args, **kwargs)
        finally:
            what.resend_count = 0

    _retry_post.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return _retry_post


def counting_attempt(original: Any) -> Any:
    """``WebhookTask._post_request_success``: one more resend."""

    @functools.wraps(original)
    def _post_request_success(self: Any, *args: Any, **kwargs: Any) -> Any:
        what = outgoing.current_purpose()
        if what is not None:
            what.resend_count += 1
        return original(self, *args, **kwargs)

    _post_request_success.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return _post_request_success


# -- email

_MAIL_SPAN: contextvars.ContextVar[trace.Span | None] = contextvars.ContextVar(
    "zaqar_otel_mail_span", default=None
)


class MailErrors(logging.Filter):
    """Marks the current mail span failed when Zaqar logs an error sending it."""

    def filter(self, record: logging.LogRecord) -> bool:
        span = _MAIL_SPAN.get()
        if span is not None and record.levelno >= logging.ERROR:
            exc = record.exc_info[0] if record.exc_info else None
            etype = exc.__name__ if exc is not None else "MailError"
            span.set_attribute(error_attributes.ERROR_TYPE, etype)
            span.set_status(Status(StatusCode.ERROR, etype))
        return True  # never hides the log record


_FILTER = MailErrors()


def traced_mail(original: Any) -> Any:
    """``MailtoTask.execute``: one CLIENT span ``notify <queue>`` per subscriber."""

    @functools.wraps(original)
    def execute(self: Any, subscription: Any, messages: Any, *args: Any, **kwargs: Any) -> Any:
        if not _enabled():
            return original(self, subscription, messages, *args, **kwargs)
        attrs = _attributes(subscription, messages)
        subscriber = subscription.get("subscriber") if isinstance(subscription, dict) else None
        attrs[url_attributes.URL_SCHEME] = "mailto"
        if isinstance(subscriber, str):
            attrs[url_attributes.URL_FULL] = redact_url(subscriber)
        span = provider.tracer(outgoing.TRACER).start_span(
            _span_name(subscription), kind=SpanKind.CLIENT, attributes=attrs
        )
        token = _MAIL_SPAN.set(span)
        try:
            with trace.use_span(span, end_on_exit=False):
                return original(self, subscription, messages, *args, **kwargs)
        finally:
            _MAIL_SPAN.reset(token)
            span.end()

    execute.__zaqar_otel__ = True  # type: ignore[attr-defined]
    return execute


def _patch(owner: Any, name: str, wrapper: Any) -> None:
    current = getattr(owner, name)
    if not getattr(current, "__zaqar_otel__", False):
        setattr(owner, name, wrapper(current))


def install() -> bool:
    """Hook Zaqar's notifier and its webhook and mail tasks (idempotent)."""
    try:
        from zaqar.notification import notifier
        from zaqar.notification.tasks import mailto, webhook
    except ImportError:
        return False
    _patch(notifier.NotifierDriver, "__init__", carrying_executor)
    _patch(webhook.WebhookTask, "execute", traced_webhook)
    _patch(webhook.WebhookTask, "_retry_post", counting_retries)
    _patch(webhook.WebhookTask, "_post_request_success", counting_attempt)
    _patch(mailto.MailtoTask, "execute", traced_mail)
    mail_logger = logging.getLogger(MAIL_LOGGER)
    if _FILTER not in mail_logger.filters:
        mail_logger.addFilter(_FILTER)
    return True
