"""The inbox read and written once per fetched batch (ADR 0080), against a real nats-server and the
embedded store: every event handled once, duplicates within and across batches skipped, a failed
inbox write redelivers rather than loses."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from giliran.bus import ConsumerMetrics, EventConsumer, ensure_streams
from giliran.contracts import Event, RequestSubmitted
from giliran.settings import Settings
from giliran.store import Inbox, connect
from tests.conftest import eventually, nats_client, publish, request_event

pytestmark = pytest.mark.integration


async def test_record_many_keeps_ids_already_there_and_seen_many_finds_exactly_them(
    settings: Settings,
) -> None:
    client = connect(settings.mongo_url)
    try:
        inbox = Inbox(client[f"{settings.db_prefix}_inboxtest"], "test-consumer")
        events = [request_event(["KIA"]) for _ in range(6)]
        await inbox.record_many(events[:3])
        await inbox.record_many(events[1:5])  # two of these are there already
        assert await inbox.seen_many([e.id for e in events]) == {e.id for e in events[:5]}
        assert not await inbox.seen(events[5].id)
    finally:
        await client.close()


async def test_each_event_handled_once_across_batches_copies_and_a_failed_inbox_write(
    settings: Settings,
) -> None:
    client = connect(settings.mongo_url)
    calls: Counter[str] = Counter()
    inbox = FlakyInbox(client[f"{settings.db_prefix}_inboxtest"], "test-batches")
    await inbox.ensure_indexes()

    async def handler(event: Event[Any]) -> None:
        calls[event.id] += 1

    consumer = EventConsumer(
        service="test",
        durable="test-batches",
        subject="giliran.*.request.submitted",
        handlers={RequestSubmitted: handler},
        inbox=inbox,
        metrics=ConsumerMetrics.create(CollectorRegistry()),
        backoff_seconds=(0.1, 0.1),
    )
    events = [request_event(["KIA"]) for _ in range(150)]
    first, paired, rest = events[:64], events[64:94], events[94:]
    try:
        async with nats_client(settings) as nc:
            await ensure_streams(nc.jetstream())
        # The first fetch (64 messages) is `first`; its inbox write fails, so it must come back.
        for event in first:
            await publish(settings, event)
        # Then each of `paired` twice in a row under two Nats-Msg-Ids (JetStream keeps both):
        # the copy lands in the same fetched batch as the original.
        for event in paired:
            await publish(settings, event)
            await publish(settings, event, msg_id=f"{event.id}-again")
        for event in rest:
            await publish(settings, event)
        for event in first[:10] + rest[:10]:  # copies arriving in a later batch
            await publish(settings, event, msg_id=f"{event.id}-late")
        inbox.fail_next = 1
        async with nats_client(settings) as nc:
            await consumer.start(nc.jetstream())

            async def all_recorded() -> bool:
                return len(await inbox.seen_many([e.id for e in events])) == len(events)

            await eventually(all_recorded, within=30)
            await asyncio.sleep(0.5)  # a late copy would be handled by now
            await consumer.stop()
        assert inbox.failed == 1
        # Handled twice: only the batch whose inbox write failed (redelivered; the handlers are
        # idempotent). Every other event once, its copies skipped.
        assert {e.id: calls[e.id] for e in first} == {e.id: 2 for e in first}
        assert {e.id: calls[e.id] for e in paired + rest} == {e.id: 1 for e in paired + rest}
    finally:
        await consumer.stop()
        await client.close()


async def test_a_failed_inbox_read_redelivers_the_batch_and_the_consumer_keeps_pulling(
    settings: Settings,
) -> None:
    client = connect(settings.mongo_url)
    calls: Counter[str] = Counter()
    inbox = FlakyInbox(client[f"{settings.db_prefix}_inboxtest"], "test-reads")
    await inbox.ensure_indexes()

    async def handler(event: Event[Any]) -> None:
        calls[event.id] += 1

    consumer = EventConsumer(
        service="test",
        durable="test-reads",
        subject="giliran.*.request.submitted",
        handlers={RequestSubmitted: handler},
        inbox=inbox,
        metrics=ConsumerMetrics.create(CollectorRegistry()),
        backoff_seconds=(0.1, 0.1),
    )
    events = [request_event(["KIA"]) for _ in range(100)]
    try:
        async with nats_client(settings) as nc:
            await ensure_streams(nc.jetstream())
        for event in events:
            await publish(settings, event)
        inbox.fail_reads = 1  # the store is away when the first batch is checked
        async with nats_client(settings) as nc:
            await consumer.start(nc.jetstream())

            plain = Inbox(client[f"{settings.db_prefix}_inboxtest"], "test-reads")

            async def all_recorded() -> bool:
                return len(await plain.seen_many([e.id for e in events])) == len(events)

            await eventually(all_recorded, within=30)
            await consumer.stop()
        assert inbox.reads_failed == 1
        assert calls == Counter({e.id: 1 for e in events})  # nothing ran before the failed read
    finally:
        await consumer.stop()
        await client.close()


class FlakyInbox(Inbox):
    """A real inbox whose next `fail_next` batch writes (`fail_reads` batch reads) fail, as
    when the store goes away."""

    fail_next = 0
    failed = 0
    fail_reads = 0
    reads_failed = 0

    async def seen_many(self, event_ids: Any) -> set[str]:
        if self.fail_reads > 0:
            self.fail_reads -= 1
            self.reads_failed += 1
            raise ConnectionError("store away")
        return await super().seen_many(event_ids)

    async def record_many(self, events: Any) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            self.failed += 1
            raise ConnectionError("store away")
        await super().record_many(events)
