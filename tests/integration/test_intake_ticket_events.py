"""Intake follows tickets with one conditional write per event and no inbox (ADR 0175), against
a real nats-server, the embedded store and TWO intake instances sharing the consumer: events out
of order and each delivered twice leave one entry at its furthest status; a kiosk answer whose
ticket the other instance wrote still shows it (the store read after the in-process wait)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from giliran.settings import Settings
from tests.conftest import eventually, publish, running
from tests.integration.test_intake_registration import bus_events
from tests.integration.test_intake_status import quick, registered, ticket_events  # noqa: F401

pytestmark = pytest.mark.integration

REQUEST = {
    "site": "cikarang-utara",
    "services": ["KTP-CETAK", "KK-UBAH"],
    "name": "Siti Aminah",
    "nik": "3216094512900001",
    "consent": False,
}


async def test_out_of_order_and_twice_delivered_events_leave_one_entry_at_its_furthest(
    quick: Settings,  # noqa: F811
) -> None:
    async with running("intake", quick) as one, running("intake", quick) as other:
        request = await registered(one)
        issued, called, completed = ticket_events(request)
        # Newest first, each twice (distinct Nats-Msg-Id, so JetStream does not drop the copy),
        # spread over both instances by the shared durable consumer.
        for copy, event in enumerate((completed, called, issued, called, completed, issued)):
            await publish(quick, event, msg_id=f"{event.id}-{copy}")

        async def furthest() -> dict[str, Any] | None:
            doc = await one.app.state.intake.store.get(request["request_id"])
            tickets = doc["tickets"] if doc else {}
            entry = tickets.get(issued.data.ticket_id)
            return tickets if entry and entry["status"] == "completed" else None

        tickets = await eventually(furthest)
        await asyncio.sleep(1.0)  # any copy still on its way has arrived by now
        tickets = await furthest()
        assert tickets is not None and list(tickets) == [issued.data.ticket_id]
        entry = tickets[issued.data.ticket_id]
        assert (entry["number"], entry["counter"]) == ("B-001", "2")
        # Every copy reached a handler (applied, or found to change nothing); no inbox for it.
        handled = 0
        for svc in (one, other):
            metrics = (await svc.http.get("/metrics")).text
            handled += sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("giliran_events_handled_total{")
                and 'consumer="intake-tickets"' in line
                and ('outcome="handled"' in line or 'outcome="duplicate"' in line)
            )
        assert handled == 6
        inbox = one.runtime.db["inbox_intake_tickets"]  # created empty by the runtime at start
        assert await inbox.find_one({}) is None


async def test_a_ticket_written_by_the_other_instance_is_in_the_kiosk_answer(
    settings: Settings,
) -> None:
    """The instance that took the registration does not consume ticket events here: the
    answer's wait finds nothing in process and reads the ticket the other instance wrote."""
    async with (
        running("intake", settings) as kiosk_side,
        running("intake", settings),
        running("queue", settings),
    ):
        for consumer in kiosk_side.runtime.consumers:
            await consumer.stop()
        submitted = await kiosk_side.http.post("/api/v1/requests", json=REQUEST)
        assert submitted.status_code == 201, submitted.text
        assert [t["number"] for t in submitted.json()["tickets"]] == ["B-001", "F-001"]


async def test_a_fetched_batch_is_one_store_command_and_its_redelivery_changes_nothing(
    quick: Settings,  # noqa: F811
) -> None:
    """The consumer's batch handler called as the consumer calls it, against the real store:
    issued and called for three requests in one command; the same batch again (a redelivery
    after kill -9) is refused by the filters and changes nothing."""
    async with running("intake", quick) as svc:
        intake = svc.app.state.intake
        requests = [await registered(svc, n) for n in (1, 2, 3)]
        batch = []
        for n, request in enumerate(requests, start=1):
            issued, called, _ = ticket_events(request, n)
            batch += [issued, called]

        async def updates() -> float:
            metrics = (await svc.http.get("/metrics")).text
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("giliran_store_commands_total{")
                and 'collection="requests"' in line
                and 'command="update"' in line
            )

        before = await updates()
        assert await intake.record_tickets(batch) == set()
        # One command for six events (the relay may remove a registration's events meanwhile).
        assert await updates() - before <= 2

        async def states() -> list[tuple[str, str | None]]:
            found = []
            for request in requests:
                doc = await intake.store.get(request["request_id"])
                found += [(t["status"], t["counter"]) for t in doc["tickets"].values()]
            return found

        assert await states() == [("called", "2")] * 3
        unchanged = await intake.record_tickets(batch)
        assert unchanged == {e.id for e in batch if e.type.endswith("issued.v1")}
        assert await states() == [("called", "2")] * 3


async def test_a_registrations_events_leave_at_once_without_the_relays_query(
    quick: Settings,  # noqa: F811
) -> None:
    """ADR 0178: submit publishes what it stored itself; with the relay's loop stopped the event
    still reaches the bus and the request's outbox is emptied."""
    async with (
        running("intake", quick) as svc,
        bus_events(quick, "giliran.cikarang-utara.request.submitted") as published,
    ):
        relay = svc.runtime.relay
        assert relay is not None
        await relay.stop()
        request = await registered(svc)

        async def out() -> bool:
            return any(e["data"]["request_id"] == request["request_id"] for e in published)

        await eventually(out)
        stored = await svc.app.state.intake.store.requests.find_one({"_id": request["request_id"]})
        assert stored["outbox_n"] == 0 and not stored.get("outbox")
