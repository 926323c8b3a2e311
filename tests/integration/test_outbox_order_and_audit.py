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

        # An outbox that does not hold the events written (say, the document as it was before
        # the write) is a caller's mistake: nothing is published out of order, the drain has it.
        third = recalled(3)
        doc = await write(collection, "t1", third)
        assert not await relay.relay_now(collection, "t1", [third], outbox={})
        assert published == [first.id, second.id]
        assert await relay.drain_once() == 1
        assert published == [first.id, second.id, third.id]
    finally:
        await relay.stop()
        await client.drop_database(db_name)
        await client.close()


def audit_commands(kind: str | None = None) -> int:
    return sum(
        n
        for (command, collection), n in STORE_COMMANDS.counts.items()
        if collection == "audit" and kind in (None, command)
    )


def noted(doc: Document, event: Event[TicketRecalled]) -> Document:
    """The outbox entry of `event` as a relay meets it (its audit note included)."""
    return dict(doc[OUTBOX][event.id])


async def test_an_action_is_audited_once_without_reading_the_trail(settings: Settings) -> None:
    client = connect(settings.mongo_url)
    db_name = f"{settings.db_prefix}_relayaudit"
    collection = client[db_name]["tickets"]
    audit = AuditLog(client[db_name], "queue")
    await audit.ensure_indexes()
    published: list[str] = []

    async def publish(event: Document) -> None:
        published.append(str(event["id"]))

    async def records_of(event: Event[TicketRecalled]) -> int:
        return await audit.records.count_documents({"event": event.id})

    relay = OutboxRelay([collection], publish, audit=audit.append_noted)
    try:
        await collection.insert_one({"_id": "t1", OUTBOX: {}, OUTBOX_COUNT: 0})
        await audit.record(OFFICER, "open", SITE, "counter:loket-1")  # the head is known
        before, reads_before = audit_commands(), audit_commands("find")
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
        await relay.stop()  # the records are appended as the events are taken out (ADR 0210)
        # At most one insert per action and nothing else: no read of the trail first (there
        # was one per action before, ADR 0182), and no second try when the drain met it too.
        # (Fewer when records taken out together go in one insert.)
        assert audit_commands("find") == reads_before
        assert 1 <= audit_commands() - before <= len(events)
        for event in events:
            assert await records_of(event) == 1

        # Another instance's drain recorded an event before this process hands it over (or a
        # reply was lost after the store applied the insert): the store refuses the second.
        for n in (6, 7):
            raced = recalled(n)
            with audit.acting(OFFICER, "recall", SITE, "ticket:t1"):
                doc = await write(collection, "t1", raced)
            other = AuditLog(client[db_name], "queue")  # the other instance, or amnesia
            await other.append_noted([noted(doc, raced)])
            assert await relay.relay_now(collection, "t1", [raced], outbox=doc[OUTBOX])
            assert await records_of(raced) == 1

        # A relay that crashed after recording, before taking the event out: the restarted
        # process (nothing remembered) meets it in a drain; still one record.
        crashed = recalled(8)
        with audit.acting(OFFICER, "recall", SITE, "ticket:t1"):
            doc = await write(collection, "t1", crashed)
        await audit.append_noted([noted(doc, crashed)])
        restarted = AuditLog(client[db_name], "queue")
        again = OutboxRelay([collection], publish, audit=restarted.append_noted)
        assert await again.drain_once() == 1
        assert await records_of(crashed) == 1
        # Two instances appending at once never break the chain, and each event is there once.
        racing = [recalled(n) for n in range(9, 19)]
        entries = []
        for event in racing:
            with audit.acting(OFFICER, "recall", SITE, "ticket:t1"):
                entries.append(noted(await write(collection, "t1", event), event))
        first, second = AuditLog(client[db_name], "queue"), AuditLog(client[db_name], "queue")
        await asyncio.gather(
            *(log.append_noted([entry]) for entry in entries for log in (first, second))
        )
        for event in racing:
            assert await records_of(event) == 1
        assert (await first.verify()).broken is None
    finally:
        await client.drop_database(db_name)
        await client.close()


