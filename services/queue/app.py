"""Composition root of the queue service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from giliran.catalogue import load_catalogue
from giliran.contracts import TICKET_EVENTS, CounterClosed, CounterOpened, Event
from giliran.contracts.subjects import event_pattern
from giliran.runtime import ServiceRuntime, create_http_app
from giliran.settings import Settings
from giliran.store import Collection, Document
from services.queue import domain, http, subscribers
from services.queue.desk import Desk, DeskPolicy
from services.queue.handlers import Queue
from services.queue.metrics import QueueMetrics
from services.queue.store import TicketStore
from services.queue.voice import Announcer

HEAL_SECONDS = 30.0


def build(settings: Settings) -> tuple[FastAPI, ServiceRuntime]:
    runtime = ServiceRuntime("queue", settings)
    store = TicketStore(runtime.db)
    runtime.on_startup(store.ensure_indexes)
    runtime.use_outbox(store.tickets, store.counters)
    # A counter's events leave at once; the relay reads only the outbox written to.
    store.wake_relay = runtime.wake_relay

    async def hand_over(
        collection: Collection,
        doc_id: str,
        events: Sequence[Event[Any]],
        outbox: Mapping[str, Document] | None,
    ) -> None:
        # A ticket's events are published by the task that wrote them, taken out of their
        # outboxes together a moment later (ADR 0193): no relay read after each write. Left to
        # the relay, woken, when publishing fails. Awaited, not in a task of its own: a task per
        # event let counters outrun the relay, and notifications fell seconds behind (p50 0.05 →
        # 6 s in two minutes at 20/s, when each event's audit record was appended before it was
        # published; ADR 0210 moved that after). Awaited, a slow bus holds the click instead;
        # a bounded hand-over queue would bound both (not built).
        await runtime.relay_now(collection, doc_id, events, outbox=outbox, remove_together=True)

    store.hand_over = hand_over
    queue = Queue(
        store=store,
        catalogue=load_catalogue(settings.catalogue_dir),
        default_service=timedelta(minutes=settings.queue_default_service_minutes),
    )
    desk = Desk(
        queue,
        DeskPolicy(
            call=domain.policy_from(settings),
            no_show_after_recalls=settings.queue_no_show_after_recalls,
            recheck_grace=timedelta(minutes=settings.queue_recheck_grace_minutes),
            recheck_penalty=timedelta(minutes=settings.queue_recheck_penalty_minutes),
        ),
    )
    subscribers.register(runtime, queue, desk)
    # Boards served by this instance refresh on calls made by any instance, and another
    # instance's write makes this one re-read the site's state (ADR 0160). A check-in is
    # written without an event of the queue's own: intake's event tells every instance.
    runtime.watch_ids("giliran.*.ticket.*", queue.on_event)
    runtime.watch_ids("giliran.*.counter.*", queue.on_event)
    runtime.watch_ids(event_pattern("request", "checked_in"), queue.on_event)
    runtime.every(HEAL_SECONDS, desk.heal)
    metrics = QueueMetrics.create(runtime.registry, settings.target_wait_minutes)

    async def observe_lines() -> None:
        await metrics.refresh(queue)

    runtime.every(settings.metrics_refresh_seconds, observe_lines)
    # The queue is the one publisher of every ticket event and of the counter events.
    runtime.publishes(*TICKET_EVENTS, CounterOpened, CounterClosed)
    announcer = Announcer(settings.voice_command)
    app = create_http_app(
        runtime,
        title="Giliran queue",
        routers=[http.router(queue, desk, runtime.audit, metrics.board_connections, announcer)],
        static=Path(__file__).parent / "static",
    )
    app.state.queue = queue
    app.state.desk = desk
    app.state.queue_metrics = metrics
    app.state.announcer = announcer
    return app, runtime
