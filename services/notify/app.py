"""Composition root of the notify service."""

from __future__ import annotations

from fastapi import FastAPI

from giliran.contracts import NotificationSent
from giliran.runtime import ServiceRuntime, create_http_app
from giliran.settings import Settings
from services.notify import http, subscribers
from services.notify.channels import ConsoleChannel
from services.notify.domain import Renderer
from services.notify.handlers import Notifier
from services.notify.store import DeliveryStore


def build(settings: Settings) -> tuple[FastAPI, ServiceRuntime]:
    runtime = ServiceRuntime("notify", settings)
    store = DeliveryStore(runtime.db)
    runtime.on_startup(store.ensure_indexes)
    runtime.use_outbox(store.deliveries)
    notifier = Notifier(
        store=store,
        channels=[ConsoleChannel()],
        renderer=Renderer(timezone=settings.timezone),
        wake=runtime.wake_relay,
        public_url=settings.public_url,
    )
    subscribers.register(runtime, notifier)
    runtime.publishes(NotificationSent)
    app = create_http_app(runtime, title="Giliran notify", routers=[http.router(store)])
    return app, runtime
