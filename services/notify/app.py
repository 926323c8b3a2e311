"""Composition root of the notify service."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI

from giliran.catalogue import load_catalogue
from giliran.contracts import (
    Event,
    NotificationFailed,
    NotificationReceipt,
    NotificationSent,
    utcnow,
)
from giliran.runtime import ServiceRuntime, create_http_app
from giliran.settings import Settings
from giliran.store import Document
from services.notify import http, subscribers
from services.notify.channels import build_channel
from services.notify.config import load_notify_config
from services.notify.contacts import ContactBook
from services.notify.domain import Renderer
from services.notify.handlers import ChannelWorker
from services.notify.metrics import NotifyMetrics
from services.notify.receipts import AddressWindow
from services.notify.store import DeliveryStore

PURGE_EVERY_SECONDS = 600.0


def purge_every(retention_hours: float) -> float:
    """Every 10 minutes, or a tenth of the retention when that is shorter (tests use seconds):
    a contact outlives its retention by at most this."""
    return min(PURGE_EVERY_SECONDS, retention_hours * 3600 / 10)


def build(settings: Settings) -> tuple[FastAPI, ServiceRuntime]:
    # httpx logs every request's URL at INFO; a gateway called GET-style has the citizen's number
    # and the message (status link included) in its query string. Its warnings still show.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = load_notify_config(settings.notify_config)
    runtime = ServiceRuntime("notify", settings)
    store = DeliveryStore(runtime.db)
    runtime.on_startup(store.ensure_indexes)
    runtime.use_outbox(store.deliveries)
    # The catalogue says what each service costs: messages state it (GRATIS only when free).
    renderer = Renderer(
        timezone=settings.timezone, catalogue=load_catalogue(settings.catalogue_dir)
    )
    metrics = NotifyMetrics.create(runtime.registry)
    # One contact book per process: every channel reads the contact the contact-book consumer
    # filed, and a contact is read from the store once, not once per message.
    contacts = ContactBook(store)

    async def relay(
        delivery_id: str, events: Sequence[Event[Any]], outbox: Mapping[str, Document] | None
    ) -> None:
        # The delivery's whole outbox as the write left it: an older event still pending (a
        # `failed` while NATS was away, before the operator's retry sent it) goes out first.
        # Taken out of the outbox together, a moment later: one write for many messages.
        await runtime.relay_now(
            store.deliveries, delivery_id, events, outbox=outbox, remove_together=True
        )

    workers = [
        ChannelWorker(
            channel=build_channel(channel),
            retry=channel.retry,
            store=store,
            renderer=renderer,
            config=config,
            wake=runtime.wake_relay,
            relay=relay,
            contacts=contacts,
            public_url=settings.public_url,
            metrics=metrics,
            retention_hours=settings.contact_retention_hours,
        )
        for channel in config.enabled
    ]
    subscribers.register(runtime, workers)
    runtime.publishes(NotificationSent, NotificationFailed, NotificationReceipt)

    async def purge_contacts() -> None:
        await store.purge_contacts(utcnow())

    runtime.every(purge_every(settings.contact_retention_hours), purge_contacts)
    app = create_http_app(runtime, title="Giliran notify", routers=[http.api])
    # What the module-level endpoints are handed (ADR 0183).
    app.state.operations = http.Operations(
        store=store,
        workers={w.channel.name: w for w in workers},
        audit=runtime.audit,
        receipts_window=AddressWindow(config.receipts_per_minute),
    )
    app.state.notify_store = store
    app.state.workers = workers
    return app, runtime
