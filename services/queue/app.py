"""Composition root of the queue service."""

from __future__ import annotations

from fastapi import FastAPI

from giliran.catalogue import load_catalogue
from giliran.contracts import TicketCalled, TicketCompleted, TicketIssued
from giliran.runtime import ServiceRuntime, create_http_app
from giliran.settings import Settings
from services.queue import http, subscribers
from services.queue.handlers import Queue
from services.queue.store import TicketStore


def build(settings: Settings) -> tuple[FastAPI, ServiceRuntime]:
    runtime = ServiceRuntime("queue", settings)
    store = TicketStore(runtime.db)
    runtime.on_startup(store.ensure_indexes)
    runtime.use_outbox(store.tickets)
    queue = Queue(
        store=store, catalogue=load_catalogue(settings.catalogue_dir), wake=runtime.wake_relay
    )
    subscribers.register(runtime, queue)
    runtime.publishes(TicketIssued, TicketCalled, TicketCompleted)
    app = create_http_app(runtime, title="Giliran queue", routers=[http.router(queue)])
    app.state.queue = queue
    return app, runtime
