"""NATS JetStream plumbing for every service: broker, streams, publishing, reliable consumers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from faststream.nats import NatsBroker
from faststream.security import SASLPlaintext
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from giliran import telemetry
from giliran.contracts import EVENTS_BY_TYPE, Event, EventData, UnknownEventType, parse_event
from giliran.contracts.envelope import source_of
from giliran.contracts.subjects import (
    DLQ_STREAM,
    DLQ_SUBJECTS,
    DUPLICATE_WINDOW_SECONDS,
    PERSONAL_STREAM,
    PERSONAL_SUBJECTS,
    STREAM,
    STREAM_SUBJECTS,
    dead_letter_subject,
    event_subject,
    inbox_prefix,
    stream_of,
)
from giliran.errors import RetryLater, Unprocessable
from giliran.store import Inbox

log = logging.getLogger("giliran.bus")
FETCH_BATCH = 64  # messages per fetch: one round trip to nats-server


def make_broker(
    nats_url: str, service: str, *, user: str | None = None, password: str | None = None
) -> NatsBroker:
    return NatsBroker(
        nats_url,
        name=f"giliran-{service}",
        # With NATS permissions on (deploy/nats/), a user may only read replies under its own
        # inbox prefix; JetStream fetches and request-reply both use the connection's prefix.
        security=SASLPlaintext(username=user, password=password or "") if user else None,
        inbox_prefix=inbox_prefix(user or service),
        # Keep reconnecting for ever: the outbox holds events while NATS is away.
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=2,
        # FastStream logs every message at the broker's log level; INFO halves consumer throughput.
        log_level=logging.DEBUG,
        graceful_timeout=10.0,
        # Correlation ids on commands; FastStream's OpenTelemetry middleware when tracing is on.
        middlewares=telemetry.broker_middlewares(),
        description=f"Giliran {service} service",
    )


def jetstream(broker: NatsBroker) -> JetStreamContext:
    js: JetStreamContext = broker.config.connection_state.stream
    return js


DEFAULT_CONTACT_RETENTION_SECONDS = 48 * 3600.0


async def ensure_streams(
    js: JetStreamContext,
    replicas: int = 1,
    contact_retention_seconds: float = DEFAULT_CONTACT_RETENTION_SECONDS,
    *,
    configure: bool = True,
) -> None:
    """Create or update the event stream, the dead-letter stream and the personal stream
    (idempotent). `replicas`: copies kept by a JetStream cluster (3 on the Kubernetes cluster of
    deploy/k8s/); every start applies it, so it is configuration, never a by-hand `nats stream
    edit`. `contact_retention_seconds`: the personal stream's max age (ADR 0115).

    `configure=False` (every service but STREAM_OWNER, ADR 0111): only create a stream that is
    missing and leave an existing one as it is; their NATS users may not update a stream."""
    configs = [
        personal_stream_config(contact_retention_seconds, replicas),
        StreamConfig(
            name=STREAM,
            subjects=STREAM_SUBJECTS,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=replicas,
            description="Giliran events: giliran.<site>.<entity>.<event>",
        ),
        StreamConfig(
            name=DLQ_STREAM,
            subjects=DLQ_SUBJECTS,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=replicas,
            description="Messages a service could not handle, with the reason in headers",
        ),
    ]
    for config in configs:
        # A kabupaten hub's GILIRAN gathers the site boxes' streams (giliran_ops.edge): it has no
        # subjects of its own and is not the services' to reshape.
        await put_stream(js, config, unless_sourced=True, update=configure)


def personal_stream_config(retention_seconds: float, replicas: int = 1) -> StreamConfig:
    """Contacts (phone, e-mail, status-link token): kept at most `retention_seconds` after
    publishing (max_age), each no longer than its own `keep_until` (a per-message TTL set by
    publish_event), never sourced to the hub, not in the backups (ADR 0115)."""
    return StreamConfig(
        name=PERSONAL_STREAM,
        subjects=PERSONAL_SUBJECTS,
        storage=StorageType.FILE,
        # The server refuses a duplicate window longer than the max age.
        duplicate_window=min(DUPLICATE_WINDOW_SECONDS, retention_seconds),
        max_age=retention_seconds,
        allow_msg_ttl=True,
        num_replicas=replicas,
        description="Citizens' contacts for notify, forgotten after the contact retention",
    )


async def put_stream(
    js: JetStreamContext,
    config: StreamConfig,
    *,
    unless_sourced: bool = False,
    update: bool = True,
) -> None:
    """Create the stream, or bring an existing one to `config` (sources added or removed);
    `unless_sourced`: leave an existing stream that gathers others by sources as it is;
    `update=False`: leave any existing stream as it is."""
    try:
        info = await js.stream_info(config.name or "")
    except NotFoundError:
        await js.add_stream(config)
        return
    if update and not (unless_sourced and info.config.sources):
        await js.update_stream(config)


def event_subject_of(event: Mapping[str, Any]) -> str:
    entity, name = str(event["type"]).split(".")[1:3]
    return event_subject(str(event["subject"]), entity, name)


def seconds_left(event: Mapping[str, Any], now: datetime | None = None) -> float | None:
    """How long a personal event may still be kept (its `keep_until`); None: no limit of its own."""
    data = event.get("data")
    keep_until = data.get("keep_until") if isinstance(data, Mapping) else None
    if not keep_until:
        return None
    until = datetime.fromisoformat(str(keep_until).replace("Z", "+00:00"))
    return (until - (now or datetime.now(UTC))).total_seconds()


async def publish_event(
    js: JetStreamContext, event: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> bool:
    """Publish an outbox entry; Nats-Msg-Id = event id makes a re-publish a server-side no-op.
    `headers` adds to them (the trace context of the relay's send span). A personal event goes
    to the personal stream with a TTL ending at its `keep_until`; one whose time is already up
    (it waited in an outbox while NATS was away) is not published at all: False."""
    subject = event_subject_of(event)
    stream = stream_of(subject)
    extra: dict[str, str] = {}
    if stream == PERSONAL_STREAM:
        left = seconds_left(event)
        if left is not None:
            if left < 1:
                log.info("%s expired before it could be published; not sent", event["type"])
                return False
            extra["Nats-TTL"] = f"{int(left)}s"
    payload = json.dumps(event, separators=(",", ":")).encode()
    await js.publish(
        subject,
        payload,
        stream=stream,
        timeout=5.0,
        headers={
            **(headers or {}),
            **extra,
            "Nats-Msg-Id": str(event["id"]),
            "content-type": "application/cloudevents+json",
        },
    )
    return True


EventHandler = Callable[[Event[Any]], Awaitable[object]]
# Folds a whole fetched batch into the consumer's own documents and returns the ids of the events
# those documents had already folded (duplicates); see EventConsumer.batch_handler.
BatchHandler = Callable[[Sequence[Event[Any]]], Awaitable[set[str]]]


def disagreement(subject: str, event: Event[EventData]) -> str | None:
    """Why an event cannot be trusted on the NATS subject it arrived on, or None.

    NATS permissions decide who may publish on a subject, never what the body says: a service
    allowed `notification.sent` could put a `request.submitted` body there, or another site's
    slug, or another service's name. So the body's type and site must be the subject's, and its
    source the one service allowed to publish that event (ADR 0110). The reason names only the
    subject, the type and the expected publisher, never the body's free text (ADR 0051)."""
    if subject != event.nats_subject:
        return f"body says {event.type} at {event.subject}, but it arrived on {subject}"
    publisher = type(event.data).publisher
    if event.source != source_of(publisher):
        return f"source is not {source_of(publisher)}, the only publisher of {event.type}"
    return None


def subject_event_type(subject: str) -> type[EventData] | None:
    """The event model a subject carries (`giliran.<site>.<entity>.<event>`), if we know it."""
    parts = subject.split(".")
    if len(parts) != 4:
        return None
    return next(
        (m for m in EVENTS_BY_TYPE.values() if (m.entity, m.event) == (parts[2], parts[3])),
        None,
    )


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


def _filters(config: ConsumerConfig) -> list[str]:
    """The subjects a consumer's config lets through, however it spells them."""
    if config.filter_subjects:
        return sorted(config.filter_subjects)
    return [config.filter_subject] if config.filter_subject else []


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
    # None only with a `batch_handler`, whose documents dedupe (no inbox is read or written).
    inbox: Inbox | None
    metrics: ConsumerMetrics
    max_deliver: int = 5
    backoff_seconds: Sequence[float] = (0.5, 2.0, 5.0, 15.0)
    description: str = ""
    stream: str = STREAM
    # Optional: the whole batch in one call, for consumers whose documents remember the events
    # they folded (so they dedupe themselves and no inbox is read or written). If it raises, the
    # batch's events go one by one through `handlers`, with the usual retries and dead letters.
    batch_handler: BatchHandler | None = None
    # Optional: rest this long after a batch smaller than a full fetch, so that under load the
    # next fetch brings more events per batch (for consumers whose readers can wait that long).
    linger_seconds: float = 0.0
    # Messages per fetch (one round trip to nats-server). A batch handler that writes once per
    # document per batch (reporting) may take more, so that a rest gathers more events per write.
    fetch_batch: int = FETCH_BATCH
    # Optional: only these subjects of `subject`'s stream reach this consumer (nats-server's
    # filter_subjects). For a consumer whose handlers want a few of a stream's entities: every
    # event it would only skip still costs a fetch, a delivery and an ack (ADR 0230).
    filter_subjects: tuple[str, ...] = ()
    _js: JetStreamContext | None = field(default=None, init=False, repr=False)
    _subscription: JetStreamContext.PullSubscription | None = field(
        default=None, init=False, repr=False
    )
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _running: bool = field(default=False, init=False, repr=False)
    _fetching: bool = field(default=False, init=False, repr=False)
    _lingering: bool = field(default=False, init=False, repr=False)

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            description=self.description
            or f"{self.service} consumes {', '.join(m.type_name() for m in self.handlers)}",
            filter_subject=None if self.filter_subjects else self.subject,
            filter_subjects=list(self.filter_subjects) or None,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30,
            # A server-side bound as well, in case this process dies before dead-lettering.
            max_deliver=self.max_deliver + 2,
            max_ack_pending=1000,
        )

    async def start(self, js: JetStreamContext) -> None:
        """Create (or bind to) the durable consumer and start pulling."""
        self._js = js
        await self._refilter(js)
        self._subscription = await js.pull_subscribe(
            self.subject, durable=self.durable, stream=self.stream, config=self.consumer_config()
        )
        self._running = True
        self._task = asyncio.create_task(self._pull(), name=f"consume-{self.durable}")

    async def _refilter(self, js: JetStreamContext) -> None:
        """A durable made by an older release keeps the filter it was made with (binding never
        changes a consumer): give it this release's filter, so an upgraded box stops being
        delivered what no handler wants. Where it was delivered to stays as it was."""
        wanted = self.consumer_config()
        try:
            info = await js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            return  # made below, with the wanted filter
        have = info.config
        if _filters(have) == _filters(wanted):
            return
        log.info("%s: consumer filter %s -> %s", self.durable, _filters(have), _filters(wanted))
        try:
            await js.add_consumer(self.stream, config=wanted)
        except APIError as exc:  # e.g. a setting the server will not edit: the old filter works
            log.warning("%s: consumer filter kept (%s)", self.durable, exc)

    async def stop(self) -> None:
        """Finish the batch in hand, then stop (messages not acked are redelivered)."""
        self._running = False
        if self._task is not None:
            if self._fetching or self._lingering:  # idle: nothing in hand, no need to wait for it
                self._task.cancel()
            try:
                async with asyncio.timeout(10):
                    await self._task
            except TimeoutError:
                self._task.cancel()
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._subscription is not None:
            # A pull subscription left open makes the connection's drain wait for it (30 s).
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def _pull(self) -> None:
        # Our own fetch loop rather than a FastStream subscriber (ADR 0007): FastStream starts a
        # pulled batch's messages concurrently and they reach the handler out of stream order
        # (measured: a third of neighbours inverted, so citizens read "completed" before
        # "called"), and its batch mode drops a half-collected batch when nats-py raises a bare
        # TimeoutError. fetch() returns as soon as messages are there; up to `fetch_batch` per
        # round trip.
        assert self._subscription is not None
        while self._running:
            self._fetching = True
            try:
                messages = await self._subscription.fetch(batch=self.fetch_batch, timeout=1.0)
            except TimeoutError:  # nothing to do (nats-py raises both kinds of TimeoutError)
                continue
            except Exception as exc:  # disconnected: the client reconnects by itself
                log.debug("%s: fetch failed: %s", self.durable, exc)
                await asyncio.sleep(0.5)
                continue
            finally:
                self._fetching = False
            try:
                await self.handle_batch(messages)
            except Exception as exc:  # e.g. an ack lost to a disconnect: never stop pulling
                log.warning("%s: batch not settled (%s); unacked messages come again",
                            self.durable, exc)  # fmt: skip
            if self.linger_seconds and len(messages) < self.fetch_batch and self._running:
                self._lingering = True
                try:
                    await asyncio.sleep(self.linger_seconds)
                finally:
                    self._lingering = False

    def __post_init__(self) -> None:
        if self.inbox is None and self.batch_handler is None:
            raise ValueError(f"{self.durable}: a consumer without a batch handler needs an inbox")

    def _inbox(self) -> Inbox:
        assert self.inbox is not None  # checked at construction
        return self.inbox

    async def handle_batch(self, messages: Sequence[Msg]) -> None:
        """Events sharing an ordering key (one citizen's request) are handled one after another
        in stream order; different keys run concurrently.

        The inbox is read and written once per batch, not per event (ADR 0080): one `$in` query
        for the batch's ids before the handlers, one insert of every handled id after them, then
        the acks. A crash after a handler and before the insert only means a redelivery, which
        the handlers absorb (they are idempotent on their own)."""
        groups: dict[str, list[tuple[Msg, Event[EventData] | str]]] = {}
        events: list[tuple[Msg, Event[EventData] | str]] = []
        for raw in messages:
            parsed = self._parse(raw)
            if isinstance(parsed, Event) and (why := disagreement(raw.subject, parsed)):
                if type(parsed.data) in self.handlers or subject_event_type(raw.subject) in (
                    self.handlers
                ):
                    # Forged or misrouted: never handled, parked with the reason for the on-call.
                    self._count("disagrees", parsed.type)
                    await self._dead_letter(raw, f"body disagrees with subject: {why}")
                else:
                    self._count("ignored", parsed.type)
                    await raw.ack()
                continue
            if isinstance(parsed, Event) and type(parsed.data) not in self.handlers:
                # Not ours (e.g. notify's own notification.sent): ack at once rather than
                # queue it behind its request's events.
                self._count("ignored", parsed.type)
                await raw.ack()
                continue
            events.append((raw, parsed))
        if self.batch_handler is not None:
            await self._fold_batch(events, self.batch_handler)
            return
        inbox = self._inbox()
        ids = [parsed.id for _, parsed in events if isinstance(parsed, Event)]
        try:
            seen = await inbox.seen_many(ids) if ids else set()
        except Exception as exc:  # the store is away: the whole batch comes again later
            log.warning("%s: inbox read failed (%s); %d message(s) will come again",
                        self.durable, exc, len(events))  # fmt: skip
            for raw, _ in events:
                await raw.nak(delay=self.backoff_seconds[0])
            return
        in_batch: set[str] = set()
        for raw, parsed in events:
            if isinstance(parsed, Event):
                if parsed.id in seen or parsed.id in in_batch:  # handled, or twice in this batch
                    self._count("duplicate", parsed.type)
                    await raw.ack()
                    continue
                in_batch.add(parsed.id)
                key = parsed.data.ordering_key() or parsed.id
            else:
                key = raw.reply  # unique per delivery: a bad message is ordered with nothing
            groups.setdefault(key, []).append((raw, parsed))
        handled: list[tuple[Msg, Event[EventData]]] = []
        await asyncio.gather(*(self._handle_in_order(g, handled) for g in groups.values()))
        if handled:
            await self._settle(handled)

    async def _fold_batch(
        self, events: list[tuple[Msg, Event[EventData] | str]], fold: BatchHandler
    ) -> None:
        """The batch handler folds every event of the batch at once and names those its documents
        had folded before; then all are acked. No inbox: a redelivery after a crash is folded
        again, which the batch handler's documents absorb."""
        batch: list[tuple[Msg, Event[EventData]]] = []
        in_batch: set[str] = set()
        for raw, parsed in events:
            if isinstance(parsed, str):
                await self.handle(raw, parsed)  # unknown: acked; invalid: dead-lettered
            elif parsed.id in in_batch:  # the same event twice in this batch
                self._count("duplicate", parsed.type)
                await raw.ack()
            else:
                in_batch.add(parsed.id)
                batch.append((raw, parsed))
        if not batch:
            return
        try:
            duplicates = await fold([event for _, event in batch])
        except Exception as exc:  # one bad event, or the store away: one by one, with retries
            log.warning("%s: batch of %d not folded (%s); handling its events one by one",
                        self.durable, len(batch), exc)  # fmt: skip
            named: set[str] = set()

            async def alone(event: Event[Any]) -> None:
                named.update(await fold([event]))

            for raw, event in batch:  # stream order, so each request's events stay in order
                if await self.handle(raw, event, alone):
                    self._count("duplicate" if event.id in named else "handled", event.type)
                    await raw.ack()
            return
        for raw, event in batch:
            self._count("duplicate" if event.id in duplicates else "handled", event.type)
            await raw.ack()

    async def _settle(self, handled: list[tuple[Msg, Event[EventData]]]) -> None:
        """Record the batch's handled events in the inbox, then ack them."""
        try:
            await self._inbox().record_many([event for _, event in handled])
        except Exception as exc:  # the store is away: redeliver; the handlers are idempotent
            log.warning("%s: inbox record failed (%s); %d event(s) will come again",
                        self.durable, exc, len(handled))  # fmt: skip
            for raw, event in handled:
                self._count("retried", event.type)
                await raw.nak(delay=self.backoff_seconds[0])
            return
        for raw, event in handled:
            self._count("handled", event.type)
            await raw.ack()

    def _parse(self, raw: Msg) -> Event[EventData] | str:
        """The event, or why it is not one we handle ("unknown:..." / "invalid:...")."""
        try:
            return parse_event(raw.data)
        except UnknownEventType as exc:
            return f"unknown:{exc}"
        except ValidationError as exc:
            return f"invalid:{describe_invalid(exc)}"

    async def _handle_in_order(
        self,
        group: list[tuple[Msg, Event[EventData] | str]],
        handled: list[tuple[Msg, Event[EventData]]],
    ) -> None:
        for raw, parsed in group:
            try:
                if await self.handle(raw, parsed):
                    assert isinstance(parsed, Event)
                    handled.append((raw, parsed))
            except Exception as exc:  # never let one message stop its batch
                log.exception("%s: unexpected failure on %s: %s", self.durable, raw.subject, exc)
                await raw.nak(delay=self.backoff_seconds[-1])

    async def handle(
        self, raw: Msg, parsed: Event[EventData] | str, handler: EventHandler | None = None
    ) -> bool:
        """Run the event's handler (or `handler`); True when it succeeded (the caller records and
        acks it), False when the message was settled here (skipped, retried or dead-lettered)."""
        if isinstance(parsed, str):
            if parsed.startswith("unknown:"):
                self._count("unknown", parsed.removeprefix("unknown:"))
                await raw.ack()
            else:
                await self._dead_letter(raw, f"invalid event: {parsed.removeprefix('invalid:')}")
            return False
        event = parsed
        # handle_batch acked events we do not handle
        handler = handler or self.handlers[type(event.data)]
        try:
            await handler(event)
        except Unprocessable as exc:
            await self._dead_letter(raw, f"unprocessable: {exc}")
            return False
        except Exception as exc:
            delivered = raw.metadata.num_delivered if raw.metadata else 1
            if delivered >= self.max_deliver:
                await self._dead_letter(raw, f"{type(exc).__name__}: {exc}")
            else:
                if isinstance(exc, RetryLater):
                    delay = exc.delay_seconds
                else:
                    step = self.backoff_seconds[min(delivered, len(self.backoff_seconds)) - 1]
                    # Jitter spreads the retries of many failed messages over time.
                    delay = step * random.uniform(0.75, 1.25)
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
                await raw.nak(delay=delay)
            return False
        return True

    def _count(self, outcome: str, event_type: str) -> None:
        self.metrics.handled.labels(self.durable, event_type, outcome).inc()

    async def _dead_letter(self, raw: Msg, reason: str) -> None:
        assert self._js is not None
        subject = dead_letter_subject(raw.subject, self.service)
        seq = raw.metadata.sequence.stream if raw.metadata else 0
        log.error(
            "%s: dead-lettering %s (stream seq %s): %s", self.durable, raw.subject, seq, reason
        )
        # Dead letters are kept for ever: one from the personal stream keeps its envelope and
        # request id, never the contact (ADR 0115).
        payload = without_contact(raw.data) if self.stream == PERSONAL_STREAM else raw.data
        try:
            await self._js.publish(
                subject,
                payload,
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
            await raw.nak(delay=self.backoff_seconds[-1])
            return
        self.metrics.dead_lettered.labels(self.durable).inc()
        await raw.term()


def without_contact(data: bytes) -> bytes:
    """A personal event reduced to what identifies the request it belonged to, not the person."""
    try:
        event = json.loads(data)
        body = event.get("data") if isinstance(event, dict) else None
        request_id = body.get("request_id") if isinstance(body, dict) else None
        kept = {k: event[k] for k in ("id", "type", "subject", "time") if k in event}
        return json.dumps({**kept, "data": {"request_id": request_id}}).encode()
    except (ValueError, AttributeError):
        return b""


def describe_invalid(exc: ValidationError, most: int = 5) -> str:
    """Where and why a message is invalid, never what it held: the reason goes to logs and to
    the dead letter's headers, and a hostile or broken message may carry a NIK or a phone."""
    problems = [
        f"{'.'.join(str(p) for p in error['loc']) or '(message)'}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)[:most]
    ]
    return f"{exc.error_count()} error(s): " + "; ".join(problems)


@dataclass(frozen=True)
class DeadLetter:
    """A parked message as an operator sees it (its payload stays in the stream)."""

    seq: int
    subject: str
    original_subject: str
    consumer: str
    reason: str
    parked_at: str
    size: int


async def dead_letters(
    js: JetStreamContext, service: str, *, limit: int = 100, scan: int = 5000
) -> list[DeadLetter]:
    """The newest `limit` dead letters `service` parked, oldest first, read message by message
    (STREAM.MSG.GET: the only dead-letter API a service's NATS user may call)."""
    found: list[DeadLetter] = []
    # Look at the newest `scan` messages only: each is one round trip.
    state = (await js.stream_info(DLQ_STREAM)).state
    seq = max(state.first_seq, state.last_seq - scan + 1, 1)
    subject = f"giliran.*.dlq.{service}.*.*"
    while True:
        try:
            msg = await js.get_msg(DLQ_STREAM, seq=seq, subject=subject, next=True)
        except NotFoundError:
            break
        # nats-py parses these headers with email.parser: long values come back as Header objects.
        headers = {str(k): str(v) for k, v in (msg.headers or {}).items()}
        found.append(
            DeadLetter(
                seq=msg.seq or seq,
                subject=msg.subject or "",
                original_subject=headers.get("Giliran-Original-Subject", ""),
                consumer=headers.get("Giliran-Consumer", ""),
                reason=headers.get("Giliran-Reason", ""),
                parked_at=str(msg.time or ""),
                size=len(msg.data or b""),
            )
        )
        found = found[-limit:]
        seq = (msg.seq or seq) + 1
    return found


async def consumer_exists(js: JetStreamContext, durable: str, stream: str = STREAM) -> bool:
    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
        return False
    return True
