"""Notify without inboxes (ADR 0185) and with "told" in memory (ADR 0186): the same event to two
instances, a kill -9 between a delivery's insert and its send, a late message after a restart or
on the other instance, and a "your turn is near" another instance already sent — each message is
sent once, and a stale one is dropped, whatever this process's memory holds."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from nats.js.errors import NotFoundError
from pymongo import AsyncMongoClient

from giliran.contracts import NotificationFailed, new_event, utcnow
from giliran.contracts.subjects import STREAM
from giliran.settings import Settings
from giliran.store import instant, with_outbox
from giliran_ops.embedded import free_port
from services.notify.domain import DeliveryStatus, delivery_id
from services.notify.handlers import ChannelWorker
from services.notify.store import Delivery
from tests.conftest import RunningService, eventually, nats_client, publish, running
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

pytestmark = pytest.mark.integration


def sms_worker(svc: RunningService) -> ChannelWorker:
    worker: ChannelWorker = next(w for w in svc.app.state.workers if w.channel.name == "sms")
    return worker


async def sent_events(settings: Settings) -> int:
    async with nats_client(settings) as client:
        info = await client.jetstream().stream_info(
            STREAM, subjects_filter="giliran.*.notification.sent"
        )
        return sum((info.state.subjects or {}).values())


async def test_the_same_event_to_two_instances_is_sent_once_and_each_says_it_is_a_repeat(
    settings: Settings, tmp_path: Path
) -> None:
    """Two notify instances on the same durable consumers, no inbox: the event comes twice on
    the bus (the consumers split the copies between the instances), and then once more straight
    into each instance's handler, as a redelivery after the ack wait would."""
    async with FakeGateway() as gw:
        config = tmp_path / "notify.yaml"
        config.write_text(yaml.safe_dump({"channels": [sms_channel(gw)]}))
        two = settings.model_copy(update={"notify_config": config})
        async with AsyncExitStack() as stack:
            instances = [await stack.enter_async_context(running("notify", two)) for _ in "ab"]
            req = request()
            issued, called, completed = ticket_events(req)
            for event in (req, issued, called, completed):
                await publish(settings, event, msg_id=f"{event.id}-first")
                await publish(settings, event, msg_id=f"{event.id}-again")
            await gw.wait_for(3)
            await eventually(lambda: _settled(instances[0], issued.data.ticket_id, 3))
            for svc in instances:
                worker = sms_worker(svc)
                for event in (issued, called, completed):
                    assert await worker.on_ticket(event) is True
            found = await deliveries(instances[1], ticket_id=issued.data.ticket_id)
            assert sorted(d["template"] for d in found) == [
                "ticket_called",
                "ticket_completed",
                "ticket_issued",
            ]
            assert all(d["status"] == "sent" and d["attempts"] == 1 for d in found)
            assert gw.count() == 3 and gw.duplicates() == 0

            async def three_sent() -> bool:
                return await sent_events(settings) == 3

            await eventually(three_sent)
            # No inbox written: the documents are the dedupe.
            db = instances[0].runtime.db
            for name in await db.list_collection_names():
                if name.startswith("inbox_"):
                    assert await db[name].count_documents({}) == 0, name


