"""OutboxRelay.relay_now against the embedded store: the events a writer just put in a document's
outbox leave at once without the relay's query, stay there when publishing fails, and a drain
meeting the same document at the same moment never miscounts (ADR 0167)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from giliran.contracts import Event, NotificationSent, new_event, utcnow
from giliran.settings import Settings
from giliran.store import OUTBOX, OUTBOX_COUNT, Document, OutboxRelay, connect, with_outbox
from tests.conftest import eventually

pytestmark = pytest.mark.integration


def sent_event(n: int) -> Event[NotificationSent]:
    return new_event(
        NotificationSent(
            delivery_id=f"d{n}", cause_event_id=f"c{n}", cause_type="giliran.ticket.issued.v1",
            request_id="r", ticket_id="r-KIA", channel="console", template="ticket_issued",
            cost_units=0, sent_at=utcnow(),
        ),
        site="cikarang-utara",
    )  # fmt: skip


async def test_relay_now_publishes_what_was_written_and_leaves_it_when_publishing_fails(
    settings: Settings,
) -> None:
    client = connect(settings.mongo_url)
    collection = client[f"{settings.db_prefix}_relaynow"]["deliveries"]
    published: Counter[str] = Counter()
    failing = True

    async def publish(event: Document) -> None:
        if failing:
            raise ConnectionError("NATS is not connected")
        published[str(event["id"])] += 1

    relay = OutboxRelay([collection], publish)
    try:
        first, second = sent_event(1), sent_event(2)
        for key, event in (("d1", first), ("d2", second)):
            await collection.insert_one({"_id": key, "status": "sending"})
            await collection.update_one(
                {"_id": key},
                with_outbox({"$set": {"status": "sent"}}, [event]),
            )
        # NATS away: nothing published, nothing taken out; the relay's poll has it later.
        assert not await relay.relay_now(collection, "d1", [first])
        doc = await collection.find_one({"_id": "d1"})
        assert doc is not None and doc[OUTBOX_COUNT] == 1
        failing = False
        assert await relay.drain_once() == 2
        assert published == {first.id: 1, second.id: 1}

        # Written, then handed over at once: published and taken out, no drain needed.
        third = sent_event(3)
        await collection.insert_one({"_id": "d3", "status": "sending"})
        await collection.update_one(
            {"_id": "d3"},
            with_outbox({"$set": {"status": "sent"}}, [third]),
        )
        assert await relay.relay_now(collection, "d3", [third], remove_together=True)
        assert published[third.id] == 1  # at once

        async def taken_out() -> bool:  # a moment later, with whatever else was published
            doc = await collection.find_one({"_id": "d3"})
            return doc is not None and doc[OUTBOX_COUNT] == 0 and not doc.get(OUTBOX)

        await eventually(taken_out, within=5, interval=0.05)
        assert await relay.drain_once() == 0

        # A drain meeting the document while its removal is still pending leaves it: no second
        # publish (a copy to every plain-NATS subscriber, an audit attempt), and the removal
        # under way still takes it out.
        pending = sent_event(30)
        await collection.insert_one({"_id": "d30", "status": "sending"})
        await collection.update_one(
            {"_id": "d30"}, with_outbox({"$set": {"status": "sent"}}, [pending])
        )
        assert await relay.relay_now(collection, "d30", [pending], remove_together=True)
        doc = await collection.find_one({"_id": "d30"})
        assert doc is not None and doc[OUTBOX_COUNT] == 1  # not yet taken out
        assert await relay.drain_once() == 0
        assert published[pending.id] == 1

        async def d30_taken_out() -> bool:
            doc = await collection.find_one({"_id": "d30"})
            return doc is not None and doc[OUTBOX_COUNT] == 0

        await eventually(d30_taken_out, within=5, interval=0.05)
        assert published[pending.id] == 1

        # A drain meeting the same document at the same moment: at most a second publish of the
        # same id (the server drops it by Nats-Msg-Id), and the count never goes below zero.
        events = [sent_event(n) for n in range(4, 24)]
        for n, event in enumerate(events, start=4):
            await collection.insert_one({"_id": f"d{n}", "status": "sending"})
            await collection.update_one(
                {"_id": f"d{n}"},
                with_outbox({"$set": {"status": "sent"}}, [event]),
            )
        await asyncio.gather(
            relay.drain_once(),
            *(
                relay.relay_now(collection, f"d{n}", [e], remove_together=n % 2 == 0)
                for n, e in enumerate(events, start=4)
            ),
        )
        await relay.stop()  # takes out what relay_now published

        counts = [d[OUTBOX_COUNT] async for d in collection.find({}, {OUTBOX_COUNT: 1})]
        assert set(counts) == {0}
        assert all(published[e.id] >= 1 for e in events)
    finally:
        await client.drop_database(f"{settings.db_prefix}_relaynow")
        await client.close()


async def test_one_relay_publishes_each_event_once_whoever_meets_it(settings: Settings) -> None:
    """A drain, and a later write's hand-over whose outbox still holds an earlier event (its
    removal is a moment behind, `remove_together`), meet events this relay already published:
    they are not published again. JetStream would drop the copy, but every plain-NATS
    subscriber of the subject (boards, the queue's watch, tests recording ticket events in
    order) saw it twice: with the queue's tickets handed over, about one event in two."""
    client = connect(settings.mongo_url)
    collection = client[f"{settings.db_prefix}_relayonce"]["tickets"]
    published: list[str] = []

    async def publish(event: Document) -> None:
        await asyncio.sleep(0.001)
        published.append(str(event["id"]))

    relay = OutboxRelay([collection], publish)
    try:
        first, second = sent_event(1), sent_event(2)
        await collection.insert_one({"_id": "t1", "status": "waiting"})
        await collection.update_one({"_id": "t1"}, with_outbox({"$set": {}}, [first]))
        assert await relay.relay_now(collection, "t1", [first], remove_together=True)
        # The next write of the same document, before the first event is taken out.
        after = await collection.find_one_and_update(
            {"_id": "t1"},
            with_outbox({"$set": {"status": "called"}}, [second]),
            return_document=True,
        )
        assert after is not None and set(after[OUTBOX]) == {first.id, second.id}
        await asyncio.gather(
            relay.drain_once(),
            relay.relay_now(collection, "t1", [second], outbox=after[OUTBOX], remove_together=True),
        )
        assert published == [first.id, second.id]  # once each, in order
        # Many documents, a drain and their hand-overs at once: still once each.
        events = [sent_event(n) for n in range(3, 23)]
        for n, event in enumerate(events, start=3):
            await collection.insert_one({"_id": f"t{n}", "status": "waiting"})
            await collection.update_one({"_id": f"t{n}"}, with_outbox({"$set": {}}, [event]))
        await asyncio.gather(
            relay.drain_once(),
            *(
                relay.relay_now(collection, f"t{n}", [e], remove_together=n % 2 == 0)
                for n, e in enumerate(events, start=3)
            ),
        )
        await relay.stop()
        assert Counter(published) == Counter({e.id: 1 for e in [first, second, *events]})
        counts = [d[OUTBOX_COUNT] async for d in collection.find({}, {OUTBOX_COUNT: 1})]
        assert set(counts) == {0}
    finally:
        await client.drop_database(f"{settings.db_prefix}_relayonce")
        await client.close()
