"""EventConsumer with a batch handler (ADR 0170), against a real nats-server: the batch is folded
in one call with no inbox; the duplicates it names are counted as such; a batch that fails is
handled event by event, so one poisoned event is dead-lettered and the others still land; a
forged event (body disagreeing with its subject) never reaches the batch handler."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from giliran.bus import ConsumerMetrics, EventConsumer, ensure_streams
from giliran.contracts import Event, RequestSubmitted
from giliran.settings import Settings
from giliran.store import Inbox, connect
from tests.conftest import (
    eventually,
    nats_client,
    publish,
    publish_many,
    request_event,
    running,
)

pytestmark = pytest.mark.integration


class NoInbox(Inbox):
    """An inbox that fails the test if the consumer touches it."""

    async def seen_many(self, event_ids: Any) -> set[str]:
        raise AssertionError("a batch-handling consumer read the inbox")

    async def record_many(self, events: Any) -> None:
        raise AssertionError("a batch-handling consumer wrote the inbox")


def _outcomes(metrics: ConsumerMetrics) -> Counter[str]:
    found: Counter[str] = Counter()
    for metric in metrics.handled.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                found[sample.labels["outcome"]] += int(sample.value)
    return found


async def test_batches_folded_whole_duplicates_named_and_a_poisoned_event_isolated(
    settings: Settings,
) -> None:
    client = connect(settings.mongo_url)
    folded: Counter[str] = Counter()
    batch_sizes: list[int] = []
    events = [request_event(["KIA"]) for _ in range(40)]
    poisoned = events[25].id
    seen_before = {events[3].id}  # as if the handler's documents had folded it already

    async def fold(batch: Sequence[Event[Any]]) -> set[str]:
        batch_sizes.append(len(batch))
        if any(e.id == poisoned for e in batch):
            raise ValueError("cannot fold this one")
        for e in batch:
            folded[e.id] += 1
        return {e.id for e in batch} & seen_before

    async def one(event: Event[Any]) -> set[str]:
        return await fold([event])

    metrics = ConsumerMetrics.create(CollectorRegistry())
    consumer = EventConsumer(
        service="test",
        durable="test-folding",
        subject="giliran.*.request.submitted",
        handlers={RequestSubmitted: one},
        inbox=NoInbox(client[f"{settings.db_prefix}_inboxtest"], "test-folding"),
        metrics=metrics,
        max_deliver=2,
        backoff_seconds=(0.1, 0.1),
        batch_handler=fold,
        linger_seconds=0.2,
    )
    try:
        async with nats_client(settings) as nc:
            await ensure_streams(nc.jetstream())
        for event in events:
            await publish(settings, event)
        await publish(settings, events[7], msg_id=f"{events[7].id}-again")  # same batch copy
        # A forged event: its body names another site than the subject it is sent on.
        forged = request_event(["KIA"], site="botram-setu")
        async with nats_client(settings) as nc:
            await nc.jetstream().publish(
                "giliran.cikarang-utara.request.submitted",
                json.dumps(forged.to_json_dict()).encode(),
                headers={"Nats-Msg-Id": forged.id},
            )
            await consumer.start(nc.jetstream())

            async def settled() -> bool:
                outcomes = _outcomes(metrics)
                return outcomes["handled"] + outcomes["duplicate"] >= 40 and bool(
                    next(iter(metrics.dead_lettered.collect())).samples[0].value
                )

            await eventually(settled, within=30)
            await asyncio.sleep(0.5)
            await consumer.stop()
        # Every good event folded; the poisoned batch's other events folded on their own after
        # the whole batch failed (some twice: the handler is idempotent, as the contract says).
        assert set(folded) == {e.id for e in events} - {poisoned}
        assert forged.id not in folded
        outcomes = _outcomes(metrics)
        assert outcomes["duplicate"] == 2  # the copy in the same batch, and the one it named
        assert outcomes["disagrees"] == 1
        assert max(batch_sizes) > 1  # whole batches, not one call per event
    finally:
        await consumer.stop()
        await client.close()


async def test_consumers_that_dedupe_in_their_documents_make_no_inbox(settings: Settings) -> None:
    """Reporting and notify fold whole batches (ADR 0170, 0185): none of their consumers has an
    inbox to read, write, index or trim, so no inbox collection appears in their stores."""
    for service in ("reporting", "notify"):
        async with running(service, settings) as svc:
            assert svc.runtime.consumers
            assert all(consumer.inbox is None for consumer in svc.runtime.consumers)
            names = await svc.runtime.db.list_collection_names()
            assert not [name for name in names if name.startswith("inbox_")], names
    # A consumer that handles one event at a time cannot be made without one.
    with pytest.raises(ValueError, match="needs an inbox"):
        EventConsumer(
            service="test",
            durable="test-one-by-one",
            subject="giliran.*.request.submitted",
            handlers={},
            inbox=None,
            metrics=ConsumerMetrics.create(CollectorRegistry()),
        )


async def test_a_consumer_fetches_up_to_its_fetch_batch(settings: Settings) -> None:
    """Reporting rests a second and fetches up to 256 (ADR 0223): events already waiting come in
    batches of `fetch_batch`, not the default 64, and never more than it. Each event once."""
    client = connect(settings.mongo_url)
    batch_sizes: list[int] = []
    folded: Counter[str] = Counter()
    events = [request_event(["KIA"]) for _ in range(250)]

    async def fold(batch: Sequence[Event[Any]]) -> set[str]:
        batch_sizes.append(len(batch))
        folded.update(e.id for e in batch)
        return set()

    async def one(event: Event[Any]) -> set[str]:
        return await fold([event])

    consumer = EventConsumer(
        service="test",
        durable="test-big-fetch",
        subject="giliran.*.request.submitted",
        handlers={RequestSubmitted: one},
        inbox=None,
        metrics=ConsumerMetrics.create(CollectorRegistry()),
        batch_handler=fold,
        fetch_batch=200,
    )
    try:
        async with nats_client(settings) as nc:
            await ensure_streams(nc.jetstream())
            await publish_many(settings, events)
            await consumer.start(nc.jetstream())

            async def all_folded() -> bool:
                return len(folded) == len(events)

            await eventually(all_folded, within=30)
            await consumer.stop()
        assert batch_sizes[0] == 200, batch_sizes  # more than the default 64, capped at 200
        assert max(batch_sizes) <= 200
        assert set(folded) == {e.id for e in events} and max(folded.values()) == 1
    finally:
        await consumer.stop()
        await client.close()
