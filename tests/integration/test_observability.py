"""Observability over real NATS and the store: one citizen's request is one correlation id and
one trace across services; metrics a run exposes; HTTP labels carry route templates only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from giliran import telemetry
from giliran.contracts.subjects import STREAM
from giliran.settings import Settings
from tests.conftest import eventually, nats_client, running

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
REQUEST = {
    "site": SITE,
    "services": ["KTP-CETAK"],
    "name": "Siti Aminah",
    "nik": "3216094512900001",
    "phone": "0812-3456-7890",
    "consent": True,
}
CITIZEN_REQUEST_ID = "citizen-req-0001"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for services built in this test, into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        telemetry.use_tracer_provider(None)
        provider.shutdown()


async def _stream_events(settings: Settings) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Every message in the event stream: the envelope and the NATS headers."""
    found = []
    async with nats_client(settings) as client:
        js = client.jetstream()
        last = (await js.stream_info(STREAM)).state.last_seq
        for seq in range(1, last + 1):
            msg = await js.get_msg(STREAM, seq)
            found.append((json.loads(msg.data or b"{}"), dict(msg.headers or {})))
    return found


def _consumed(spans: list[ReadableSpan], trace_id: int) -> set[tuple[str, str]]:
    """(consumer, event type) of every "process" span of the trace."""
    return {
        (
            str(s.attributes.get("messaging.consumer.group.name")),
            str(s.attributes.get("cloudevents.event_type")),
        )
        for s in spans
        if s.context is not None
        and s.context.trace_id == trace_id
        and s.kind == SpanKind.CONSUMER
        and s.attributes is not None
        and "cloudevents.event_type" in s.attributes
    }


