"""Poison messages go to the dead-letter stream with a reason; the consumer keeps going."""

from __future__ import annotations

import json

import pytest

from giliran.bus import ensure_streams
from giliran.contracts import TicketIssued, new_event, utcnow
from giliran.contracts.subjects import DLQ_STREAM
from giliran.settings import Settings
from tests.conftest import eventually, nats_client, publish, request_event, running

pytestmark = pytest.mark.integration


async def test_poison_messages_are_parked_with_reason_and_do_not_block(settings: Settings) -> None:
    async with running("queue", settings) as svc, nats_client(settings) as client:
        js = client.jetstream()
        await ensure_streams(js)
        await js.publish("giliran.cikarang-utara.request.submitted", b"not json at all")
        unknown_service = request_event(["NO-SUCH-SERVICE"])
        await publish(settings, unknown_service)
        good = request_event(["KIA"])
        await publish(settings, good)

        tickets = svc.app.state.queue.store.tickets
        await eventually(lambda: tickets.count_documents({"request_id": good.data.request_id}))

        async def parked() -> int:
            return (await js.stream_info(DLQ_STREAM)).state.messages >= 2

        await eventually(parked)
        reasons = []
        sub = await js.pull_subscribe("giliran.*.dlq.>", durable="inspect", stream=DLQ_STREAM)
        for msg in await sub.fetch(2, timeout=5):
            assert msg.subject == "giliran.cikarang-utara.dlq.queue.request.submitted"
            assert msg.headers is not None
            reasons.append(msg.headers["Giliran-Reason"])
        assert any(r.startswith("invalid event") for r in reasons), reasons
        assert any("NO-SUCH-SERVICE" in r for r in reasons), reasons


async def test_failing_handler_is_retried_until_it_succeeds(settings: Settings) -> None:
    """notify cannot word a ticket message before it has seen the request: it NAKs with backoff
    and succeeds once the request arrives, sending exactly one message."""
    async with running("notify", settings) as svc:
        request = request_event(["KTP-CETAK"])
        ticket_id = f"{request.data.request_id}-KTP-CETAK"
        issued = new_event(
            TicketIssued(
                ticket_id=ticket_id,
                request_id=request.data.request_id,
                session_id=request.data.session_id,
                service="KTP-CETAK",
                number="B-001",
                issued_at=utcnow(),
                waiting_ahead=0,
            ),
            site="cikarang-utara",
        )
        await publish(settings, issued)

        async def retried() -> bool:
            return 'outcome="retried"' in (await svc.http.get("/metrics")).text

        await eventually(retried)
        await publish(settings, request)

        async def delivered() -> list[object] | None:
            r = await svc.http.get("/api/v1/deliveries", params={"ticket_id": ticket_id})
            found: list[object] = r.json()["deliveries"]
            return found or None

        deliveries = await eventually(delivered)
        assert len(deliveries) == 1
        async with nats_client(settings) as client:
            info = await client.jetstream().stream_info(DLQ_STREAM)
            assert info.state.messages == 0, json.dumps(str(info.state))
