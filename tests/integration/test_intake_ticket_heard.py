"""A kiosk's wait for its ticket answered from `ticket.issued` heard on plain NATS (ADR 0212),
against a real nats-server, the embedded store and two intake instances: the waiting answer
gets its ticket in either instance before any consumer wrote it; a forged or misrouted issued
event on the same subjects is not taken."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from giliran.contracts import TicketIssued, new_event
from giliran.settings import Settings
from tests.conftest import RunningService, eventually, nats_client, publish, running
from tests.integration.test_intake_status import quick, registered, ticket_events  # noqa: F401

pytestmark = pytest.mark.integration


async def without_consumers(*instances: RunningService) -> None:
    """The durable ticket consumers stopped: nothing writes tickets into the requests, so a
    ticket in an answer can only come from the event heard on plain NATS."""
    for svc in instances:
        await asyncio.wait_for(svc.runtime.bus_started.wait(), 10)
        for consumer in svc.runtime.consumers:
            await consumer.stop()


async def waiting(svc: RunningService, request_id: str, seconds: float) -> asyncio.Task[Any]:
    intake = svc.app.state.intake
    submitted = await intake.store.get(request_id)
    task = asyncio.create_task(intake.wait_for_tickets(request_id, seconds, submitted=submitted))

    async def registered_waiter() -> bool:
        return request_id in intake._waiters

    await eventually(registered_waiter, interval=0.01)
    return task


async def test_a_kiosk_wait_gets_its_ticket_from_the_issued_event_in_either_instance(
    quick: Settings,  # noqa: F811
) -> None:
    """Before ADR 0212 a wait was told only by its own instance's consumer (here stopped), so
    both waits ran their full 5 s and answered without a ticket."""
    async with running("intake", quick) as one, running("intake", quick) as other:
        await without_consumers(one, other)
        request = await registered(one)
        waits = [await waiting(svc, request["request_id"], 5.0) for svc in (one, other)]
        issued, _, _ = ticket_events(request)
        await publish(quick, issued)
        for answer in await asyncio.gather(*waits):
            entry = answer["tickets"][issued.data.ticket_id]
            assert (entry["number"], entry["status"]) == ("B-001", "waiting")
        # Nothing wrote it: the store's request still has no ticket (the consumers follow).
        stored = await one.app.state.intake.store.get(request["request_id"])
        assert stored is not None and stored["tickets"] == {}


async def test_a_forged_or_misrouted_issued_event_is_not_taken(
    quick: Settings,  # noqa: F811
) -> None:
    """A `ticket.issued` whose body says another publisher, or another site than its subject,
    or another site's whole notice (subject and body agree) naming this request id, put on the
    subjects every instance hears: the waits run out without a ticket. The last one was taken
    by ADR 0212's first landing (ADR 0228: a heard ticket must fit the waiting request)."""
    async with running("intake", quick) as svc:
        await without_consumers(svc)
        request = await registered(svc)
        wait = await waiting(svc, request["request_id"], 1.0)
        issued, _, _ = ticket_events(request)
        facts = issued.data.model_dump()
        forged = new_event(TicketIssued(**facts), site="cikarang-utara", source="intake")
        elsewhere = new_event(TicketIssued(**facts), site="botram-babelan", source="queue")
        async with nats_client(quick) as nc:
            for event, subject in (
                (forged, forged.nats_subject),
                (elsewhere, issued.nats_subject),  # body names another site
                (elsewhere, elsewhere.nats_subject),  # another site's notice, this request id
                (issued.model_copy(update={"type": "x"}), issued.nats_subject),
            ):
                await nc.publish(subject, json.dumps(event.to_json_dict()).encode())
            await nc.publish(issued.nats_subject, b"not json")
            await nc.flush()
        answer = await wait
        assert answer["tickets"] == {}
