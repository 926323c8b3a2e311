"""What every service process shares: store and bus lifecycle, outbox relay, ops, errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from pymongo.errors import PyMongoError

from giliran import telemetry
from giliran.auth.accounts import AuthStore, Role
from giliran.auth.audit import AuditKeys, AuditLog
from giliran.auth.credentials import CREDENTIALS_CHANGED, REMEMBERED, forget_credentials
from giliran.auth.views import audit_router
from giliran.auth.web import Auth, LoginRequired, login_redirect, login_router, requires
from giliran.bus import (
    FETCH_BATCH,
    BatchHandler,
    ConsumerMetrics,
    EventConsumer,
    EventHandler,
    consumer_exists,
    dead_letters,
    disagreement,
    ensure_streams,
    event_subject_of,
    jetstream,
    make_broker,
    publish_event,
)
from giliran.contracts import Event, EventData, UnknownEventType, parse_event
from giliran.contracts.events import EVENT_MODELS
from giliran.contracts.subjects import STREAM, STREAM_OWNER, event_pattern
from giliran.errors import DomainError
from giliran.hardening import BodyLimit, SameOrigin, SecurityHeaders
from giliran.metrics import BusMetrics, ObservedHttp, StoreCommandsCollector, http_duration
from giliran.push import StreamLimits
from giliran.settings import ServiceName, Settings
from giliran.store import (
    Collection,
    Document,
    Inbox,
    OutboxRelay,
    connect,
    ensure_outbox_index,
    ping,
)

log = logging.getLogger("giliran.runtime")
events_log = logging.getLogger("giliran.events")

Hook = Callable[[], Awaitable[None]]
INBOX_KEEP = timedelta(days=7)
# parse_event validates every consumed message as Event[dict[str, Any]], then as Event[<its
# model>]. pydantic keeps a parametrized model only while something refers to it (a weak
# cache): with no reference left, a full garbage collection dropped the class and the next
# message built it again, schema and validator (~2 ms each): 2-3 % of every consuming service's
# CPU in py-spy samples at 20 lifecycles/s (ADR 0206). Referred to here, each is built once per
# process: the envelope at import, the events' own models when the first consumer is declared.
ENVELOPE = Event[dict[str, Any]]  # type: ignore[type-var]
_PARSED_MODELS: list[type[Event[Any]]] = []


def _keep_parsed_models() -> None:
    if not _PARSED_MODELS:
        _PARSED_MODELS.extend(Event[model] for model in EVENT_MODELS)  # type: ignore[valid-type]


class ServiceRuntime:
    """One service's connections and background work; the app's composition root fills it in."""

    def __init__(self, service: ServiceName, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.registry = CollectorRegistry()
        password = settings.nats_password.get_secret_value() if settings.nats_password else None
        self.broker: NatsBroker = make_broker(
            settings.nats_url, service, user=settings.nats_user, password=password
        )
        # What this service publishes and sends, for the AsyncAPI document and the NATS
        # permissions derived from the code (giliran_ops.natsauth).
        self.published: list[type[EventData]] = []
        self.commands_sent: list[str] = []
        self.client = connect(settings.mongo_url)
        self.db = self.client[settings.database_name(service)]
        auth_db = self.client[settings.auth_database]
        self.accounts = AuthStore(auth_db, REMEMBERED)
        self.audit = AuditLog(auth_db, service, _audit_keys(settings))
        self.auth = Auth(
            self.accounts,
            _session_key(settings),
            legacy_admin_token=(
                settings.admin_token.get_secret_value() if settings.admin_token else None
            ),
            password_checks=settings.login_concurrency,
        )
        self.streams = StreamLimits(settings.sse_per_address, settings.sse_per_credential)
        self.consumer_metrics = ConsumerMetrics.create(self.registry)
        self.bus_metrics = BusMetrics.create(self.registry)
        self.bus_metrics.bus_connected.set_function(
            lambda: float(self.bus_started.is_set() and self.broker.connection.is_connected)
        )
        self.consumers: list[EventConsumer] = []
        self._outbox: list[Collection] = []
        self._startup: list[Hook] = []
        self._periodic: list[tuple[float, Hook]] = []
        self._periodic_tasks: list[asyncio.Task[None]] = []
        self._watches: list[tuple[str, Callable[[str], None]]] = []
        self._id_watches: list[tuple[str, Callable[[str, str | None], None]]] = []
        self._event_watches: list[tuple[str, Callable[[Event[EventData]], None]]] = []
        # A credential ended here: every process forgets what it remembered (ADR 0180).
        self.accounts.on_change = self._announce_credentials_changed
        self.watch(CREDENTIALS_CHANGED, forget_credentials)
        self.commands_sent.append(CREDENTIALS_CHANGED)
        self.relay: OutboxRelay | None = None
        self._bus_task: asyncio.Task[None] | None = None
        self.bus_started = asyncio.Event()
        Gauge(
            "giliran_outbox_published",
            "Events this process moved from its outbox to the bus",
            registry=self.registry,
        ).set_function(lambda: float(self.relay.published if self.relay else 0))
        self.registry.register(StoreCommandsCollector())

    # --- wiring (called by each service's app.py) -------------------------------------------

    def on_startup(self, hook: Hook) -> None:
        self._startup.append(hook)

    def every(self, seconds: float, job: Hook) -> None:
        """Run `job` now and then every `seconds` while the service runs (failures are logged)."""
        self._periodic.append((seconds, job))

    def watch(self, subject: str, on_subject: Callable[[str], None]) -> None:
        """Be told the subject of every message on `subject` (plain NATS, every instance, no
        delivery guarantee): for refreshing what screens show, never for state changes."""
        self._watches.append((subject, on_subject))

    def watch_ids(self, subject: str, on_event: Callable[[str, str | None], None]) -> None:
        """As `watch`, told each message's Nats-Msg-Id too (the event id the relay publishes
        with): a service with several instances tells its own events from another's."""
        self._id_watches.append((subject, on_event))

    def watch_events(self, subject: str, on_event: Callable[[Event[EventData]], None]) -> None:
        """As `watch`, told each message's event: only one that parses and agrees with the
        subject it came on (`disagreement`: type, site, publisher) is passed on, anything else
        is dropped. Plain NATS, every instance, no delivery guarantee: for waking what waits in
        memory, never for state changes (those come through a durable consumer)."""
        self._event_watches.append((subject, on_event))

    @property
    def watches(self) -> list[tuple[str, Callable[[str], None]]]:
        return (
            list(self._watches)
            + [(s, _subject_only) for s, _ in self._id_watches]
            + [(s, _subject_only) for s, _ in self._event_watches]
        )

    def sends(self, *subject_patterns: str) -> None:
        """Declare the commands (request-reply subjects) this service sends to another."""
        self.commands_sent.extend(subject_patterns)

    def use_outbox(self, *collections: Collection) -> None:
        self._outbox.extend(collections)

    def consume(
        self,
        name: str,
        subject: str,
        handlers: Mapping[type[EventData], EventHandler],
        *,
        max_deliver: int | None = None,
        stream: str = STREAM,
        batch_handler: BatchHandler | None = None,
        each_of: Callable[[Mapping[type[EventData], EventHandler]], BatchHandler] | None = None,
        linger_seconds: float = 0.0,
        fetch_batch: int = FETCH_BATCH,
        filter_subjects: tuple[str, ...] = (),
    ) -> EventConsumer:
        """Register a durable pull consumer named `<service>-<name>` on `stream` with its own
        inbox, or none when a `batch_handler` dedupes in its own documents (see EventConsumer).
        `each_of`: the batch handler made over `handlers` as this consumer observes them (each
        event inside its correlation id and "process" span), for a batch handler that runs
        each event through its handler rather than folding the batch at once."""
        durable = f"{self.service}-{name}"
        _keep_parsed_models()
        observed_handlers: dict[type[EventData], EventHandler] = {
            model: observed(durable, handler, self.bus_metrics, self.settings.log_events)
            for model, handler in handlers.items()
        }
        if each_of is not None:
            if batch_handler is not None:
                raise ValueError(f"{durable}: a batch handler or each_of, not both")
            batch_handler = each_of(observed_handlers)
        if batch_handler is not None:
            batch_handler = observed_batch(
                durable, batch_handler, self.bus_metrics, self.settings.log_events
            )
        consumer = EventConsumer(
            service=self.service,
            durable=durable,
            subject=subject,
            handlers=observed_handlers,
            # A batch handler's documents dedupe: no inbox collection is made for it.
            inbox=Inbox(self.db, durable) if batch_handler is None else None,
            metrics=self.consumer_metrics,
            max_deliver=max_deliver or self.settings.max_deliver,
            backoff_seconds=tuple(self.settings.retry_backoff_seconds),
            stream=stream,
            batch_handler=batch_handler,
            linger_seconds=linger_seconds,
            fetch_batch=fetch_batch,
            filter_subjects=filter_subjects,
        )
        self.consumers.append(consumer)
        return consumer

    def publishes(self, *models: type[EventData]) -> None:
        """Declare the events this service publishes (through its outbox), for the AsyncAPI
        document; the relay itself publishes with nats-py to set Nats-Msg-Id per event."""
        for model in models:
            if getattr(model, "publisher", None) != self.service:
                # Consumers dead-letter an event whose source is not its declared publisher.
                raise RuntimeError(
                    f"{self.service} cannot publish {model.type_name()}: the contract names "
                    f"{getattr(model, 'publisher', 'no service')} as its publisher"
                )
            self.published.append(model)
            self.broker.publisher(
                event_pattern(model.entity, model.event),
                title=f"{self.service}:{model.type_name()}",
                description=(model.__doc__ or model.type_name()).strip().splitlines()[0],
                schema=Event[model],  # type: ignore[valid-type]
            )

    def wake_relay(self, collection: Collection | None = None) -> None:
        """After a write with events: they leave now. Name the collection written if the
        service has several outboxes (the others are not read)."""
        if self.relay is not None:
            self.relay.wake(collection)

    async def relay_now(
        self,
        collection: Collection,
        doc_id: Any,
        events: Sequence[Event[Any]],
        *,
        outbox: Mapping[str, Document] | None = None,
        remove_together: bool = False,
    ) -> None:
        """Publish events this task just wrote to a document's outbox (and any older ones
        `outbox`, the document's outbox as the write returned it, still holds), at once and
        without the relay's query for them (OutboxRelay.relay_now); left to the relay when
        that fails."""
        published = self.relay is not None and await self.relay.relay_now(
            collection, doc_id, events, outbox=outbox, remove_together=remove_together
        )
        if not published:
            self.wake_relay(collection)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        weak = self.settings.weak_secrets()
        if weak:
            raise RuntimeError(
                "Kunci rahasia tidak aman, layanan tidak dijalankan / unsafe secrets, not "
                "starting (how to make them: deploy/env.example): " + "; ".join(weak)
            )
        key = self.settings.session_key
        if (key is None or not key.get_secret_value()) and not self.settings.demo:
            raise RuntimeError(
                "GILIRAN_SESSION_KEY is not set: sessions cannot be signed. Set a long random "
                "value (the same for every service), or run with --demo."
            )
        if self.audit.keys.demo and not self.settings.demo:
            raise RuntimeError(
                "GILIRAN_AUDIT_KEY is not set: the audit trail cannot be keyed. Set a long random "
                "value (the same for every service), or run with --demo."
            )
        await self.accounts.ensure_indexes()
        await self.audit.ensure_indexes()
        for hook in self._startup:
            await hook()
        for collection in self._outbox:
            await ensure_outbox_index(collection)
        for consumer in self.consumers:
            if consumer.inbox is not None:
                await consumer.inbox.ensure_indexes()
        self.relay = OutboxRelay(
            self._outbox,
            self._publish,
            poll_seconds=self.settings.outbox_poll_seconds,
            audit=self.audit.append_noted,
        )
        # The bus may be down at start: HTTP serves at once (intake keeps accepting requests into
        # its outbox) while this task keeps trying to connect.
        self._bus_task = asyncio.create_task(self._start_bus(), name="bus-start")
        # Inbox entries only need to outlive redelivery (ack wait x max deliver: minutes);
        # a week bounds the collections with a wide margin.
        self.every(3600, self._trim_inboxes)
        # Expired login sessions are already refused; this only keeps the collection small.
        self.every(3600, self._forget_expired_sessions)
        # Consumer lag and outbox backlog: read from the servers now and then, not per message.
        self.every(self.settings.metrics_refresh_seconds, self.observe_bus)
        self._periodic_tasks = [
            asyncio.create_task(self._repeat(seconds, job)) for seconds, job in self._periodic
        ]

    async def observe_bus(self) -> None:
        """Consumer lag from the server's consumer info, and the outbox backlog."""
        if self.relay is not None:
            self.bus_metrics.outbox_pending.set(await self.relay.pending())
        if not self.bus_started.is_set() or not self.broker.connection.is_connected:
            return
        js = jetstream(self.broker)
        for consumer in self.consumers:
            info = await js.consumer_info(consumer.stream, consumer.durable)
            self.bus_metrics.pending.labels(consumer.durable).set(info.num_pending or 0)
            self.bus_metrics.ack_pending.labels(consumer.durable).set(info.num_ack_pending or 0)
            self.bus_metrics.redelivered.labels(consumer.durable).set(info.num_redelivered or 0)

    async def _forget_expired_sessions(self) -> None:
        await self.accounts.forget_expired()

    async def _trim_inboxes(self) -> None:
        for consumer in self.consumers:
            if consumer.inbox is not None:
                await consumer.inbox.forget_before(INBOX_KEEP)

    async def _repeat(self, seconds: float, job: Hook) -> None:
        while True:
            try:
                await job()
            except Exception as exc:
                log.warning("%s: periodic %s failed: %s", self.service, job.__name__, exc)
            await asyncio.sleep(seconds)

    async def _start_bus(self) -> None:
        delay = 0.2
        while True:
            try:
                await self.broker.connect()
                await ensure_streams(
                    jetstream(self.broker),
                    self.settings.stream_replicas,
                    self.settings.contact_retention_hours * 3600,
                    configure=self.service == STREAM_OWNER,
                )
                await self.broker.start()
                for consumer in self.consumers:
                    await consumer.start(jetstream(self.broker))
                for subject, on_subject in self._watches:
                    await self._watch(subject, on_subject)
                for subject, on_event in self._id_watches:
                    await self._watch_ids(subject, on_event)
                for subject, on_parsed in self._event_watches:
                    await self._watch_events(subject, on_parsed)
                break
            except Exception as exc:
                log.warning("%s: bus not ready (%s); retrying in %.1fs", self.service, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.bus_started.set()
        assert self.relay is not None
        self.relay.start()
        log.info("%s: bus connected, %d consumer(s) started", self.service, len(self.consumers))

    async def _announce_credentials_changed(self) -> None:
        if not (self.bus_started.is_set() and self.broker.connection.is_connected):
            log.warning("credential changed while the bus is down: others notice it within 30 s")
            return
        try:
            await self.broker.connection.publish(CREDENTIALS_CHANGED, b"")
            await self.broker.connection.flush(timeout=2)
        except Exception as exc:
            log.warning("could not announce a credential change (%s)", exc)

    async def _watch(self, subject: str, on_subject: Callable[[str], None]) -> None:
        async def deliver(message: Msg) -> None:
            on_subject(message.subject)

        await self.broker.connection.subscribe(subject, cb=deliver)

    async def _watch_ids(self, subject: str, on_event: Callable[[str, str | None], None]) -> None:
        async def deliver(message: Msg) -> None:
            on_event(message.subject, (message.headers or {}).get("Nats-Msg-Id"))

        await self.broker.connection.subscribe(subject, cb=deliver)

    async def _watch_events(
        self, subject: str, on_event: Callable[[Event[EventData]], None]
    ) -> None:
        async def deliver(message: Msg) -> None:
            try:
                event = parse_event(message.data)
            except (UnknownEventType, ValueError):  # pydantic's ValidationError is a ValueError
                return
            if disagreement(message.subject, event) is None:
                on_event(event)

        await self.broker.connection.subscribe(subject, cb=deliver)

    async def _publish(self, event: Document) -> None:
        if not self.bus_started.is_set() or not self.broker.connection.is_connected:
            raise ConnectionError("NATS is not connected")
        if telemetry.tracing():
            headers: dict[str, str] = {}
            with telemetry.sending(event_subject_of(event), event, headers):
                await publish_event(jetstream(self.broker), event, headers)
        else:
            await publish_event(jetstream(self.broker), event)
        self.bus_metrics.count_published(str(event["type"]))

    async def stop(self) -> None:
        if self.relay is not None:
            await self.relay.stop()
        for consumer in self.consumers:
            await consumer.stop()
        for task in (self._bus_task, *self._periodic_tasks):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    async with asyncio.timeout(5):
                        await task
        try:
            await self.broker.stop()
        except Exception as exc:
            log.warning("%s: broker stop: %s", self.service, exc)
        await self.client.close()

    async def readiness(self) -> dict[str, bool]:
        checks = {"store": await ping(self.db), "bus": False, "consumers": False}
        if self.bus_started.is_set() and self.broker.connection.is_connected:
            checks["bus"] = True
            try:
                js = jetstream(self.broker)
                found = [await consumer_exists(js, c.durable, c.stream) for c in self.consumers]
                checks["consumers"] = all(found)
            except Exception:
                checks["consumers"] = False
        return checks


def observed_batch(
    durable: str, handler: BatchHandler, metrics: BusMetrics, log_events: bool = False
) -> BatchHandler:
    """A batch handler timed per batch (`type` label "batch"); when tracing, one "process" span
    per event of the batch, each a child of its own event's creation context, spanning the fold;
    with GILIRAN_LOG_EVENTS one log line per event, under that event's correlation id and span
    (a batch's events belong to different citizens, so none is bound during the fold itself)."""
    child = metrics.handler_seconds.labels(durable, "batch")

    async def timed(events: Sequence[Event[Any]]) -> set[str]:
        start = time.perf_counter()
        spans = (
            [
                telemetry.processing_span(
                    event.nats_subject,
                    {"id": event.id, "type": event.type, "subject": event.subject},
                    durable,
                    event.traceparent,
                )
                for event in events
            ]
            if telemetry.tracing()
            else []
        )
        failed: BaseException | None = None
        try:
            return await handler(events)
        except BaseException as exc:
            failed = exc
            raise
        finally:
            elapsed = time.perf_counter() - start
            child.observe(elapsed)
            for n, event in enumerate(events):
                span = spans[n] if spans else None
                if span is not None and failed is not None:
                    span.record_exception(failed)
                    span.set_status(Status(StatusCode.ERROR, type(failed).__name__))
                if not log_events:
                    if span is not None:
                        span.end()
                    continue
                token = telemetry.bind_correlation(event.correlationid)
                try:
                    with trace.use_span(span, end_on_exit=True) if span else nullcontext():
                        events_log.info(
                            "%s handled %s %s in a batch of %d (%.1f ms)", durable, event.type,
                            event.id, len(events), elapsed * 1000,
                        )  # fmt: skip
                finally:
                    telemetry.unbind_correlation(token)

    return timed


def observed(
    durable: str, handler: EventHandler, metrics: BusMetrics, log_events: bool = False
) -> EventHandler:
    """The handler inside the event's correlation id (and a "process" span when tracing),
    timed; with GILIRAN_LOG_EVENTS one log line per handled event (~30 µs each, so off by
    default). Kept lean: it runs for every event (bench/observe.py measures it)."""
    seconds = metrics.handler_seconds
    by_type: dict[str, Any] = {}  # labelled children: labels() takes a lock and a tuple per call

    async def timed(event: Event[Any]) -> object:
        start = time.perf_counter()
        try:
            return await handler(event)
        finally:
            elapsed = time.perf_counter() - start
            child = by_type.get(event.type)
            if child is None:
                child = by_type[event.type] = seconds.labels(durable, event.type)
            child.observe(elapsed)
            if log_events:
                events_log.info(
                    "%s handled %s %s in %.1f ms", durable, event.type, event.id, elapsed * 1000
                )

    async def run(event: Event[Any]) -> object:
        token = telemetry.bind_correlation(event.correlationid)
        try:
            if not telemetry.tracing():
                return await timed(event)
            attributes = {"id": event.id, "type": event.type, "subject": event.subject}
            with telemetry.processing(event.nats_subject, attributes, durable, event.traceparent):
                return await timed(event)
        finally:
            telemetry.unbind_correlation(token)

    return run


def _audit_keys(settings: Settings) -> AuditKeys:
    keys = AuditKeys.parse(settings.audit_key.get_secret_value() if settings.audit_key else None)
    if keys.demo:
        log.warning("GILIRAN_AUDIT_KEY not set: the audit trail is keyed with the demo key")
    return keys


def _session_key(settings: Settings) -> str:
    if settings.session_key is not None and settings.session_key.get_secret_value():
        return settings.session_key.get_secret_value()
    # Demo without a key: a random one per process (sessions do not survive a restart, and a
    # login at one service is not seen by another); start() refuses this outside demo mode.
    return secrets.token_urlsafe(32)


def ops_router(runtime: ServiceRuntime) -> APIRouter:
    router = APIRouter(tags=["ops"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.service}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ready = all(checks.values())
        return JSONResponse(
            {"ready": ready, "service": runtime.service, "checks": checks},
            status_code=200 if ready else 503,
        )

    # Dead letters name sites, event types and failure reasons: for the engineers on call and
    # auditors only (probes and scrapes above carry no credentials and stay open).
    on_call = Depends(requires(Role.ADMIN, Role.AUDITOR, site_from=None))

    @router.get("/ops/dead-letters", dependencies=[on_call])
    async def list_dead_letters(limit: int = Query(default=100, ge=1, le=1000)) -> JSONResponse:
        """The messages this service could not handle, newest `limit`, with the reason each was
        parked (never their content: it may hold personal data)."""
        if not runtime.bus_started.is_set() or not runtime.broker.connection.is_connected:
            return problem_response(
                503,
                "bus_unavailable",
                "Bus pesan sedang tidak tersedia. Silakan coba lagi sebentar lagi.",
                "The message bus is unavailable. Please try again shortly.",
            )
        parked = await dead_letters(jetstream(runtime.broker), runtime.service, limit=limit)
        return JSONResponse(
            {
                "service": runtime.service,
                "count": len(parked),
                "dead_letters": [asdict(p) for p in parked],
            }
        )

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(runtime.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def problem_response(
    status: int, code: str, message_id: str, message_en: str, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "error": {"code": code, "message_id": message_id, "message_en": message_en, **extra}
    }
    return JSONResponse(body, status_code=status)


T = TypeVar("T")


def from_app_state(name: str, kind: type[T]) -> Callable[[Request], T]:
    """A FastAPI dependency handing an endpoint `app.state.<name>`: the object of type `kind`
    the composition root made once (ADR 0183: module-level routers; a test swaps it with
    `app.dependency_overrides`)."""

    def dependency(request: Request) -> T:
        return cast(T, getattr(request.app.state, name))

    dependency.__name__ = f"app_state_{name}"
    return dependency


def create_http_app(
    runtime: ServiceRuntime,
    *,
    title: str,
    routers: list[APIRouter],
    static: Path | None = None,
) -> FastAPI:
    """The service's FastAPI app: ops routes, sign-in, the audit trail, its own routers, the
    page scripts under /static/ (`static`), security headers and the body limit."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    # FastAPI's own telemetry stays off (ADR 0208): ObservedHttp makes the one SERVER span, by
    # route template (ADR 0091). FastAPI's native one would be a second SERVER span per request
    # (and three operation spans) with `url.path`, the raw path: a status link's token.
    app = FastAPI(
        title=title,
        version="1",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    app.state.auth = runtime.auth
    # /healthz, /readyz and /metrics stay open: probes and Prometheus carry no credentials and
    # these answer nothing personal (docs/security.md).
    app.include_router(ops_router(runtime))
    app.include_router(login_router(runtime.auth))
    app.include_router(audit_router(runtime.audit))
    for router in routers:
        app.include_router(router)
    if static is not None:
        app.mount("/static", StaticFiles(directory=static), name="static")
    app.add_middleware(BodyLimit, limit=runtime.settings.max_body_bytes)
    app.add_middleware(SameOrigin, public_urls=[runtime.settings.public_url])
    app.add_middleware(SecurityHeaders)
    # Outermost: measures and correlates everything below, refusals included.
    app.add_middleware(ObservedHttp, duration=http_duration(runtime.registry))
    app.add_exception_handler(LoginRequired, login_redirect)

    @app.exception_handler(DomainError)
    async def on_domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return problem_response(exc.http_status, exc.code, exc.message_id, exc.message_en)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                "problem": e.get("msg"),
            }
            for e in exc.errors()
        ]
        return problem_response(
            422,
            "invalid_request",
            "Data permintaan tidak valid: periksa kolom yang disebutkan.",
            "The request data is invalid: check the fields listed.",
            details=details,
        )

    @app.exception_handler(PyMongoError)
    async def on_store_down(_: Request, exc: PyMongoError) -> JSONResponse:
        log.error("%s: store error: %s", runtime.service, exc)
        return problem_response(
            503,
            "store_unavailable",
            "Penyimpanan data sedang tidak tersedia. Silakan coba lagi sebentar lagi.",
            "The data store is unavailable. Please try again shortly.",
        )

    return app


def _subject_only(subject: str) -> None:
    """The subject list of `watches` (permissions) names id watches too; never called."""
