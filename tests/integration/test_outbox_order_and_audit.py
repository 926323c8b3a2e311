"""relay_now against the embedded store (ADR 0182): an older event still pending in a document's
outbox leaves before the one just written, and an officer action's audit record is made once,
without reading the trail first, however a drain, a crash or a second instance meets the event."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pymongo import ReturnDocument

from giliran.auth import Principal, Role
from giliran.auth.audit import AuditLog
from giliran.contracts import Event, TicketRecalled, new_event, utcnow
from giliran.settings import Settings
from giliran.store import (
    OUTBOX,
    OUTBOX_COUNT,
    STORE_COMMANDS,
    Document,
    OutboxRelay,
    connect,
    with_outbox,
)

pytestmark = pytest.mark.integration
SITE = "cikarang-utara"
OFFICER = Principal("petugas", Role.OFFICER, SITE, "token")


START = utcnow()


def recalled(n: int) -> Event[TicketRecalled]:
    at = START + timedelta(seconds=n)  # the n-th recall, in its order
    return new_event(
        TicketRecalled(
            ticket_id="t1", request_id="r1", session_id=f"{SITE}:2026-12-06", service="KTP",
            number="KTP-001", issued_at=START, counter="loket-1", recalled_at=at,
        ),
        site=SITE,
        at=at,
    )  # fmt: skip


async def write(collection: object, doc_id: str, event: Event[TicketRecalled]) -> Document:
    """One conditional write that returns the document's whole outbox, as a service's would."""
    doc = await collection.find_one_and_update(  # type: ignore[attr-defined]
        {"_id": doc_id},
        with_outbox({"$set": {"recalled_at": event.time}}, [event]),
        projection={OUTBOX: 1},
        return_document=ReturnDocument.AFTER,
    )
    assert doc is not None
    return doc  # type: ignore[no-any-return]


async def test_an_older_pending_event_leaves_before_the_one_just_written(
    settings: Settings,
) -> None:
    client = connect(settings.mongo_url)
    db_name = f"{settings.db_prefix}_relayorder"
    collection = client[db_name]["tickets"]
    published: list[str] = []
    bus_up = False

    async def publish(event: Document) -> None:
        if not bus_up:
            raise ConnectionError("NATS is not connected")
        await asyncio.sleep(0)  # a real publish yields; the order must not depend on it
        published.append(str(event["id"]))

    relay = OutboxRelay([collection], publish)
    try:
        await collection.insert_one({"_id": "t1", OUTBOX: {}, OUTBOX_COUNT: 0})
        first = recalled(1)
        doc = await write(collection, "t1", first)
        # The bus is away for the first: it stays pending in the outbox.
        assert not await relay.relay_now(collection, "t1", [first], outbox=doc[OUTBOX])
        bus_up = True
        second = recalled(2)
        doc = await write(collection, "t1", second)
        assert set(doc[OUTBOX]) == {first.id, second.id}
        assert await relay.relay_now(collection, "t1", [second], outbox=doc[OUTBOX])
        # Handed only the new event, the old relay_now published it ahead of the pending one.
        assert published == [first.id, second.id]
        left = await collection.find_one({"_id": "t1"})
        assert left is not None and left[OUTBOX_COUNT] == 0 and not left[OUTBOX]

        # An outbox that does not hold the events written is a caller's mistake, said at once.
        third = recalled(3)
        with pytest.raises(ValueError, match="lacks the events written"):
            await relay.relay_now(collection, "t1", [third], outbox={})
    finally:
        await relay.stop()
        await client.drop_database(db_name)
        await client.close()


def audit_reads() -> int:
    return STORE_COMMANDS.counts.get(("find", "audit"), 0)


async def test_an_action_is_audited_once_without_reading_the_trail(settings: Settings) -> None:
    client = connect(settings.mongo_url)
    db_name = f"{settings.db_prefix}_relayaudit"
    collection = client[db_name]["tickets"]
    audit = AuditLog(client[db_name], "queue")
    await audit.ensure_indexes()
    published: list[str] = []

    async def publish(event: Document) -> None:
        published.append(str(event["id"]))

    relay = OutboxRelay([collection], publish, audit=audit.append_noted)
    try:
        await collection.insert_one({"_id": "t1", OUTBOX: {}, OUTBOX_COUNT: 0})
        await audit.record(OFFICER, "open", SITE, "counter:loket-1")  # the head is known
        reads = audit_reads()
        events = [recalled(n) for n in range(1, 6)]
        for event in events:
            with audit.acting(OFFICER, "recall", SITE, "ticket:t1"):
                doc = await write(collection, "t1", event)
            # A drain meeting the document at the same moment as the hand-over.
            await asyncio.gather(
                relay.relay_now(
                    collection, "t1", [event], outbox=doc[OUTBOX], remove_together=True
                ),
                relay.drain_once(),
            )
        # One find per action was the cost before (ADR 0182); the hand-over needs none, and a
        # drain meeting an event this process recorded needs none either.
        assert audit_reads() == reads
        await relay.stop()
        records = await audit.records.find({"action": "recall"}).to_list()
        assert sorted(r["event"] for r in records) == sorted(e.id for e in events)

        # A relay that crashed after recording, before taking the event out: the restarted
        # process (a new AuditLog, nothing remembered) meets it in a drain and asks the store.
        crashed = recalled(6)
        with audit.acting(OFFICER, "recall", SITE, "ticket:t1"):
            await write(collection, "t1", crashed)
        await audit.append_noted(
            {**(await collection.find_one({"_id": "t1"}))[OUTBOX][crashed.id]}, True
        )
        restarted = AuditLog(client[db_name], "queue")
        again = OutboxRelay([collection], publish, audit=restarted.append_noted)
        reads = audit_reads()
        assert await again.drain_once() == 1
        assert audit_reads() == reads + 1  # "is it recorded?": yes, so nothing appended
        assert await audit.records.count_documents({"event": crashed.id}) == 1

        # The next write's hand-over carries that older, already recorded entry as well if it
        # is still pending: it is not "fresh", so it is looked up, not recorded twice.
        pending = recalled(7)
        newest = recalled(8)
        with audit.acting(OFFICER, "recall", SITE, "ticket:t1"):
            await write(collection, "t1", pending)
        await restarted.append_noted(
            {**(await collection.find_one({"_id": "t1"}))[OUTBOX][pending.id]}, True
        )
        fresh_instance = AuditLog(client[db_name], "queue")
        third = OutboxRelay([collection], publish, audit=fresh_instance.append_noted)
        with audit.acting(OFFICER, "recall", SITE, "ticket:t1"):
            doc = await write(collection, "t1", newest)
        assert await third.relay_now(collection, "t1", [newest], outbox=doc[OUTBOX])
        for event in (pending, newest):
            assert await audit.records.count_documents({"event": event.id}) == 1
        assert published.index(pending.id) < published.index(newest.id)
        assert (await fresh_instance.verify()).broken is None
    finally:
        await client.drop_database(db_name)
        await client.close()
