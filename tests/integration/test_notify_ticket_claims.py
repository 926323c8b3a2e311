"""A ticket's messages are claimed in its ticket's own write (ADR 0198), against real NATS, the real
embedded store and a real HTTP gateway: an event naming another site's ticket (or request) changes
nothing and tells nobody; the same event racing into two instances is sent once; a message whose
claim another attempt holds is not sent again; one event's write is the only ticket write."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymongo import AsyncMongoClient

from giliran.contracts import NotificationSent, TicketCompleted, new_event, utcnow
from giliran.errors import RetryLater, Unprocessable
from giliran.settings import Settings
from giliran.store import STORE_COMMANDS, connect, instant
from giliran_ops.embedded import free_port
from services.notify.contacts import ContactUnknown
from services.notify.domain import APPROACHING, Claim, DeliveryStatus, delivery_id
from services.notify.store import Delivery, DeliveryStore
from tests.conftest import RunningService, eventually, publish, running
from tests.fakes.gateway import FakeGateway
from tests.integration.test_notify_channels import (
    SITE,
    _line_with_one_citizen_fourth,
    deliveries,
    notify_with,
    request,
    settled_approaching,
    sms_channel,
    ticket_events,
)
from tests.integration.test_notify_crash import start_notify
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


async def test_a_near_message_left_claimed_by_a_crash_is_sent_once_when_its_call_comes_back(
    settings: Settings, tmp_path: Path
) -> None:
    """A process claimed "your turn is near" for K-004 in its ticket's document when K-001 was
    called, and died before the send (the claim's hold has lapsed; no log record). K-001's call
    comes back: it finds its own claim, takes it again and sends — once, as attempt 2. A claim
    left by another call (not this one) is that call's to finish: K-002's call sends nothing."""
    async with (
        FakeGateway() as gw,
        notify_with(settings, tmp_path, [sms_channel(gw)], approaching_ahead=2) as svc,
    ):
        tickets, told = await _line_with_one_citizen_fourth(settings, gw)
        store = svc.app.state.notify_store
        worker = sms_worker(svc)
        fourth = tickets[3][0].data.ticket_id
        await _contact_filed(svc, told.data.request_id)
        recipient = worker.channel.recipient(await worker.contacts.contact(told.data.request_id))
        assert recipient is not None
        first_call = tickets[0][1]
        key = delivery_id(f"approaching-{fourth}", "sms", recipient.key)
        now = utcnow()
        crashed = Claim(
            delivery_id=key,
            held_until=now - timedelta(seconds=1),
            attempts=1,
            claimed_at=now - timedelta(seconds=30),
            cause_event_id=first_call.id,
        )
        assert await store.claim_near(fourth, crashed)
        # Another call of the line finds it claimed by K-001's call: told, nothing sent.
        sent_before = gw.count("/sms")
        await worker.on_ticket(tickets[1][1])
        assert gw.count("/sms") == sent_before
        assert await deliveries(svc, ticket_id=fourth) == [
            d for d in await deliveries(svc, ticket_id=fourth) if d["template"] != APPROACHING
        ]
        # K-001's call again (its redelivery, as after the crash): sent once, attempt 2.
        await worker.on_ticket(first_call)
        near = await settled_approaching(svc, fourth)
        assert (near["status"], near["attempts"]) == ("sent", 2)
        await worker.on_ticket(first_call)  # and once more: nothing more
        texts = [r.form["message"] for r in gw.received if "lagi sebelum" in r.form["message"]]
        assert len(texts) == 1


async def test_a_record_is_one_insert_and_one_that_lost_to_a_drop_stays_dropped(
    settings: Settings,
) -> None:
    """The log's one write for each message, right after its send, against the real embedded
    store: a new record is inserted with its event; one whose delivery was dropped meanwhile (a
    redelivery found its ticket had moved on, and the claim lapsed, while it was on the wire)
    stays dropped and announces nothing."""
    client = connect(settings.mongo_url)
    store = DeliveryStore(client[f"{settings.db_prefix}_notifyrecords"])
    try:
        now = utcnow()

        def record(key: str, status: DeliveryStatus) -> Delivery:
            return Delivery.model_validate(
                {
                    "_id": key,
                    "site": SITE,
                    "channel": "sms",
                    "template": "ticket_called",
                    "status": status,
                    "attempts": 1,
                    "created_at": now,
                    "cause_event_id": "e1",
                    "cause_type": "giliran.ticket.called.v1",
                    "ticket_id": key,
                }
            )

        assert await store.start(record("dropped-one", DeliveryStatus.DROPPED))
        facts = {
            "cause_event_id": "e1", "cause_type": "giliran.ticket.called.v1",
            "request_id": "r1", "channel": "sms", "template": "ticket_called",
        }  # fmt: skip
        events = [
            new_event(
                NotificationSent(
                    **facts, delivery_id=key, ticket_id=key, cost_units=1, sent_at=now
                ),
                site=SITE,
                source="notify",
                at=now,
            )
            for key in ("new-one", "dropped-one", "new-two")
        ]
        outcomes = [
            await store.record(record(key, DeliveryStatus.SENT), {"sent_at": "x"}, [event])
            for key, event in zip(("new-one", "dropped-one", "new-two"), events, strict=True)
        ]
        assert outcomes == [(True, None), (False, None), (True, None)]
        docs = {d["_id"]: d for d in await store.deliveries.find({}).to_list()}
        assert docs["dropped-one"]["status"] == "dropped" and not docs["dropped-one"].get("outbox")
        assert docs["new-one"]["status"] == docs["new-two"]["status"] == "sent"
        assert set(docs["new-two"]["outbox"]) == {events[2].id}
    finally:
        await client.drop_database(f"{settings.db_prefix}_notifyrecords")
        await client.close()


async def test_a_kill_between_the_near_claim_and_its_record_sends_it_once_after_the_restart(
    settings: Settings, tmp_path: Path
) -> None:
    """A real notify process claims "your turn is near" for K-004 when K-001 is called, the
    gateway has the message but has not answered, and the process is killed -9: the claim is
    held in K-004's document (naming K-001's call) and the log has nothing. After the restart
    K-001's call comes back (JetStream's redelivery): once the hold lapsed the message is sent,
    once, as attempt 2, with one `notification.sent`."""
    async with FakeGateway() as gw:
        config = tmp_path / "notify.yaml"
        # A short hold: 64 messages at 100/s, a 1 s gateway timeout and the 10 s margin.
        channel = sms_channel(gw, rate_per_second=100, timeout_seconds=1)
        config.write_text(yaml.safe_dump({"channels": [channel], "approaching_ahead": 2}))
        port = free_port()
        notify = await start_notify(settings, config, port)
        try:
            tickets, _ = await _line_with_one_citizen_fourth(settings, gw)  # K-004's "issued"
            fourth = tickets[3][0].data.ticket_id
            first_call = tickets[0][1]
            gw.hang(120, n=1, path_prefix="/sms")
            await publish(settings, first_call)  # K-001 called: K-004 is near, its text hangs

            async def on_the_wire() -> bool:
                return gw.count("/sms") == 2

            await eventually(on_the_wire, within=20)
            notify.send_signal(signal.SIGKILL)
            await notify.wait()
            mongo = AsyncMongoClient[dict[str, Any]](settings.mongo_url)
            try:
                db = mongo[settings.database_name("notify")]
                ticket = await db["tickets"].find_one({"_id": fourth})
                assert ticket is not None
                (held,) = [
                    c for c in ticket["claims"].values() if "approaching" in c["delivery_id"]
                ]
                assert (held["attempts"], held["cause_event_id"]) == (1, first_call.id)
                assert held["held_until"] > instant(utcnow())
                assert await db["deliveries"].count_documents({"template": APPROACHING}) == 0

                notify = await start_notify(settings, config, port)
                before = await sent_events(settings)
                await publish(settings, first_call, msg_id=f"{first_call.id}-redelivered")
                # (The hung request is never answered: only the issued text and the resend count.)
                await gw.wait_for(2, within=60, path_prefix="/sms")

                async def recorded() -> dict[str, Any] | None:
                    found = await db["deliveries"].find_one({"template": APPROACHING})
                    return found if found and found["status"] == "sent" else None

                near = await eventually(recorded, within=30)
                assert (near["ticket_id"], near["attempts"]) == (fourth, 2)

                async def one_more_sent() -> bool:
                    return await sent_events(settings) == before + 1

                await eventually(one_more_sent, within=30)
                await asyncio.sleep(1.0)
                accepted = [r for r in gw.received if r.status == 200]
                assert len([r for r in accepted if "lagi sebelum" in r.form["message"]]) == 1
                assert gw.duplicates("/sms") == 0
            finally:
                await mongo.close()
        finally:
            if notify.returncode is None:
                notify.send_signal(signal.SIGTERM)
                await notify.wait()


async def test_a_near_message_that_failed_for_now_is_sent_when_the_calls_own_was_refused(
    settings: Settings, tmp_path: Path
) -> None:
    """K-001 is called: the gateway refuses its "your number is called" for good (HTTP 400) and
    fails K-004's "your turn is near" for now (503). The call must come back for K-004 (only
    its redelivery resumes a message handed to the log), not be dead-lettered for K-001's
    refusal: K-004 is told once, K-001's message stays failed (refused) and is not sent again,
    and the next call of the line tells K-004 nothing more. (Before, the call was dead-lettered
    and K-004's message stayed `sending` for ever, never sent.)"""
    async with (
        FakeGateway() as gw,
        notify_with(settings, tmp_path, [sms_channel(gw)], approaching_ahead=2) as svc,
    ):
        first, quiet, told = request(), request(consent=False), request()
        for req in (first, quiet, told):
            await publish(settings, req)
        tickets = [
            ticket_events(first, 1, ahead=0),
            ticket_events(quiet, 2, ahead=1),
            ticket_events(quiet, 3, ahead=2),
            ticket_events(told, 4, ahead=3),
        ]
        for issued, _, _ in tickets:
            await publish(settings, issued)
        await gw.wait_for(2)  # K-001's and K-004's "issued"
        gw.fail_next(1, status=400, path_prefix="/sms")  # K-001's "called": refused
        gw.fail_next(1, status=503, path_prefix="/sms")  # K-004's "near": for now
        called = tickets[0][1]
        await publish(settings, called)  # through the real consumer, its retries and dead letters

        fourth = tickets[3][0].data.ticket_id
        near = await settled_approaching(svc, fourth)
        assert (near["status"], near["attempts"]) == ("sent", 2)
        (own,) = [
            d
            for d in await deliveries(svc, ticket_id=called.data.ticket_id)
            if d["template"] == "ticket_called"
        ]
        assert (own["status"], own["refused"]) == ("failed", True)
        await publish(settings, tickets[1][1])  # K-002 called: K-004 was told already
        await eventually(lambda: _status_is(svc, tickets[1][1].data.ticket_id, "called"))
        await asyncio.sleep(1.0)
        answers = [(r.status, r.ref) for r in gw.received]
        assert [status for status, _ in answers] == [200, 200, 400, 503, 200], answers
        near_texts = [r for r in gw.received if "lagi sebelum" in r.form["message"]]
        assert [r.status for r in near_texts] == [503, 200]
        assert len([r for r in gw.received if r.ref and r.ref.startswith(called.id)]) == 1


async def _status_is(svc: RunningService, ticket_id: str, status: str) -> bool:
    found = await svc.app.state.notify_store.ticket_status(ticket_id)
    return found is not None and found.value == status


async def test_a_call_whose_near_messages_outlast_its_hold_sends_each_message_once(
    settings: Settings, tmp_path: Path
) -> None:
    """A slow gateway (every answer just within its timeout) and five tickets brought near by
    one call: the call's messages take longer than one attempt's hold. Its redelivery once that
    hold ran out (JetStream's ack wait, or the other instance's copy) must not send "your
    number is called" again, nor any "near" message: each message is logged right after its
    own send, and claimed just before it, so every hold covers its message until its record.
    (Before, the call's own message was logged only after the whole batch: the redelivery found
    its claim lapsed and nothing in the log, and sent it a second time.)"""
    async with FakeGateway() as gw:
        channel = sms_channel(gw, timeout_seconds=3)
        async with notify_with(settings, tmp_path, [channel], approaching_ahead=5) as svc:
            reqs = [request() for _ in range(6)]
            for req in reqs:
                await publish(settings, req)
            tickets = [ticket_events(reqs[0], 1, ahead=0)] + [
                ticket_events(reqs[n], n + 1, ahead=20) for n in range(1, 6)
            ]
            for issued, _, _ in tickets:
                await publish(settings, issued)
            await gw.wait_for(6)
            worker = sms_worker(svc)
            called = tickets[0][1]
            gw.hang(2.9, n=6, path_prefix="/sms")  # six sends of 2.9 s: more than one hold
            first = asyncio.create_task(worker.on_ticket(called))
            await asyncio.sleep(worker._hold_seconds() + 0.5)
            # The redelivery, while the first handling still sends the later "near" messages:
            # whatever it finds in hand it waits for (RetryLater), the rest it may send.
            with contextlib.suppress(RetryLater):
                await worker.on_ticket(called)
            await first
            with contextlib.suppress(RetryLater):  # and once more, after all was settled
                await worker.on_ticket(called)
            refs = [r.ref for r in gw.received if r.status == 200 and r.ref]
            own = [ref for ref in refs if ref.startswith(called.id)]
            near = [ref for ref in refs if ref.startswith("approaching-")]
            assert len(own) == 1, own
            assert len(near) == len(set(near)) == 5, near
            assert gw.duplicates("/sms") == 0


async def test_a_forged_ticket_in_the_line_neither_strands_nor_delays_a_near_message(
    settings: Settings, tmp_path: Path
) -> None:
    """A forged `ticket.issued` of this site names another site's request (and came before that
    request was seen, so notify keeps it in the line). Calling K-001 brings K-003 (a citizen who
    consented) and the forged K-004 near the front: K-003's "near" fails for now (503), K-004's
    request is another site's. The call must come back for K-003 rather than be dead-lettered
    for K-004: K-003 is told once, the other site's citizen never. (Before, the error for K-004
    dead-lettered the call with K-003's message handed to the log, `sending` for ever.)"""
    async with (
        FakeGateway() as gw,
        notify_with(settings, tmp_path, [sms_channel(gw)], approaching_ahead=3) as svc,
    ):
        quiet, told, elsewhere = request(consent=False), request(), request()
        for req in (quiet, told):
            await publish(settings, req)
        tickets = [
            ticket_events(quiet, 1, ahead=0),
            ticket_events(quiet, 2, ahead=1),
            ticket_events(told, 3, ahead=4),
        ]
        for issued, _, _ in tickets:
            await publish(settings, issued)
        await gw.wait_for(1)  # K-003's "issued"
        worker = sms_worker(svc)
        forged, _, _ = ticket_events(elsewhere, 4, ahead=5)
        with pytest.raises(ContactUnknown):  # its request not seen yet: kept in the line
            await worker.on_ticket(forged)
        await publish(settings, new_event(elsewhere.data, site=OTHER_SITE))
        await _contact_filed(svc, elsewhere.data.request_id)
        gw.fail_next(1, status=503, path_prefix="/sms")  # K-003's "near": for now
        await publish(settings, tickets[0][1])  # K-001 called (no message of its own)

        third = tickets[2][0].data.ticket_id
        near = await settled_approaching(svc, third)
        assert (near["status"], near["attempts"]) == ("sent", 2)
        await asyncio.sleep(1.0)
        assert [r.status for r in gw.received] == [200, 503, 200]
        assert not [r for r in gw.received if forged.data.ticket_id in (r.ref or "")]
        assert await deliveries(svc, ticket_id=forged.data.ticket_id) == []
