"""Correlation ids, structured logs and tracing shared by every service process."""

from __future__ import annotations

import base64
import logging
import os
import re
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from faststream.message import StreamMessage

log = logging.getLogger("giliran.telemetry")

# --- correlation id ----------------------------------------------------------------------------
#
# One id per citizen's request: taken from X-Request-ID (or a traceparent's trace id) at the HTTP
# edge or made there, carried on every event the request causes (the CloudEvents extension
# attribute `correlationid`), restored by every consumer, and put on every log line
# (docs/decisions/0090-correlation-id-follows-the-citizen.md).

REQUEST_ID_HEADER = "X-Request-ID"
# Echoed back and logged: no spaces, quotes or control characters, and bounded.
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
# ...and never a NIK or a phone number a client sent as its request id (nor a hex trace id that
# looks like one): such a value would be stored on every event and printed on every log line.
_DIGIT_RUN = re.compile(r"[0-9]{8}")
_correlation: ContextVar[str | None] = ContextVar("giliran_correlation_id", default=None)


def correlation_id() -> str | None:
    return _correlation.get()


def new_correlation_id() -> str:
    """128 random bits in lowercase base32 (a-z, 2-7; 26 characters): no 0, 1, 8 or 9 and no
    long digit runs, so an id never looks like a NIK or a phone number to a log scan (hex ids
    do, about once in 200)."""
    return base64.b32encode(uuid.uuid4().bytes).decode().rstrip("=").lower()


def acceptable_id(value: str | None) -> str | None:
    """`value` when it is safe to carry and echo, else None (a new one is made)."""
    if not value or not _ACCEPTABLE_ID.match(value) or _DIGIT_RUN.search(value):
        return None
    return value


def bind_correlation(value: str | None) -> Token[str | None]:
    """correlated() without a generator, for the per-event path: reset with the token."""
    return _correlation.set(value)


def unbind_correlation(token: Token[str | None]) -> None:
    _correlation.reset(token)


@contextmanager
def correlated(value: str | None) -> Iterator[None]:
    """Everything inside (logs, events created) belongs to the request `value` names."""
    token = _correlation.set(value)
    try:
        yield
    finally:
        _correlation.reset(token)


# --- structured logs ---------------------------------------------------------------------------

LogFormat = Literal["json", "text"]


class _Context(logging.Filter):
    """Adds the service, the correlation id and (when tracing) the trace and span ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self._service
        record.correlation_id = _correlation.get()
        if _provider is not None:
            span = trace.get_current_span().get_span_context()
            if span.is_valid:
                record.trace_id = f"{span.trace_id:032x}"
                record.span_id = f"{span.span_id:016x}"
        return True


class _Text(logging.Formatter):
    """The terminal's line, with the correlation id after the logger's name when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(name)s]%(cid)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        found = getattr(record, "correlation_id", None)
        record.cid = f" cid={found}" if found else ""
        return super().format(record)


def configure_logging(fmt: LogFormat, level: str, service: str = "giliran") -> None:
    """Root logging for a process: one JSON object per line (compose, k8s) or a plain line (a
    terminal); both carry the correlation id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context(service))
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "name": "logger"},
                # ISO 8601 in UTC, to the microsecond.
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(_Text())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


# --- tracing -----------------------------------------------------------------------------------
#
# Off unless OTEL_TRACES_EXPORTER names an exporter: then no span is made anywhere and no
# middleware is added, so an unused tracer costs nothing on the hot path
# (docs/decisions/0091-tracing-off-unless-configured.md).

_provider: TracerProvider | None = None
_PROPAGATOR = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"


def configure_tracing(
    service: str, environ: Mapping[str, str] | None = None, *, install: bool = True
) -> bool:
    """Turn tracing on from the standard OTEL_* variables; False (and nothing set up) when
    OTEL_TRACES_EXPORTER is unset or "none", or OTEL_SDK_DISABLED is true. `install` also makes
    it the process's global provider (libraries tracing on their own use it: FastAPI's spans)."""
    env = os.environ if environ is None else environ
    exporters = [e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "none").split(",")]
    exporters = [e for e in exporters if e and e != "none"]
    if not exporters or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
        SpanExporter,
    )

    # OTEL_RESOURCE_ATTRIBUTES is read by Resource.create as well.
    name = env.get("OTEL_SERVICE_NAME") or f"giliran-{service}"
    provider = SdkTracerProvider(resource=Resource.create({"service.name": name}))
    known = 0
    for chosen in exporters:
        exporter: SpanExporter
        known += chosen in ("otlp", "console")
        if chosen == "otlp":
            # Reads OTEL_EXPORTER_OTLP_ENDPOINT / _TRACES_ENDPOINT / _HEADERS itself.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif chosen == "console":
            # One JSON document per span on stdout, written at once (a trace of a test run).
            exporter = ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n")
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            log.warning("OTEL_TRACES_EXPORTER=%s is not supported (otlp, console)", chosen)
    if not known:  # spans nobody would see: stay off
        return False
    use_tracer_provider(provider)
    if install:
        trace.set_tracer_provider(provider)
    return True


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace into `provider` (None: tracing off). Tests pass one with an in-memory exporter."""
    global _provider
    _provider = provider


