"""Correlation ids on events, the log formats, and tracing switched by the environment."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from giliran import telemetry
from giliran.contracts import parse_event
from tests.conftest import request_event


@pytest.fixture
def tracing_reset() -> Iterator[None]:
    yield
    telemetry.use_tracer_provider(None)


def test_events_carry_the_correlation_id_they_were_created_in() -> None:
    with telemetry.correlated("citizen-0001"):
        event = request_event(["KTP-CETAK"])
    assert event.correlationid == "citizen-0001"
    assert event.traceparent is None  # tracing off: nothing to carry
    stored = event.to_json_dict()
    assert stored["correlationid"] == "citizen-0001"
    assert "traceparent" not in stored  # CloudEvents has no null attributes
    assert parse_event(json.dumps(stored)).correlationid == "citizen-0001"


def test_events_from_before_parse_without_the_extensions() -> None:
    stored = request_event(["KTP-CETAK"]).to_json_dict()
    assert "correlationid" not in stored and "traceparent" not in stored
    parsed = parse_event(stored)
    assert parsed.correlationid is None and parsed.traceparent is None


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("citizen-0001", True),
        ("4bf92f3577b34da6a3ce929d0e0e4736", True),
        ("short", False),
        ("x" * 65, False),
        ("has space in it", False),
        ('quote"inside', False),
        ("", False),
        ("3216064107900001", False),  # a NIK sent as a request id is never stored or logged
        ("wa-081234567890", False),  # nor a phone number inside one
        ("4bf92f3577b34da6a3ce92990123456e", False),  # a trace id with a NIK-like digit run
    ],
)
def test_only_safe_request_ids_are_kept(value: str, kept: bool) -> None:
    assert (telemetry.acceptable_id(value) == value) is kept
    assert telemetry.acceptable_id(value) in (value, None)


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers (pytest's capture among them): put them back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _line(fmt: telemetry.LogFormat) -> str:
    telemetry.configure_logging(fmt, "INFO", service="queue")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    out = io.StringIO()
    handler.setStream(out)
    with telemetry.correlated("citizen-0001"):
        logging.getLogger("giliran.test").info("called %s", "B-001")
    return out.getvalue()


def test_json_lines_carry_service_and_correlation_id() -> None:
    record = json.loads(_line("json"))
    assert record["message"] == "called B-001"
    assert (record["service"], record["correlation_id"]) == ("queue", "citizen-0001")
    assert (record["level"], record["logger"]) == ("INFO", "giliran.test")
    assert record["time"].endswith("+00:00")


def test_text_lines_carry_the_correlation_id() -> None:
    assert "[giliran.test] cid=citizen-0001 called B-001" in _line("text")


@pytest.mark.parametrize(
    "environ",
    [{}, {"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_TRACES_EXPORTER": "jaeger"},
     {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}],
)  # fmt: skip
def test_tracing_stays_off_unless_an_exporter_is_named(
    environ: dict[str, str], tracing_reset: None
) -> None:
    assert telemetry.configure_tracing("queue", environ) is False
    assert not telemetry.tracing()
    assert telemetry.broker_middlewares()[1:] == ()  # no FastStream telemetry middleware


def test_an_exporter_named_in_the_environment_turns_tracing_on(tracing_reset: None) -> None:
    from faststream.nats.opentelemetry import NatsTelemetryMiddleware

    environ = {"OTEL_TRACES_EXPORTER": "console"}
    # Not installed globally: the rest of this test process stays untraced.
    assert telemetry.configure_tracing("queue", environ, install=False) is True
    assert telemetry.tracing()
    assert isinstance(telemetry.broker_middlewares()[1], NatsTelemetryMiddleware)
    with telemetry.tracer().start_as_current_span("request"):
        parent = telemetry.current_traceparent()
        event = request_event(["KTP-CETAK"])
    assert parent is not None and event.traceparent == parent
