"""Composition root of the intake service."""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial
from pathlib import Path

import holidays
from fastapi import FastAPI

from giliran import telemetry
from giliran.auth.devices import devices_router
from giliran.catalogue import load_catalogue
from giliran.contracts import (
    CitizenContact,
    FeedbackSubmitted,
    RequestCancelled,
    RequestCheckedIn,
    RequestLinkRequested,
    RequestSubmitted,
)
from giliran.contracts.subjects import command_pattern
from giliran.push import Changes
from giliran.runtime import ServiceRuntime, create_http_app
from giliran.settings import Settings, is_loopback_url
from services.intake import admin_http, calendar_http, edge, http, pages, problems, subscribers
from services.intake.admin import Admin
from services.intake.fairs import FairPlans
from services.intake.handlers import Intake, Limits
from services.intake.privacy import NikCipher, own_key_problem
from services.intake.status import QueueStatus
from services.intake.store import RequestStore

log = logging.getLogger("giliran.intake")


def warn_if_phones_cannot_follow(settings: Settings) -> None:
    """Status links and the tickets' QR codes must open on a citizen's phone (ADR 0147)."""
    if settings.public_url and is_loopback_url(settings.public_url):
        log.warning(
            "GILIRAN_PUBLIC_URL=%s opens only on this box: the QR codes on printed tickets and "
            "the status links sent to citizens will not open on their phones. Set it to the "
            "box's address on the office network.",
            settings.public_url,
        )
    elif not settings.public_url:
        log.warning(
            "GILIRAN_PUBLIC_URL is not set: status links and ticket QR codes use the address each "
            "browser used, so a kiosk that opens %s prints QR codes no phone can open. Set it to "
            "the box's address on the office network.",
            settings.url_of("intake"),
        )


def _secret(value: object) -> str | None:
    """A SecretStr's value, with an empty one (compose's `${VAR:-}`) meaning unset."""
    raw = value.get_secret_value() if value is not None else ""  # type: ignore[attr-defined]
    return str(raw) or None


def build(settings: Settings) -> tuple[FastAPI, ServiceRuntime]:
    hash_key = _secret(settings.nik_hash_key)
    if hash_key is None:
        raise SystemExit(
            "GILIRAN_NIK_HASH_KEY is not set: intake needs a secret key for the keyed NIK hash "
            "(`giliran up` creates one in its data directory)."
        )
    warn_if_phones_cannot_follow(settings)
    runtime = ServiceRuntime("intake", settings)
    store = RequestStore(runtime.db)
    catalogue = load_catalogue(settings.catalogue_dir)
    changes = Changes()
    intake = Intake(
        store=store,
        catalogue=catalogue,
        # Indonesian public holidays plus cuti bersama (GOVERNMENT), named in Bahasa Indonesia;
        # years fill in on demand.
        holidays=holidays.country_holidays(
            "ID", categories=("public", "government"), language="id"
        ),
        nik_key=hash_key.encode(),
        wake=runtime.wake_relay,
        cipher=NikCipher.from_keys(_secret(settings.nik_encryption_key), hash_key.encode()),
        limits=Limits(
            ip_per_minute=settings.rate_ip_per_minute,
            phone_per_hour=settings.rate_phone_per_hour,
            exempt=frozenset(settings.rate_limit_exempt),
            checkin_ip_per_minute=settings.rate_checkin_ip_per_minute,
            checkin_failures_per_site_per_hour=settings.rate_checkin_failures_per_site_per_hour,
            resend_ip_per_hour=settings.rate_resend_ip_per_hour,
            resend_nik_per_hour=settings.rate_resend_nik_per_hour,
        ),
        purge_after_days=settings.purge_after_days,
        contact_retention=timedelta(hours=settings.contact_retention_hours),
        timezone=settings.timezone,
        on_change=changes.bump,
        # Taken out of the outbox together a moment later: one write for many registrations.
        relay=partial(runtime.relay_now, store.requests, remove_together=True),
    )

    async def own_nik_key() -> None:
        problem = own_key_problem(_secret(settings.nik_encryption_key))
        if problem:
            raise RuntimeError(problem)

    runtime.on_startup(own_nik_key)
    runtime.on_startup(store.ensure_indexes)

    async def adopt_rate_windows() -> None:
        # Phone windows counted in `rate_windows` before ADR 0211 still count until they close.
        await store.adopt_rate_windows(intake.clock())

    runtime.on_startup(adopt_rate_windows)
    if settings.demo:

        async def open_demo() -> None:
            await intake.open_demo_session(settings.demo_site)

        runtime.on_startup(open_demo)
    # Survey answers and their events live in the requests since ADR 0177: one outbox to poll.
    runtime.use_outbox(store.requests)

    async def adopt_feedback_outbox() -> None:
        await store.adopt_feedback_outbox()

    runtime.on_startup(adopt_feedback_outbox)
    if not settings.edge_hub:  # the hub's intake holds no citizen's request to follow
        subscribers.register(runtime, intake)
    runtime.publishes(
        RequestSubmitted,
        CitizenContact,
        RequestCheckedIn,
        RequestCancelled,
        RequestLinkRequested,
        FeedbackSubmitted,
    )

    async def purge_personal_data() -> None:
        await intake.purge()

    runtime.every(settings.purge_interval_seconds, purge_personal_data)

    async def lapse_unchecked() -> None:
        await intake.lapse_unchecked()

    runtime.every(settings.lapse_interval_seconds, lapse_unchecked)

    runtime.sends(command_pattern("queue", "request_status"))

    async def ask_queue(subject: str, payload: bytes, seconds: float) -> bytes:
        # The correlation id and trace context travel with the command (FastStream's telemetry
        # middleware on the queue's side continues the trace).
        reply = await runtime.broker.connection.request(
            subject, payload, timeout=seconds, headers=telemetry.outgoing_headers() or None
        )
        return bytes(reply.data)

    status = http.Status(
        intake, QueueStatus(ask_queue, settings.status_query_timeout_seconds), changes
    )
    links = http.Links(settings.public_url)
    api = http.router(intake, status, links, wait_seconds=settings.ticket_wait_seconds)
    page = pages.router(
        intake,
        status,
        links,
        wait_seconds=settings.ticket_wait_seconds,
        printers=settings.kiosk_printers,
    )
    # Edge site mode (docs/edge.md): the hub sends its calendar changes down, a site applies them.
    admin = Admin(intake, edge.hub_announcer(runtime) if settings.edge_hub else None)
    if settings.edge_site:
        runtime.every(1.0, edge.CalendarFollower(runtime, Admin(intake), settings.edge_site).poll)
    admin_api, admin_page = admin_http.routers(admin, runtime.audit)
    calendar_api, calendar_page = calendar_http.routers(intake, FairPlans(admin), runtime.audit)

    def counters(site: str) -> list[tuple[str, str]]:
        spec = catalogue.site(site)
        if spec is None:
            raise KeyError(site)
        return [(c.id, c.name.id) for c in spec.counters]

    # The devices page and the pairing links live here, on the public address's default route.
    paired = devices_router(runtime.auth, runtime.audit, settings, counters)
    app = create_http_app(
        runtime,
        title="Giliran intake",
        routers=[api, admin_api, calendar_api, page, admin_page, calendar_page, paired],
        static=Path(__file__).parent / "static",
    )
    problems.install(app)
    app.state.intake = intake
    app.state.changes = changes
    return app, runtime