async def test_a_kill_between_the_insert_and_the_send_sends_the_message_after_the_restart(
    settings: Settings, tmp_path: Path
) -> None:
    """The message is claimed (held for its first attempt) by its ticket's write (ADR 0198), the
    gateway has the request but has not answered, and the process dies: after the restart the
    redelivered event finds it held, waits for the hold to lapse, and sends it — one accepted
    message, one `notification.sent`, the second attempt recorded."""
    async with FakeGateway() as gw:
        gw.hang(120, n=1, path_prefix="/sms")
        config = tmp_path / "notify.yaml"
        # A short hold: 64 messages at 100/s, a 1 s gateway timeout and the 10 s margin.
        channel = sms_channel(gw, rate_per_second=100, timeout_seconds=1)
        config.write_text(yaml.safe_dump({"channels": [channel]}))
        port = free_port()
        notify = await start_notify(settings, config, port)
        try:
            req = request()
            issued, _, _ = ticket_events(req)
            await publish(settings, req)
            await publish(settings, issued)

            async def on_the_wire() -> bool:  # received, not answered: inserted, not yet sent
                return gw.count("/sms") == 1

            await eventually(on_the_wire, within=20)
            notify.send_signal(signal.SIGKILL)
            await notify.wait()
            # (The hung request is never answered: the gateway never accepted the first try.)
            store = AsyncMongoClient[dict[str, Any]](settings.mongo_url)
            try:
                log = store[settings.database_name("notify")]["deliveries"]
                # Held, not settled: the claim sits in the ticket's document (ADR 0198), and the
                # log has nothing until the message is settled.
                ticket = await store[settings.database_name("notify")]["tickets"].find_one(
                    {"_id": issued.data.ticket_id}
                )
                assert ticket is not None
                (held,) = ticket["claims"].values()
                assert held["attempts"] == 1 and held["held_until"] > instant(utcnow())
                assert await log.count_documents({"ticket_id": issued.data.ticket_id}) == 0

                notify = await start_notify(settings, config, port)
                # The event again, as JetStream's redelivery after the ack wait brings it.
                await publish(settings, issued, msg_id=f"{issued.id}-redelivered")
                await gw.wait_for(1, within=60, path_prefix="/sms")

                async def recorded() -> dict[str, Any] | None:
                    found = await log.find_one({"ticket_id": issued.data.ticket_id})
                    return found if found and found["status"] == "sent" else None

                delivery = await eventually(recorded, within=30)
                assert delivery["attempts"] == 2

                async def one_sent() -> bool:
                    return await sent_events(settings) == 1

                await eventually(one_sent, within=30)
                await asyncio.sleep(1.0)  # the other copy of the event changes nothing
                assert len(gw.messages("/sms")) == 1
                assert await sent_events(settings) == 1
            finally:
                await store.close()
        finally:
            if notify.returncode is None:
                notify.send_signal(signal.SIGTERM)
                await notify.wait()


async def test_a_message_late_after_a_restart_or_on_the_other_instance_is_dropped(
    settings: Settings, tmp_path: Path
) -> None:
    """The ticket's projection is what decides staleness, not a process's memory: "your number
    is called" arriving after "completed" was handled by another process (a restarted one, or
    the other instance) is dropped."""
    async with FakeGateway() as gw:
        async with notify_with(settings, tmp_path, [sms_channel(gw)]) as first:
            req = request()
            issued, called, completed = ticket_events(req)
            for event in (req, issued, completed):
                await publish(settings, event)
            await gw.wait_for(2)
            await eventually(
                lambda: _settled(first, issued.data.ticket_id, 2)  # type: ignore[arg-type]
            )
        async with notify_with(settings, tmp_path, [sms_channel(gw)]) as restarted:
            await publish(settings, called)  # late, to a process that saw nothing of the ticket
            found = await eventually(lambda: _settled(restarted, issued.data.ticket_id, 3))
            late = next(d for d in found if d["template"] == "ticket_called")
            assert late["status"] == "dropped" and "stale" in late["last_error"]
            # The other instance: handed the same late event directly, it drops it too.
            req2 = request()
            issued2, called2, completed2 = ticket_events(req2)
            for event in (req2, issued2, completed2):
                await publish(settings, event)
            await eventually(lambda: _settled(restarted, issued2.data.ticket_id, 2))
            async with notify_with(settings, tmp_path, [sms_channel(gw)]) as other:
                assert await sms_worker(other).on_ticket(called2) is False
            found = await _settled(restarted, issued2.data.ticket_id, 3)
            assert found is not None
            assert next(d for d in found if d["template"] == "ticket_called")["status"] == "dropped"
        assert gw.count() == 4  # issued and completed, twice; no "called"


async def _settled(svc: RunningService, ticket_id: str, n: int) -> list[dict[str, Any]] | None:
    found = await deliveries(svc, ticket_id=ticket_id)
    return found if len(found) == n and all(d["status"] != "sending" for d in found) else None