async def test_records_taken_out_together_go_in_one_insert_and_the_chain_holds(
    settings: Settings,
) -> None:
    """ADR 0210: a batch of audit notes is one insert, in order; an event another instance
    recorded mid-batch and a number another process took mid-batch cost a retry of the rest,
    never a second record or a broken chain."""
    client = connect(settings.mongo_url)
    db_name = f"{settings.db_prefix}_auditbatch"
    collection = client[db_name]["tickets"]
    audit = AuditLog(client[db_name], "queue")
    await audit.ensure_indexes()
    try:
        await collection.insert_one({"_id": "t1", OUTBOX: {}, OUTBOX_COUNT: 0})
        await audit.record(OFFICER, "open", SITE, "counter:loket-1")  # the head is known

        async def noted_batch(numbers: range) -> list[Document]:
            entries = []
            for n in numbers:
                event = recalled(n)
                with audit.acting(OFFICER, "recall", SITE, "ticket:t1"):
                    entries.append(noted(await write(collection, "t1", event), event))
            return entries

        batch = await noted_batch(range(1, 9))
        inserts = audit_commands("insert")
        await audit.append_noted(batch)
        assert audit_commands("insert") - inserts == 1
        found = await audit.read(limit=100)
        assert [r["event"] for r in found[1:]] == [str(e["id"]) for e in batch]

        # Another instance recorded the 13th before us (its drain met it first), and another
        # process appended a record of its own after our head: both are refused once each and
        # the rest of the batch goes on.
        batch = await noted_batch(range(10, 17))
        other = AuditLog(client[db_name], "queue")
        await other.append_noted([batch[3]])
        await other.record(OFFICER, "pause", SITE, "counter:loket-2")
        await audit.append_noted(batch + batch[:2])  # repeats within a batch are one record
        for entry in batch:
            assert await audit.records.count_documents({"event": entry["id"]}) == 1
        verdict = await audit.verify()
        assert verdict.broken is None and verdict.checked == 1 + 8 + 1 + 7
    finally:
        await client.drop_database(db_name)
        await client.close()


async def test_an_event_leaves_its_outbox_only_once_its_record_is_written(
    settings: Settings,
) -> None:
    """Published first, taken out after its record (ADR 0210): a relay that dies in between, or
    whose trail refuses the record, leaves the event and its note in the outbox; the next drain
    records it and takes it out. Never an event gone from its outbox without its record."""
    client = connect(settings.mongo_url)
    db_name = f"{settings.db_prefix}_auditleave"
    collection = client[db_name]["tickets"]
    audit = AuditLog(client[db_name], "queue")
    await audit.ensure_indexes()
    published: list[str] = []

    async def publish(event: Document) -> None:
        assert "audit" not in event  # who acted never travels on the bus
        published.append(str(event["id"]))

    async def records_of(event: Event[TicketRecalled]) -> int:
        return await audit.records.count_documents({"event": event.id})

    async def pending() -> dict[str, Document]:
        doc = await collection.find_one({"_id": "t1"})
        assert doc is not None
        return dict(doc[OUTBOX])

    try:
        await collection.insert_one({"_id": "t1", OUTBOX: {}, OUTBOX_COUNT: 0})
        # The relay dies after publishing, before its removal ran (the removal waits a moment).
        dying = OutboxRelay([collection], publish, audit=audit.append_noted)
        first = recalled(1)
        with audit.acting(OFFICER, "recall", SITE, "ticket:t1"):
            doc = await write(collection, "t1", first)
        assert await dying.relay_now(
            collection, "t1", [first], outbox=doc[OUTBOX], remove_together=True
        )
        assert dying._removing is not None
        dying._removing.cancel()  # the process is gone
        assert published == [first.id]
        assert await records_of(first) == 0
        assert "audit" in (await pending())[first.id]

        # The trail refuses records: the drain publishes again, keeps the event and says so.
        async def refused(events: object) -> None:
            raise ConnectionError("the auth database is unreachable")

        restarted = OutboxRelay([collection], publish, audit=refused)
        with pytest.raises(ConnectionError):
            await restarted.drain_once()
        assert await records_of(first) == 0
        assert first.id in await pending()

        # The hand-over's own removal meets the refusing trail too, whether it takes the events
        # out together a moment later (the queue's way) or at once: both stay, notes and all.
        refusing = OutboxRelay([collection], publish, audit=refused)
        later, now = recalled(2), recalled(3)
        with audit.acting(OFFICER, "recall", SITE, "ticket:t1"):
            doc = await write(collection, "t1", later)
        assert await refusing.relay_now(
            collection, "t1", [later], outbox=doc[OUTBOX], remove_together=True
        )
        assert refusing._removing is not None
        await refusing._removing
        with audit.acting(OFFICER, "recall", SITE, "ticket:t1"):
            doc = await write(collection, "t1", now)
        assert await refusing.relay_now(collection, "t1", [now], outbox=doc[OUTBOX])
        left = await pending()
        assert {first.id, later.id, now.id} <= set(left)
        assert all("audit" in left[e.id] for e in (first, later, now))

        # Once the trail answers, the next drain records them and takes them out: one record
        # each.
        healed = OutboxRelay(
            [collection], publish, audit=AuditLog(client[db_name], "queue").append_noted
        )
        assert await healed.drain_once() == 3
        for event in (first, later, now):
            assert await records_of(event) == 1
        assert await pending() == {}
        assert (await audit.verify()).broken is None
    finally:
        await client.drop_database(db_name)
        await client.close()
