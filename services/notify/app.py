"""Composition root of the notify service."""

from __future__ import annotations

from fastapi import FastAPI

from giliran.catalogue import load_catalogue
from giliran.contracts import NotificationFailed, NotificationReceipt, NotificationSent, utcnow
from giliran.runtime import ServiceRuntime, create_http_app
from giliran.settings import Settings
from services.notify import http, subscribers
from services.notify.channels import build_channel
from services.notify.config import load_notify_config
from services.notify.domain import Renderer
from services.notify.handlers import ChannelWorker
from services.notify.metrics import NotifyMetrics
from services.notify.store import DeliveryStore

PURGE_EVERY_SECONDS = 600


def build(settings: Settings) -> tuple[FastAPI, ServiceRuntime]:
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
    workers = [
        ChannelWorker(
            channel=build_channel(channel),
            retry=channel.retry,
            store=store,
            renderer=renderer,
            config=config,
            wake=runtime.wake_relay,
            public_url=settings.public_url,
            metrics=metrics,
        )
        for channel in config.enabled
    ]
    subscribers.register(runtime, workers)
    runtime.publishes(NotificationSent, NotificationFailed, NotificationReceipt)

    async def purge_contacts() -> None:
        await store.purge_contacts(utcnow())

    runtime.every(PURGE_EVERY_SECONDS, purge_contacts)
    api = http.router(
        store,
        {w.channel.name: w for w in workers},
        runtime.audit,
        receipts_per_minute=config.receipts_per_minute,
    )
    app = create_http_app(runtime, title="Giliran notify", routers=[api])
    app.state.notify_store = store
    app.state.workers = workers
    return app, runtime
