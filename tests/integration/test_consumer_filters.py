"""A consumer filtered on the entities its handlers read (ADR 0230), against a real nats-server:
what it has no handler for is never delivered to it (no fetch, no delivery, no ack), a durable
made by an older release with the whole stream as its filter is narrowed when it starts, and
notify's citizen channels are no longer delivered notify's own `notification.sent`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from prometheus_client import CollectorRegistry

from giliran.bus import ConsumerMetrics, EventConsumer, ensure_streams
from giliran.contracts import Event, RequestSubmitted
from giliran.contracts.subjects import STREAM, all_events, entity_events
from giliran.settings import Settings
from tests.conftest import eventually, nats_client, publish_many, request_event, running

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"


async def _publish_raw(settings: Settings, subject: str, n: int) -> None:
    """Messages on another entity's subjects (as the queue and notify publish them)."""
    async with nats_client(settings) as nc:
        js = nc.jetstream()
        for i in range(n):
            await js.publish(
                subject, json.dumps({"n": i}).encode(), headers={"Nats-Msg-Id": f"{subject}-{i}"}
            )


@pytest.mark.parametrize(("filtered", "delivered"), [(True, 3), (False, 5)])
async def test_a_filtered_consumer_gets_only_its_entities_even_on_a_durable_made_wider(
    settings: Settings, filtered: bool, delivered: int
) -> None:
    folded: list[str] = []

    async def fold(batch: Sequence[Event[Any]]) -> set[str]:
        folded.extend(e.id for e in batch)
        return set()

    async def one(event: Event[Any]) -> set[str]:
        return await fold([event])

    durable = "test-filtered"
    consumer = EventConsumer(
        service="test",
        durable=durable,
        subject=all_events(),
        handlers={RequestSubmitted: one},
        inbox=None,
        metrics=ConsumerMetrics.create(CollectorRegistry()),
        batch_handler=fold,
        filter_subjects=(entity_events("request"),) if filtered else (),
    )
    events = [request_event(["KIA"]) for _ in range(3)]
    try:
        async with nats_client(settings) as nc:
            js = nc.jetstream()
            await ensure_streams(js)
            # As a release before the filter made it: the whole stream.
            await js.add_consumer(
                STREAM,
                ConsumerConfig(
                    durable_name=durable, filter_subject=all_events(), ack_policy=AckPolicy.EXPLICIT
                ),
            )
            await publish_many(settings, events[:2])
            await _publish_raw(settings, f"giliran.{SITE}.ticket.called", 2)
            await publish_many(settings, events[2:])
            await consumer.start(js)
            await eventually(lambda: _done(folded, 3), within=15)
            await asyncio.sleep(0.5)  # anything else would be delivered by now
            info = await js.consumer_info(STREAM, durable)
            await consumer.stop()
        assert sorted(folded) == sorted(e.id for e in events)
        assert info.num_pending == 0 and info.num_ack_pending == 0
        # Two messages of an entity nobody handles: never sent to the filtered consumer.
        assert info.delivered.consumer_seq == delivered
        if filtered:
            assert info.config.filter_subjects == [entity_events("request")]
    finally:
        await consumer.stop()


async def _done(folded: list[str], n: int) -> bool:
    return len(folded) >= n


async def test_notify_citizen_channels_are_not_delivered_notifys_own_events(
    settings: Settings,
) -> None:
    async with running("notify", settings) as notify:
        channels = [
            c.durable for c in notify.runtime.consumers if c.durable != "notify-contact_book"
        ]
        assert channels, "notify runs at least one citizen channel"
        await _publish_raw(settings, f"giliran.{SITE}.notification.sent", 4)
        await asyncio.sleep(1.0)
        async with nats_client(settings) as nc:
            js = nc.jetstream()
            for durable in channels:
                info = await js.consumer_info(STREAM, durable)
                assert sorted(info.config.filter_subjects or []) == [
                    entity_events("request"),
                    entity_events("ticket"),
                ], durable
                assert info.delivered.consumer_seq == 0, durable  # the four were never sent
