"""ADR 0190 over the real store and NATS: a ticket alone in its request is called and completed
without its request's serving slot, and a citizen is still never at two counters at once when
the request gets a second ticket (a transfer, another request event) or when another instance
made the ticket shared behind this one's memory."""

from __future__ import annotations

from typing import Any

import pytest

from giliran.contracts import TicketStatus, new_event
from giliran.settings import Settings
from services.queue import domain
from tests.conftest import RunningService, request_event, running
from tests.integration.test_queue_actions import SITE, Desk, issued, refused

pytestmark = pytest.mark.integration


async def slot(svc: RunningService, request_id: str) -> str | None:
    """The ticket holding the request's serving slot in the store, if any."""
    found = await svc.app.state.queue.store.visits.find_one({"_id": request_id})
    return found.get("ticket_id") if found else None


async def test_a_ticket_alone_in_its_request_takes_no_serving_slot(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        [alone] = await issued(svc, request_event(["KTP-REKAM"]))
        shared, _ = await issued(svc, request_event(["KTP-REKAM", "KIA"]))
        desk = Desk(svc.http, "1")
        assert (await desk.call_next() or {})["ticket_id"] == alone["ticket_id"]
        assert await slot(svc, alone["request_id"]) is None  # two writes: counter, ticket
        await desk.ok(alone["ticket_id"], "complete")
        assert await svc.app.state.queue.store.visits.count_documents({}) == 0
        # One of several tickets still takes its citizen's slot before it is called.
        assert (await desk.call_next() or {})["ticket_id"] == shared["ticket_id"]
        assert await slot(svc, shared["request_id"]) == shared["ticket_id"]


async def test_a_citizen_being_transferred_is_never_at_two_counters(settings: Settings) -> None:
    """The transfer writes the new ticket before the old one leaves the counter: meanwhile the
    citizen is at the counter, alone in their request until then (no slot taken)."""
    async with running("queue", settings) as svc:
        [moved] = await issued(svc, request_event(["KTP-REKAM"]))
        desk, kia_desk = Desk(svc.http, "1"), Desk(svc.http, "4")
        await kia_desk.counter_action("open", services=["KIA"])
        assert (await desk.call_next() or {})["ticket_id"] == moved["ticket_id"]
        new_id = domain.transferred_id(moved["ticket_id"], "KIA")
        store = svc.app.state.queue.store
        move = store.transition
        meanwhile: list[Any] = []

        async def transition(ticket_id: str, **kwargs: Any) -> Any:
            if ticket_id == moved["ticket_id"] and not meanwhile:
                # Between the new ticket's insert and the old one leaving the counter.
                meanwhile.append(await kia_desk.call_next())
                meanwhile.append(await kia_desk.do(new_id, "call"))
            return await move(ticket_id, **kwargs)

        store.transition = transition
        new = await desk.ok(moved["ticket_id"], "transfer", to_service="KIA")
        store.transition = move
        assert new["ticket_id"] == new_id and meanwhile[0] is None
        refused(meanwhile[1], 409, "citizen_at_another_counter")
        assert (await kia_desk.call_next() or {})["ticket_id"] == new_id
        assert await slot(svc, moved["request_id"]) == new_id


async def test_a_request_given_another_ticket_while_its_first_is_served_waits_for_it(
    settings: Settings,
) -> None:
    async with running("queue", settings) as svc:
        first = request_event(["KTP-REKAM"])
        [served] = await issued(svc, first)
        desk, kia_desk = Desk(svc.http, "1"), Desk(svc.http, "4")
        await kia_desk.counter_action("open", services=["KIA"])
        assert (await desk.call_next() or {})["ticket_id"] == served["ticket_id"]
        # The same request again with one more service (a new event for the same request).
        again = first.data.model_copy(update={"services": ["KTP-REKAM", "KIA"]})
        more = new_event(again, site=SITE)
        _, kia = await issued(svc, more)
        assert kia["held"] is True and kia["status"] == TicketStatus.WAITING
        assert await kia_desk.call_next() is None
        refused(await kia_desk.do(kia["ticket_id"], "call"), 409, "citizen_at_another_counter")
        await desk.ok(served["ticket_id"], "complete")
        assert await slot(svc, served["request_id"]) is None  # freed by the completion
        assert (await kia_desk.call_next() or {})["ticket_id"] == kia["ticket_id"]


async def test_a_call_from_memory_that_missed_its_ticket_turning_shared_takes_the_slot(
    settings: Settings,
) -> None:
    """Another instance gave the request a second ticket and flagged this one shared (no event
    of this ticket tells this instance): the call made from memory, which still says alone,
    loses its conditional write and calls the ticket again under the slot."""
    async with running("queue", settings) as svc:
        [ticket] = await issued(svc, request_event(["KTP-REKAM"]))
        queue = svc.app.state.queue
        assert queue.memory.waits(SITE, ticket["ticket_id"])  # in memory, alone
        assert await queue.store.mark_shared(ticket["ticket_id"], [TicketStatus.WAITING])
        desk = Desk(svc.http, "1")
        assert (await desk.call_next() or {})["ticket_id"] == ticket["ticket_id"]
        assert await slot(svc, ticket["request_id"]) == ticket["ticket_id"]