def tracing() -> bool:
    return _provider is not None


def tracer() -> Tracer:
    assert _provider is not None
    return _provider.get_tracer("giliran")


def current_traceparent() -> str | None:
    """The W3C traceparent of the span running now (None when tracing is off or no span)."""
    if _provider is None:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def context_of(traceparent: str | None) -> Context | None:
    return _PROPAGATOR.extract({TRACEPARENT: traceparent}) if traceparent else None


def _messaging(operation: str, subject: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """OpenTelemetry messaging semantic conventions for one event on NATS."""
    return {
        "messaging.system": "nats",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": subject,
        "messaging.message.id": str(event.get("id", "")),
        "cloudevents.event_type": str(event.get("type", "")),
        "cloudevents.event_subject": str(event.get("subject", "")),
    }


@contextmanager
def sending(subject: str, event: Mapping[str, Any], headers: dict[str, str]) -> Iterator[None]:
    """The relay's "send" span, a child of where the event was created (its traceparent
    attribute); its own context goes into the NATS headers for other tools."""
    if _provider is None:
        yield
        return
    with tracer().start_as_current_span(
        f"send {subject}",
        context=context_of(event.get(TRACEPARENT)),
        kind=SpanKind.PRODUCER,
        attributes=_messaging("send", subject, event),
    ):
        _PROPAGATOR.inject(headers)
        yield


@contextmanager
def processing(
    subject: str, event: Mapping[str, Any], consumer: str, traceparent: str | None
) -> Iterator[None]:
    """A consumer's "process" span (tracing on only), a child of the event's creation context."""
    with trace.use_span(processing_span(subject, event, consumer, traceparent), end_on_exit=True):
        yield


def processing_span(
    subject: str, event: Mapping[str, Any], consumer: str, traceparent: str | None
) -> trace.Span:
    """processing()'s span started but not made current: a batch handler opens one per event of
    its batch, then makes each current in turn (trace.use_span) to log that event under it."""
    attributes = _messaging("process", subject, event)
    attributes["messaging.consumer.group.name"] = consumer
    return tracer().start_span(
        f"process {subject}",
        context=context_of(traceparent),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


@contextmanager
def resumed(journey: Mapping[str, Any] | None, name: str) -> Iterator[None]:
    """Continue a stored journey (a ticket's correlation id and trace context, kept since it was
    issued): an officer's click calls the citizen's ticket, and the events it creates belong to
    the citizen's request and trace; the officer's own span is linked."""
    journey = journey or {}
    with correlated(journey.get("correlationid") or _correlation.get()):
        parent = context_of(journey.get(TRACEPARENT))
        if _provider is None or parent is None:
            yield
            return
        here = trace.get_current_span().get_span_context()
        with tracer().start_as_current_span(
            f"create {name}",
            context=parent,
            kind=SpanKind.PRODUCER,
            links=[Link(here)] if here.is_valid else None,
            attributes={"messaging.system": "nats", "messaging.operation.type": "create"},
        ):
            yield


# The field a document keeps its journey in (the queue's tickets).
JOURNEY = "journey"


def journey() -> dict[str, str]:
    """What to store with a document so later events about it continue this request."""
    found = {"correlationid": _correlation.get(), TRACEPARENT: current_traceparent()}
    return {k: v for k, v in found.items() if v}


# --- FastStream (commands over NATS request-reply) ----------------------------------------------


def broker_middlewares() -> tuple[Any, ...]:
    """The correlation middleware always; FastStream's own telemetry middleware when tracing."""
    from faststream import BaseMiddleware

    class Correlation(BaseMiddleware):
        """Restores the sender's correlation id (X-Request-ID header) around a command."""

        async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
            headers = msg.headers or {}
            with correlated(acceptable_id(headers.get(REQUEST_ID_HEADER)) or new_correlation_id()):
                return await call_next(msg)

    middlewares: list[Any] = [Correlation]
    if _provider is not None:
        from faststream.nats.opentelemetry import NatsTelemetryMiddleware

        middlewares.append(NatsTelemetryMiddleware(tracer_provider=_provider))
    return tuple(middlewares)


def outgoing_headers() -> dict[str, str]:
    """Headers for a command sent with plain nats-py: correlation id and trace context."""
    headers: dict[str, str] = {}
    cid = _correlation.get()
    if cid:
        headers[REQUEST_ID_HEADER] = cid
    if _provider is not None:
        _PROPAGATOR.inject(headers)
    return headers
