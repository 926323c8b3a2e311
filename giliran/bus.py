"""NATS JetStream plumbing for every service: broker, streams, publishing, reliable consumers."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js.api import ConsumerConfig, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from giliran.contracts import Event, EventData, UnknownEventType, parse_event
from giliran.contracts.subjects import (
    DLQ_STREAM,
    DLQ_SUBJECTS,
    DUPLICATE_WINDOW_SECONDS,
    STREAM,
    STREAM_SUBJECTS,
    dead_letter_subject,
)
from giliran.errors import Unprocessable
from giliran.store import Inbox

log = logging.getLogger("giliran.bus")

# Streams are declared by ensure_streams(), not by FastStream: FastStream would add each
# subscriber's filter subject to the stream's subject list, and overlapping subjects are refused.
EVENT_STREAM = JStream(STREAM, declare=False)


def make_broker(nats_url: str, service: str) -> NatsBroker:
    return NatsBroker(
        nats_url,
        name=f"giliran-{service}",
        # Keep reconnecting for ever: the outbox holds events while NATS is away.
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=2,
        # FastStream logs every message at the broker's log level; INFO halves consumer throughput.
        log_level=logging.DEBUG,
        graceful_timeout=10.0,
        description=f"Giliran {service} service",
    )


def jetstream(broker: NatsBroker) -> JetStreamContext:
    js: JetStreamContext = broker.config.connection_state.stream
    return js


async def ensure_streams(js: JetStreamContext) -> None:
    """Create or update the event stream and the dead-letter stream (idempotent)."""
    configs = [
        StreamConfig(
            name=STREAM,
            subjects=STREAM_SUBJECTS,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            description="Giliran events: giliran.<site>.<entity>.<event>",
        ),
        StreamConfig(
            name=DLQ_STREAM,
            subjects=DLQ_SUBJECTS,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            description="Messages a service could not handle, with the reason in headers",
        ),
    ]
    for config in configs:
        try:
            await js.stream_info(config.name or "")
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)


async def publish_event(js: JetStreamContext, event: Mapping[str, Any]) -> None:
    """Publish an outbox entry; Nats-Msg-Id = event id makes a re-publish a server-side no-op."""
    entity, name = str(event["type"]).split(".")[1:3]
    subject = f"giliran.{event['subject']}.{entity}.{name}"
    payload = json.dumps(event, separators=(",", ":")).encode()
    await js.publish(
        subject,
        payload,
        stream=STREAM,
        timeout=5.0,
        headers={"Nats-Msg-Id": str(event["id"]), "content-type": "application/cloudevents+json"},
    )


EventHandler = Callable[[Event[Any]], Awaitable[object]]


@dataclass
class ConsumerMetrics:
    handled: Counter
    dead_lettered: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ConsumerMetrics:
        return cls(
            handled=Counter(
                "giliran_events_handled",
                "Events taken from the bus, by type and outcome",
                ["consumer", "type", "outcome"],
                registry=registry,
            ),
            dead_lettered=Counter(
                "giliran_events_dead_lettered",
                "Messages sent to the dead-letter stream",
                ["consumer"],
                registry=registry,
            ),
        )


@dataclass
class EventConsumer:
    """A durable pull consumer over `subject` that hands each event to its typed handler.

    Delivery is at-least-once, so: events already in the inbox are acked and skipped; a handler
    that raises is retried with backoff (NAK with delay) up to `max_deliver` deliveries, then the
    message goes to the dead-letter stream with the reason and is terminated, so it never blocks
    the consumer and is never dropped silently. Unknown event types (newer producers) are skipped.
    """

    service: str
    durable: str
    subject: str
    handlers: Mapping[type[EventData], EventHandler]
    inbox: Inbox
    metrics: ConsumerMetrics
    max_deliver: int = 5
    backoff_seconds: Sequence[float] = (0.5, 2.0, 5.0, 15.0)
    description: str = ""
    _broker: NatsBroker | None = field(default=None, init=False, repr=False)
    _locks: dict[str, tuple[asyncio.Lock, int]] = field(
        default_factory=dict, init=False, repr=False
    )

    def register(self, broker: NatsBroker) -> None:
        self._broker = broker

        @broker.subscriber(
            self.subject,
            stream=EVENT_STREAM,
            durable=self.durable,
            pull_sub=PullSub(batch_size=64, timeout=1.0),
            ack_policy=AckPolicy.MANUAL,
            config=ConsumerConfig(
                ack_wait=30,
                # A server-side bound as well, in case this process dies before dead-lettering.
                max_deliver=self.max_deliver + 2,
                max_ack_pending=1000,
            ),
            title=f"{self.service}:{self.durable}",
            description=self.description
            or f"{self.service} consumes {', '.join(m.type_name() for m in self.handlers)}",
        )
        async def on_message(body: Any, msg: NatsMessage) -> None:
            await self.handle(msg)

    async def handle(self, msg: NatsMessage) -> None:
        try:
            event = parse_event(msg.body)
        except UnknownEventType as exc:
            self._count("unknown", str(exc))
            await msg.ack()
            return
        except ValidationError as exc:
            await self._dead_letter(msg, f"invalid event: {exc.error_count()} error(s): {exc}")
            return
        handler = self.handlers.get(type(event.data))
        if handler is None:
            self._count("ignored", event.type)
            await msg.ack()
            return
        # A pulled batch is handled concurrently, but events sharing an ordering key (one
        # citizen's request) are handled one at a time in stream order - asyncio locks are FIFO
        # and tasks start in batch order - and two copies of one event never both pass the inbox.
        key = event.data.ordering_key() or event.id
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                await self._handle_once(msg, event, handler)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _handle_once(
        self, msg: NatsMessage, event: Event[EventData], handler: EventHandler
    ) -> None:
        raw = msg.raw_message
        if await self.inbox.seen(event.id):
            self._count("duplicate", event.type)
            await msg.ack()
            return
        try:
            await handler(event)
            await self.inbox.record(event)
        except Unprocessable as exc:
            await self._dead_letter(msg, f"unprocessable: {exc}")
            return
        except Exception as exc:
            delivered = raw.metadata.num_delivered if raw.metadata else 1
            if delivered >= self.max_deliver:
                await self._dead_letter(msg, f"{type(exc).__name__}: {exc}")
            else:
                delay = self.backoff_seconds[min(delivered, len(self.backoff_seconds)) - 1]
                log.warning(
                    "%s: %s %s failed (delivery %d), retrying in %.1fs: %s",
                    self.durable,
                    event.type,
                    event.id,
                    delivered,
                    delay,
                    exc,
                )
                self._count("retried", event.type)
                await msg.nack(delay=delay)
            return
        self._count("handled", event.type)
        await msg.ack()

    def _count(self, outcome: str, event_type: str) -> None:
        self.metrics.handled.labels(self.durable, event_type, outcome).inc()

    async def _dead_letter(self, msg: NatsMessage, reason: str) -> None:
        assert self._broker is not None
        raw = msg.raw_message
        subject = dead_letter_subject(raw.subject, self.service)
        seq = raw.metadata.sequence.stream if raw.metadata else 0
        log.error(
            "%s: dead-lettering %s (stream seq %s): %s", self.durable, raw.subject, seq, reason
        )
        try:
            await jetstream(self._broker).publish(
                subject,
                raw.data,
                stream=DLQ_STREAM,
                headers={
                    "Nats-Msg-Id": f"{self.durable}:{seq}",
                    "Giliran-Reason": reason[:1000].replace("\n", " "),
                    "Giliran-Original-Subject": raw.subject,
                    "Giliran-Consumer": self.durable,
                },
            )
        except Exception as exc:  # Could not park it: keep it in the stream instead of losing it.
            log.error("%s: dead-letter publish failed (%s); will retry", self.durable, exc)
            await msg.nack(delay=self.backoff_seconds[-1])
            return
        self.metrics.dead_lettered.labels(self.durable).inc()
        await msg.reject()


async def consumer_exists(js: JetStreamContext, durable: str) -> bool:
    try:
        await js.consumer_info(STREAM, durable)
    except NotFoundError:
        return False
    return True
