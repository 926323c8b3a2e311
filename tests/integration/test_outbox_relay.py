"""The outbox relay against the real store: what a write costs it, and nothing left behind."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from giliran.settings import Settings
from giliran.store import (
    STORE_COMMANDS,
    Document,
    OutboxRelay,
    connect,
    ensure_outbox_index,
    outbox_fields,
)
from tests.conftest import eventually, request_event

pytestmark = pytest.mark.integration


def _finds(collection: str) -> int:
    return STORE_COMMANDS.counts.get(("find", collection), 0)


async def test_a_write_costs_the_relay_one_read_and_a_backlog_beyond_a_batch_still_leaves(
    settings: Settings,
) -> None:
    client = connect(settings.mongo_url)
    name = f"relay_{secrets.token_hex(4)}"
    collection = client[settings.database_name("queue")][name]
    await ensure_outbox_index(collection)
    sent: list[str] = []

    async def publish(event: Document) -> None:
        sent.append(str(event["id"]))

    # Polls never come by themselves here: only wakes move events.
    relay = OutboxRelay([collection], publish, poll_seconds=60, batch=2)
    relay.start()
    try:
        await asyncio.sleep(0.2)  # the first drain at start: nothing there
        reads = _finds(name)
        event = request_event(["KTP-CETAK"])
        await collection.insert_one({"_id": "one", **outbox_fields([event])})
        relay.wake()
        await eventually(lambda: _sent(sent, 1), within=10)
        await asyncio.sleep(0.3)
        # One read found the document; none more to see the outbox empty.
        assert _finds(name) - reads == 1

        # Five documents, a batch of two: the relay goes on until all have left.
        events: list[Any] = [request_event(["KIA"]) for _ in range(5)]
        await collection.insert_many(
            [{"_id": f"d{n}", **outbox_fields([e])} for n, e in enumerate(events)]
        )
        relay.wake()
        await eventually(lambda: _sent(sent, 6), within=10)
        assert sorted(sent[1:]) == sorted(e.id for e in events)
        assert await collection.count_documents({"outbox_n": {"$gt": 0}}) == 0
    finally:
        await relay.stop()
        await client.drop_database(settings.database_name("queue"))
        await client.close()


async def _sent(sent: list[str], n: int) -> bool:
    return len(sent) >= n


async def test_a_wake_naming_its_collection_reads_only_that_one_and_the_poll_reads_all(
    settings: Settings,
) -> None:
    client = connect(settings.mongo_url)
    names = [f"relay_{secrets.token_hex(4)}" for _ in range(2)]
    written, other = (client[settings.database_name("queue")][n] for n in names)
    for collection in (written, other):
        await ensure_outbox_index(collection)
    sent: list[str] = []

    async def publish(event: Document) -> None:
        sent.append(str(event["id"]))

    relay = OutboxRelay([written, other], publish, poll_seconds=2.0)
    relay.start()
    try:
        await asyncio.sleep(0.3)  # the first drain at start reads both
        reads = (_finds(names[0]), _finds(names[1]))
        event = request_event(["KTP-CETAK"])
        await written.insert_one({"_id": "one", **outbox_fields([event])})
        relay.wake(written)
        await eventually(lambda: _sent(sent, 1), within=10)
        assert (_finds(names[0]) - reads[0], _finds(names[1]) - reads[1]) == (1, 0)

        # An event left in the other collection (another instance crashed before its relay
        # ran): nobody wakes for it, the poll finds it.
        stranded = request_event(["KIA"])
        await other.insert_one({"_id": "two", **outbox_fields([stranded])})
        await eventually(lambda: _sent(sent, 2), within=10)
        assert sent[1] == stranded.id
    finally:
        await relay.stop()
        await client.drop_database(settings.database_name("queue"))
        await client.close()


async def test_busy_wakes_of_one_outbox_starve_no_other_and_a_failing_one_holds_none_back(
    settings: Settings,
) -> None:
    client = connect(settings.mongo_url)
    names = [f"relay_{secrets.token_hex(4)}" for _ in range(3)]
    broken, busy, quiet = (client[settings.database_name("queue")][n] for n in names)
    for collection in (broken, busy, quiet):
        await ensure_outbox_index(collection)
    poisoned = request_event(["KIA"])
    sent: list[str] = []

    async def publish(event: Document) -> None:
        if event["id"] == poisoned.id:
            raise ConnectionError("this one never goes out")
        sent.append(str(event["id"]))

    relay = OutboxRelay([broken, busy, quiet], publish, poll_seconds=0.5)
    relay.start()
    try:
        await broken.insert_one({"_id": "poisoned", **outbox_fields([poisoned])})
        stranded = request_event(["KTP-CETAK"])
        await quiet.insert_one({"_id": "stranded", **outbox_fields([stranded])})
        # A write every 0.1 s to `busy`, each waking the relay for that outbox only.
        for n in range(30):
            await busy.insert_one({"_id": f"b{n}", **outbox_fields([request_event(["KIA"])])})
            relay.wake(busy)
            await asyncio.sleep(0.1)
            if stranded.id in sent:
                break
        assert stranded.id in sent, "an outbox nobody named waited behind a busy one"
        assert poisoned.id not in sent
    finally:
        await relay.stop()
        await client.drop_database(settings.database_name("queue"))
        await client.close()
