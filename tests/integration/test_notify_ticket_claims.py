"""A ticket's messages are claimed in its ticket's own write (ADR 0198), against real NATS, the real
embedded store and a real HTTP gateway: an event naming another site's ticket (or request) changes
nothing and tells nobody; the same event racing into two instances is sent once; a message whose
claim another attempt holds is not sent again; one event's write is the only ticket write."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from giliran.contracts import TicketCompleted, new_event
from giliran.errors import RetryLater, Unprocessable
from giliran.settings import Settings
from giliran.store import STORE_COMMANDS
from tests.conftest import RunningService, eventually, publish, running
from tests.fakes.gateway import FakeGateway
from tests.integration.test_notify_channels import (
    SITE,
    deliveries,
    notify_with,
    request,
    sms_channel,
    ticket_events,
)
from tests.integration.test_notify_instances import sent_events, sms_worker

pytestmark = pytest.mark.integration
OTHER_SITE = "another-site"


async def _contact_filed(svc: RunningService, request_id: str) -> None:
    store = svc.app.state.notify_store

    async def filed() -> Any:
        record = await store.contact_record(request_id)
        return record if record is not None and record.seen else None

    await eventually(filed)


async def test_an_event_naming_another_sites_ticket_changes_nothing_and_tells_nobody(
    settings: Settings, tmp_path: Path
) -> None:
    """A `ticket.completed` published for another site but naming this site's ticket and
    request (forged, or misrouted) neither moves the ticket — which would make its "your number
    is called" stale and drop it — nor tells its citizen "service completed". The ticket's own
    site's events still go as they should."""
    async with FakeGateway() as gw, notify_with(settings, tmp_path, [sms_channel(gw)]) as svc:
        req = request()
        issued, called, completed = ticket_events(req)
        await publish(settings, req)
        await publish(settings, issued)
        await gw.wait_for(1)
        forged = new_event(TicketCompleted(**completed.data.model_dump()), site=OTHER_SITE)
        worker = sms_worker(svc)
        with pytest.raises(Unprocessable, match="not of site"):
            await worker.on_ticket(forged)
        # The same, as a fresh ticket id of another site naming this site's request.
        fresh = forged.data.model_copy(update={"ticket_id": f"{req.data.request_id}-forged"})
        with pytest.raises(Unprocessable, match="not of site"):
            await worker.on_ticket(new_event(fresh, site=OTHER_SITE))
        ticket = await svc.app.state.notify_store.notices(issued.data.ticket_id)
        assert (ticket.site, ticket.status.value) == (SITE, "waiting")
        assert gw.count("/sms") == 1
        await publish(settings, called)
        found = await eventually(
            lambda: _all_settled(svc, issued.data.ticket_id, 2)  # type: ignore[arg-type]
        )
        assert sorted((d["template"], d["status"]) for d in found) == [
            ("ticket_called", "sent"),
            ("ticket_issued", "sent"),
        ]
        assert gw.count("/sms") == 2


async def _all_settled(svc: RunningService, ticket_id: str, n: int) -> list[dict[str, Any]] | None:
    found = await deliveries(svc, ticket_id=ticket_id)
    return found if len(found) == n and all(d["status"] != "sending" for d in found) else None


async def test_the_same_event_racing_into_two_instances_is_sent_once(
    settings: Settings, tmp_path: Path
) -> None:
    """A redelivery racing the first copy on the other instance: both handle `ticket.called` at
    the same moment while the gateway takes its time. One takes the claim with the ticket's
    write and sends; the other finds it held and comes back later (never sends); once the first
    has recorded it, both call the event a repeat. One message, one `notification.sent`."""
    async with FakeGateway() as gw:
        config = tmp_path / "notify.yaml"
        config.write_text(yaml.safe_dump({"channels": [sms_channel(gw)]}))
        two = settings.model_copy(update={"notify_config": config})
        async with AsyncExitStack() as stack:
            a, b = [await stack.enter_async_context(running("notify", two)) for _ in "ab"]
            req = request()
            issued, called, _ = ticket_events(req)
            await publish(settings, req)
            await publish(settings, issued)
            await gw.wait_for(1)
            await _contact_filed(a, req.data.request_id)
            await _contact_filed(b, req.data.request_id)
            gw.hang(1.0, n=1, path_prefix="/sms")  # the gateway takes a second to answer
            outcomes = await asyncio.gather(
                sms_worker(a).on_ticket(called),
                sms_worker(b).on_ticket(called),
                return_exceptions=True,
            )
            held = [o for o in outcomes if isinstance(o, RetryLater)]
            assert sorted(map(repr, outcomes)).count("False") == 1, outcomes
            assert len(held) == 1 and "is being sent" in str(held[0])
            for svc in (a, b):
                assert await sms_worker(svc).on_ticket(called) is True
            assert gw.count("/sms") == 2 and gw.duplicates("/sms") == 0
            (logged,) = [
                d
                for d in await deliveries(a, ticket_id=called.data.ticket_id)
                if d["template"] == "ticket_called"
            ]
            assert (logged["status"], logged["attempts"]) == ("sent", 1)

            async def two_sent() -> bool:
                return await sent_events(settings) == 2

            await eventually(two_sent)
            await asyncio.sleep(0.5)
            assert await sent_events(settings) == 2


async def test_a_ticket_event_writes_its_ticket_once_and_the_log_once(
    settings: Settings, tmp_path: Path
) -> None:
    """The shape, counted with PyMongo's command monitoring: a first handling of a ticket event
    with a message is one ticket write (status and claim together) and one log write after the
    send — no log write before it, no read."""
    async with FakeGateway() as gw, notify_with(settings, tmp_path, [sms_channel(gw)]) as svc:
        req = request()
        issued, _, completed = ticket_events(req)
        await publish(settings, req)
        await _contact_filed(svc, req.data.request_id)
        worker = sms_worker(svc)
        await worker.contacts.contact(req.data.request_id)  # known in memory, as it would be
        before = dict(STORE_COMMANDS.counts)
        assert await worker.on_ticket(issued) is False
        spent = {k: v - before.get(k, 0) for k, v in STORE_COMMANDS.counts.items()}
        # (The relay's poll for pending outboxes may run meanwhile: it only reads deliveries.)
        mine = {
            k: v
            for k, v in spent.items()
            if v and (k[1] in ("tickets", "contacts") or k[0] != "find")
        }
        assert mine == {
            ("findAndModify", "tickets"): 1,
            ("insert", "deliveries"): 1,
        }, spent
        assert gw.count("/sms") == 1
        # A late copy after the ticket moved on: nothing sent, a repeat.
        await worker.on_ticket(completed)
        assert await worker.on_ticket(issued) is True
        assert gw.count("/sms") == 2