async def test_your_turn_is_near_told_by_another_instance_is_not_told_again(
    settings: Settings, tmp_path: Path
) -> None:
    """K-004 comes near when K-001 is called (one instance tells it). K-002's call, handled by
    an instance that has not told it (the other instance, or this one after a restart), finds
    K-004 still in the window and not in its memory: the delivery's insert meets the one the
    first made, and nothing is sent again."""
    async with (
        FakeGateway() as gw,
        notify_with(settings, tmp_path, [sms_channel(gw)], approaching_ahead=2) as svc,
    ):
        tickets, _ = await _line_with_one_citizen_fourth(settings, gw)
        await publish(settings, tickets[0][1])  # K-001 called: K-004 is near
        told = await settled_approaching(svc, tickets[3][0].data.ticket_id)
        assert told["status"] == "sent"
        async with notify_with(settings, tmp_path, [sms_channel(gw)], approaching_ahead=2) as other:
            worker = sms_worker(other)
            assert tickets[3][0].data.ticket_id not in worker._told
            await worker.on_ticket(tickets[1][1])  # K-002 called, on the other instance
            assert tickets[3][0].data.ticket_id in worker._told  # learnt from the store
            await worker.on_ticket(tickets[2][1])  # K-003 called: K-004 is next, still told
        await publish(settings, tickets[1][1], msg_id=f"{tickets[1][1].id}-again")
        await asyncio.sleep(0.5)
        near = [
            d
            for d in await deliveries(svc, ticket_id=tickets[3][0].data.ticket_id)
            if d["template"] == "ticket_approaching"
        ]
        assert [(d["status"], d["attempts"]) for d in near] == [("sent", 1)]
        texts = [r.form["message"] for r in gw.received if "lagi sebelum" in r.form["message"]]
        assert len(texts) == 1


async def test_the_operators_retry_publishes_a_pending_failure_before_the_sent(
    settings: Settings, tmp_path: Path
) -> None:
    """A failed delivery whose `notification.failed` is still in its outbox (its own publish
    failed; the relay's poll has not moved it yet) is retried by the operator and sent: the
    `sent` write returns the whole outbox, and the failure goes out first (ADR 0182)."""
    async with FakeGateway() as gw, notify_with(settings, tmp_path, [sms_channel(gw)]) as svc:
        worker = sms_worker(svc)
        store = svc.app.state.notify_store
        req = request()
        issued, _, _ = ticket_events(req)
        await publish(settings, req)

        async def filed() -> Any:
            return await store.contact(req.data.request_id)

        await eventually(filed)
        contact = await worker.contacts.contact(req.data.request_id)
        recipient = worker.channel.recipient(contact)
        assert recipient is not None
        now = utcnow()
        failed = Delivery.model_validate(
            {
                "_id": delivery_id(issued.id, "sms", recipient.key),
                "site": SITE,
                "channel": "sms",
                "medium": "sms",
                "recipient": recipient.masked,
                "template": "ticket_issued",
                "status": DeliveryStatus.FAILED,
                "attempts": 3,
                "created_at": now,
                "cause_event_id": issued.id,
                "cause_type": issued.type,
                "request_id": req.data.request_id,
                "ticket_id": issued.data.ticket_id,
                "language": "id",
                "text": "Nomor antrean Anda K-001",
            }
        )
        failure = new_event(
            NotificationFailed(
                delivery_id=failed.id,
                cause_event_id=issued.id,
                cause_type=issued.type,
                request_id=req.data.request_id,
                ticket_id=issued.data.ticket_id,
                channel="sms",
                template="ticket_issued",
                reason="gateway unreachable",
                failed_at=now,
            ),
            site=SITE,
            source="notify",
            at=now,
        )
        assert await store.start(failed)
        await store.deliveries.update_one({"_id": failed.id}, with_outbox({}, [failure]))

        retried = await worker.retry_failed(failed.id)
        assert retried["status"] == "sent" and gw.count("/sms") == 1
        async with nats_client(settings) as client:
            js = client.jetstream()

            async def both() -> tuple[int, int] | None:
                try:
                    f = await js.get_last_msg(STREAM, f"giliran.{SITE}.notification.failed")
                    s = await js.get_last_msg(STREAM, f"giliran.{SITE}.notification.sent")
                except NotFoundError:
                    return None
                return f.seq, s.seq

            failed_seq, sent_seq = await eventually(both)
            assert failed_seq < sent_seq