async def test_one_citizen_is_one_correlation_id_and_one_trace(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    async with (
        running("intake", settings) as intake,
        running("queue", settings) as queue,
        running("notify", settings) as notify,
    ):
        submitted = await intake.http.post(
            "/api/v1/requests", json=REQUEST, headers={"X-Request-ID": CITIZEN_REQUEST_ID}
        )
        assert submitted.status_code == 201, submitted.text
        assert submitted.headers["x-request-id"] == CITIZEN_REQUEST_ID
        ticket_id = submitted.json()["tickets"][0]["ticket_id"]

        # The officer's click is another request (its own id), but the call is the citizen's.
        called = await queue.http.post(f"/api/v1/sites/{SITE}/counters/1/call-next")
        assert called.status_code == 200, called.text
        officer_request_id = called.headers["x-request-id"]
        assert officer_request_id != CITIZEN_REQUEST_ID

        async def called_message_sent() -> list[dict[str, Any]] | None:
            r = await notify.http.get("/api/v1/deliveries", params={"ticket_id": ticket_id})
            found: list[dict[str, Any]] = r.json()["deliveries"]
            return found if {"ticket_called"} <= {d["template"] for d in found} else None

        await eventually(called_message_sent)

        async def notification_on_bus() -> list[tuple[dict[str, Any], dict[str, str]]] | None:
            events = await _stream_events(settings)
            kinds = [e["type"] for e, _ in events]
            return events if kinds.count("giliran.notification.sent.v1") >= 2 else None

        events = await eventually(notification_on_bus)
        # Every event of the story carries the citizen's id, the call included.
        by_type = {e["type"]: e for e, _ in events}
        assert set(by_type) >= {
            "giliran.request.submitted.v1",
            "giliran.ticket.issued.v1",
            "giliran.ticket.called.v1",
            "giliran.notification.sent.v1",
        }
        citizens = [(e, h) for e, h in events if not e["type"].startswith("giliran.counter.")]
        assert {e.get("correlationid") for e, _ in citizens} == {CITIZEN_REQUEST_ID}
        # The counter opened by the click is the officer's own doing.
        assert by_type["giliran.counter.opened.v1"]["correlationid"] == officer_request_id

        registration = [
            s
            for s in spans.get_finished_spans()
            if s.kind == SpanKind.SERVER and s.name == "POST /api/v1/requests"
        ]
        assert len(registration) == 1
        assert registration[0].context is not None
        trace_id = registration[0].context.trace_id
        # The trace context travels in the envelope and in the NATS headers, in one trace.
        for envelope, headers in citizens:
            assert int(envelope["traceparent"].split("-")[1], 16) == trace_id, envelope["type"]
            assert int(headers["traceparent"].split("-")[1], 16) == trace_id, envelope["type"]

        finished = list(spans.get_finished_spans())
        consumed = _consumed(finished, trace_id)
        assert {
            ("queue-requests", "giliran.request.submitted.v1"),
            ("intake-tickets", "giliran.ticket.issued.v1"),
            ("notify-console", "giliran.ticket.issued.v1"),
            ("notify-console", "giliran.ticket.called.v1"),
        } <= consumed, consumed
        sent = {
            str(s.attributes.get("cloudevents.event_type"))
            for s in finished
            if s.context is not None
            and s.context.trace_id == trace_id
            and s.kind == SpanKind.PRODUCER
            and s.attributes is not None
            and s.attributes.get("messaging.operation.type") == "send"
        }
        assert {
            "giliran.request.submitted.v1",
            "giliran.ticket.issued.v1",
            "giliran.ticket.called.v1",
            "giliran.notification.sent.v1",
        } <= sent, sent
        # The officer's call-next is its own trace, linked from the citizen's call.
        click = next(s for s in finished if s.name.endswith("/call-next"))
        assert click.context is not None and click.context.trace_id != trace_id
        create = next(s for s in finished if s.name == "create giliran.ticket.called.v1")
        assert create.context is not None and create.context.trace_id == trace_id
        assert [link.context.span_id for link in create.links] == [click.context.span_id]

        # A command over NATS request-reply (the status page asks the queue) continues the
        # trace through FastStream's telemetry middleware on the queue's side.
        spans.clear()
        token = submitted.json()["status_page_url"].rsplit("/", 1)[1]
        status = await intake.http.get(f"/api/v1/status/{token}")
        assert status.status_code == 200
        page = next(s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER)
        assert page.context is not None
        commands = [
            s
            for s in spans.get_finished_spans()
            if s.context is not None
            and s.context.trace_id == page.context.trace_id
            and s.kind == SpanKind.CONSUMER
            and s.instrumentation_scope is not None
            and s.instrumentation_scope.name == "opentelemetry.instrumentation.faststream"
            and s.name.endswith("cmd.queue.request_status process")
        ]
        assert commands, [s.name for s in spans.get_finished_spans()]


async def test_a_run_exposes_the_metrics_of_the_dashboard(settings: Settings) -> None:
    async with (
        running("intake", settings) as intake,
        running("queue", settings) as queue,
        running("notify", settings) as notify,
    ):
        submitted = await intake.http.post("/api/v1/requests", json=REQUEST)
        assert submitted.status_code == 201, submitted.text
        ticket_id = submitted.json()["tickets"][0]["ticket_id"]
        await queue.http.get(f"/api/v1/tickets/{ticket_id}")
        await queue.http.get("/api/v1/tickets/no-such-ticket")
        await queue.http.get(f"/nowhere/{ticket_id}")

        async def issued_message_sent() -> bool:
            r = await notify.http.get("/api/v1/deliveries", params={"ticket_id": ticket_id})
            return bool(r.json()["deliveries"])

        await eventually(issued_message_sent)
        await queue.app.state.queue_metrics.refresh(queue.app.state.queue)
        for service in (intake, queue, notify):
            await service.runtime.observe_bus()
        text = {
            name: (await s.http.get("/metrics")).text
            for name, s in (("intake", intake), ("queue", queue), ("notify", notify))
        }

        def value(service: str, sample: str) -> float:
            for line in text[service].splitlines():
                if line.startswith(sample + " "):
                    return float(line.rsplit(" ", 1)[1])
            raise AssertionError(f"{sample} not in {service}'s metrics")

        issued = 'type="giliran.ticket.issued.v1"'
        assert value("queue", f"giliran_events_published_total{{{issued}}}") == 1
        assert value(
            "intake", 'giliran_events_published_total{type="giliran.request.submitted.v1"}'
        )
        assert value(
            "queue",
            'giliran_event_handler_seconds_count{consumer="queue-requests",'
            'type="giliran.request.submitted.v1"}',
        ) == 1  # fmt: skip
        assert value("queue", 'giliran_consumer_pending{consumer="queue-requests"}') == 0
        assert value("notify", 'giliran_consumer_ack_pending{consumer="notify-console"}') == 0
        assert value("notify", 'giliran_notifications_total{channel="console",outcome="sent"}')
        assert value("queue", "giliran_bus_connected") == 1
        assert value("queue", f'giliran_queue_waiting{{line="KTP-CETAK",site="{SITE}"}}') == 1
        assert value("queue", f'giliran_queue_session_open{{site="{SITE}"}}') == 1
        assert value("queue", f'giliran_board_connections{{site="{SITE}"}}') == 0
        assert value("queue", "giliran_queue_target_wait_seconds") == 1800
        # Route templates, never a raw path (ids and tokens stay out of labels).
        route = 'route="/api/v1/tickets/{ticket_id}"'
        assert value(
            "queue",
            f'giliran_http_request_duration_seconds_count{{method="GET",{route},status="200"}}',
        ) == 1  # fmt: skip
        assert value(
            "queue",
            f'giliran_http_request_duration_seconds_count{{method="GET",{route},status="404"}}',
        ) == 1  # fmt: skip
        assert 'route="unmatched"' in text["queue"]
        # What the store is asked, by command and collection (bench/sustained.py sums it).
        assert value("queue", 'giliran_store_commands_total{collection="tickets",command="insert"}')
        assert ticket_id not in text["queue"]


async def test_request_ids_from_the_caller_are_kept_only_when_safe(settings: Settings) -> None:
    async with running("queue", settings) as queue:
        kept = await queue.http.get("/healthz", headers={"X-Request-ID": "abc-DEF_123.45:6"})
        assert kept.headers["x-request-id"] == "abc-DEF_123.45:6"
        hostile = await queue.http.get("/healthz", headers={"X-Request-ID": 'x y"<script>'})
        assert hostile.headers["x-request-id"] != 'x y"<script>'
        assert len(hostile.headers["x-request-id"]) == 26
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        from_trace = await queue.http.get(
            "/healthz", headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
        )
        assert from_trace.headers["x-request-id"] == trace
        fresh = await queue.http.get("/healthz")
        assert (
            fresh.headers["x-request-id"]
            != (await queue.http.get("/healthz")).headers["x-request-id"]
        )
