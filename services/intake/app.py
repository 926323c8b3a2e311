"""Composition root of the intake service."""

from __future__ import annotations

import holidays
from fastapi import FastAPI

from giliran.catalogue import load_catalogue
from giliran.contracts import RequestSubmitted
from giliran.runtime import ServiceRuntime, create_http_app
from giliran.settings import Settings
from services.intake import http, subscribers
from services.intake.handlers import Intake
from services.intake.store import RequestStore


def build(settings: Settings) -> tuple[FastAPI, ServiceRuntime]:
    if settings.nik_hash_key is None:
        raise SystemExit(
            "GILIRAN_NIK_HASH_KEY is not set: intake needs a secret key for the keyed NIK hash "
            "(`giliran up` creates one in its data directory)."
        )
    runtime = ServiceRuntime("intake", settings)
    store = RequestStore(runtime.db)
    catalogue = load_catalogue(settings.catalogue_dir)
    intake = Intake(
        store=store,
        catalogue=catalogue,
        # Indonesian public holidays plus cuti bersama (GOVERNMENT); years fill in on demand.
        holidays=holidays.country_holidays("ID", categories=("public", "government")),
        nik_key=settings.nik_hash_key.get_secret_value().encode(),
        wake=runtime.wake_relay,
    )
    runtime.on_startup(store.ensure_indexes)
    if settings.demo:

        async def open_demo() -> None:
            await intake.open_demo_session(settings.demo_site)

        runtime.on_startup(open_demo)
    runtime.use_outbox(store.requests)
    subscribers.register(runtime, intake)
    runtime.publishes(RequestSubmitted)
    api = http.router(
        intake, public_url=settings.public_url, wait_seconds=settings.ticket_wait_seconds
    )
    app = create_http_app(runtime, title="Giliran intake", routers=[api])
    app.state.intake = intake
    return app, runtime
