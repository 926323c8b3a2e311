"""The state every intake use case shares: store, catalogue, holidays, keys, clock; sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from giliran.catalogue import Catalogue, SiteDef
from giliran.contracts import Event, utcnow
from giliran.store import Document, from_instant
from services.intake import domain, sessions
from services.intake.errors import RequestNotFound
from services.intake.models import BUDGET, Limits, calendar_from_doc
from services.intake.privacy import NikCipher
from services.intake.store import RequestStore
from services.intake.tickets import TicketWait


@dataclass
class IntakeBase:
    """Intake's collaborators and the session look-ups all use cases need."""

    store: RequestStore
    catalogue: Catalogue
    holidays: Collection[date]
    nik_key: bytes
    wake: Callable[[], None]
    cipher: NikCipher | None = None
    limits: Limits = field(default_factory=Limits)
    purge_after_days: int = 30
    # How long notify and the bus may hold a citizen's contact after the request (ADR 0115).
    contact_retention: timedelta = timedelta(hours=48)
    # The zone whose calendar days the retention counts (sessions' local dates).
    timezone: str = "Asia/Jakarta"
    clock: Callable[[], datetime] = utcnow
    # Kiosk answers waiting for their tickets, by request id (see Intake.wait_for_tickets).
    _waiters: dict[str, TicketWait] = field(default_factory=dict)
    # Called with a request id whenever one of its tickets changes (the status page's push).
    on_change: Callable[[str], None] = lambda _request_id: None
    # Publishes events just written to a request's outbox at once (ServiceRuntime.relay_now,
    # ADR 0178); None: the relay is woken to find them.
    relay: Callable[[str, Sequence[Event[Any]]], Awaitable[None]] | None = None
    _relaying: set[asyncio.Task[None]] = field(default_factory=set)

    def publish_now(self, request_id: str, events: Sequence[Event[Any]]) -> None:
        """Hand the events just written with a request to the relay at once, in a task: the
        caller's answer (a kiosk waiting for its ticket) registers its wait before the ticket
        can come back. If that fails they stay in the outbox and the relay is woken for them."""
        if self.relay is None:
            self.wake()
            return
        relay = self.relay

        async def publish() -> None:
            try:
                await relay(request_id, events)
            except Exception:  # the store is away for the removal: the relay's drain does it
                self.wake()

        task = asyncio.create_task(publish(), name=f"publish-{request_id}")
        self._relaying.add(task)
        task.add_done_callback(self._relaying.discard)

    def site(self, slug: str) -> SiteDef:
        site = self.catalogue.site(slug)
        if site is None:
            raise domain.UnknownSite(slug)
        return site

    async def overrides(self, site: str) -> sessions.CalendarOverrides:
        return calendar_from_doc(await self.store.calendar_of(site))

    async def _adhoc_sessions(self, site: str, now: datetime) -> list[sessions.SessionWindow]:
        return [
            sessions.SessionWindow(
                session_id=d["_id"],
                site=d["site"],
                local_date=date.fromisoformat(d["local_date"]),
                opens_at=from_instant(d["opens_at"]),
                closes_at=from_instant(d["closes_at"]),
                kind="adhoc",
                label="Sesi demo",
            )
            for d in await self.store.open_adhoc_sessions(site, now)
        ]

    async def upcoming(self, slug: str, days: int = 30) -> list[sessions.SessionWindow]:
        site, now = self.site(slug), self.clock()
        overrides = await self.overrides(slug)
        found = sessions.upcoming_sessions(
            site, now, self.holidays, overrides, days=days, include_cancelled=True
        )
        known = {w.session_id for w in found}
        adhoc = [
            replace(w, cancelled=w.session_id in overrides.cancelled)
            for w in await self._adhoc_sessions(slug, now)
            if w.session_id not in known
        ]
        return sorted([*adhoc, *found], key=lambda w: w.opens_at)

    async def window_of(self, site: SiteDef, session_id: str) -> sessions.SessionWindow | None:
        """The session a request belongs to (scheduled from its id, or a stored ad-hoc one)."""
        recent = await self._adhoc_sessions(site.site, self.clock() - timedelta(days=2))
        for window in recent:
            if window.session_id == session_id:
                return window
        try:
            day = datetime.strptime(session_id.removeprefix(f"{site.site}-"), "%Y%m%d").date()
        except ValueError:
            return None
        return sessions.scheduled_session(site, day, self.holidays, await self.overrides(site.site))

    async def places_left(
        self, site: SiteDef, window: sessions.SessionWindow
    ) -> dict[str, int | None]:
        """Places each service still has in a session (None: no limit): its quota left, and
        no more than the session's counter-minutes left allow (ADR 0120)."""
        stored = {d["what"]: d for d in await self.store.quotas_of(window.session_id)}
        sandbox = window.kind == "adhoc"
        budget: int | None = None
        if site.capacity_minutes is not None and not sandbox:
            doc = stored.get(BUDGET)
            budget = int(doc["remaining"]) if doc else site.capacity_minutes
        left: dict[str, int | None] = {}
        for service in site.services:
            doc = stored.get(service.code)
            limit = doc["limit"] if doc else (None if sandbox else site.quota_of(service))
            places: int | None = None
            if limit is not None:
                places = max(int(doc["remaining"]) if doc else int(limit), 0)
            if budget is not None and service.minutes:
                by_time = max(budget // service.minutes, 0)
                places = by_time if places is None else min(places, by_time)
            left[service.code] = places
        return left

    # --- registration ------------------------------------------------------------------------

    async def get(self, request_id: str) -> Document:
        doc = await self.store.get(request_id)
        if doc is None:
            raise RequestNotFound(request_id)
        return doc

    async def by_token(self, token: str) -> Document:
        doc = await self.store.by_token(token) if len(token) <= 64 else None
        if doc is None:
            raise RequestNotFound(token[:8] + "…")
        return doc

    # --- survey --------------------------------------------------------------------------------
