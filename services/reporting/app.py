"""Composition root of the reporting service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from giliran.catalogue import load_catalogue
from giliran.runtime import ServiceRuntime, create_http_app
from giliran.settings import Settings
from services.reporting import history_http, http, subscribers
from services.reporting.handlers import Reporting
from services.reporting.history import History
from services.reporting.store import FactStore

FILL_RETRY_SECONDS = 60.0  # a fill that failed is tried again after this long


def build(settings: Settings) -> tuple[FastAPI, ServiceRuntime]:
    runtime = ServiceRuntime("reporting", settings)
    store = FactStore(runtime.db)
    runtime.on_startup(store.ensure_indexes)
    reporting = Reporting(
        store=store,
        timezone=settings.timezone,
        target_wait_minutes=settings.target_wait_minutes,
        filling_notification_cells=True,
    )

    async def fill_cells() -> None:
        """Days folded before notification cells existed (ADR 0224), in the background once
        the service runs (ADR 0229): HTTP and the consumer do not wait for it, the summaries say
        their notification figures may be short until it is done, and a fill that failed (the
        store away) is tried again later; once done, nothing more."""
        if reporting.filling_notification_cells:
            await store.fill_cells(settings.timezone)
            reporting.filling_notification_cells = False

    runtime.every(FILL_RETRY_SECONDS, fill_cells)
    history = History(
        store=store,
        catalogue=load_catalogue(settings.catalogue_dir),  # site names and programmes
        timezone=settings.timezone,
        target_wait_minutes=settings.target_wait_minutes,
    )
    subscribers.register(runtime, reporting)
    app = create_http_app(
        runtime,
        title="Giliran reporting",
        routers=[http.api, history_http.api],
        static=Path(__file__).parent / "static",
    )
    # What the module-level routers' dependencies hand their endpoints.
    app.state.reporting = reporting
    app.state.history = history
    return app, runtime
