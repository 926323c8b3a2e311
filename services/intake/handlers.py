"""Intake use cases: submit a request, follow its tickets, open the demo session."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from giliran.catalogue import Catalogue, SiteDef
from giliran.contracts import (
    Channel,
    CitizenRef,
    Event,
    Language,
    RequestSubmitted,
    TicketFacts,
    TicketStatus,
    TicketView,
    new_event,
    new_id,
    utcnow,
)
from giliran.contracts.events import ServiceCode
from giliran.contracts.subjects import SiteSlug
from giliran.errors import NotFound
from giliran.store import Document, from_instant, instant
from services.intake import domain
from services.intake.store import RequestStore

SOURCE = "intake"


class SubmitRequest(BaseModel):
    """What a citizen (online) or a kiosk sends to register."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    site: SiteSlug
    services: list[ServiceCode] = Field(min_length=1, max_length=10)
    name: str = Field(min_length=1, max_length=100)
    nik: str | None = Field(default=None, max_length=32)
    phone: str | None = Field(default=None, max_length=32)
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    consent: bool = Field(
        default=False, description="the citizen agrees to be notified by SMS/WhatsApp/e-mail"
    )
    channel: Channel = Channel.ONLINE
    language: Language = Language.ID


class RequestNotFound(NotFound):
    code = "request_not_found"

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"Permohonan '{request_id}' tidak ditemukan.", f"Request '{request_id}' not found."
        )


@dataclass
class Intake:
    store: RequestStore
    catalogue: Catalogue
    holidays: Collection[date]
    nik_key: bytes
    wake: Callable[[], None]
    clock: Callable[[], datetime] = utcnow
    _waiters: dict[str, asyncio.Event] = field(default_factory=dict)

    def _site(self, slug: str) -> SiteDef:
        site = self.catalogue.site(slug)
        if site is None:
            raise domain.UnknownSite(slug)
        return site

    async def _adhoc_sessions(self, site: str, now: datetime) -> list[domain.SessionWindow]:
        return [
            domain.SessionWindow(
                session_id=d["_id"],
                site=d["site"],
                local_date=date.fromisoformat(d["local_date"]),
                opens_at=from_instant(d["opens_at"]),
                closes_at=from_instant(d["closes_at"]),
                kind="adhoc",
            )
            for d in await self.store.open_adhoc_sessions(site, now)
        ]

    async def submit(self, command: SubmitRequest) -> tuple[Document, tuple[str, ...]]:
        """Validate, store the request and its `request.submitted` event in one write."""
        site = self._site(command.site)
        unknown = [code for code in command.services if site.service(code) is None]
        if unknown:
            raise domain.UnknownService(site.site, unknown)
        services = list(dict.fromkeys(command.services))  # one ticket per service, order kept
        now = self.clock()
        today = now.astimezone(ZoneInfo(site.timezone)).date()
        nik = domain.check_nik(command.nik, today) if command.nik else None
        phone = domain.normalize_phone(command.phone) if command.phone else None
        # Contact details serve notifications only: without consent they are not kept.
        warnings: list[str] = list(nik.warnings) if nik else []
        if not command.consent and (phone or command.email):
            phone, warnings = None, [*warnings, "contact_ignored_without_consent"]
        email = command.email if command.consent else None
        session = domain.session_for_registration(
            site, now, self.holidays, await self._adhoc_sessions(site.site, now)
        )
        request_id = new_id()
        citizen = CitizenRef(
            nik_masked=nik.masked if nik else None,
            nik_hash=domain.nik_hash(nik.nik, self.nik_key) if nik else None,
            consent=command.consent,
            phone=phone,
            email=email,
            language=command.language,
        )
        event = new_event(
            RequestSubmitted(
                request_id=request_id,
                session_id=session.session_id,
                services=services,
                channel=command.channel,
                citizen=citizen,
                submitted_at=now,
                session_opens_at=session.opens_at,
                session_closes_at=session.closes_at,
            ),
            site=site.site,
            source=SOURCE,
            at=now,
        )
        doc: Document = {
            "_id": request_id,
            "site": site.site,
            "session_id": session.session_id,
            "services": services,
            "channel": command.channel.value,
            "language": command.language.value,
            "name": command.name,
            # The full NIK is never stored: its mask for display, its keyed hash to recognise it.
            "nik_masked": citizen.nik_masked,
            "nik_hash": citizen.nik_hash,
            "phone": phone,
            "email": email,
            "consent": command.consent,
            "submitted_at": instant(now),
            "tickets": {},
        }
        await self.store.insert(doc, [event])
        self.wake()
        return doc, tuple(warnings)

    async def record_ticket(self, event: Event[TicketFacts]) -> None:
        """Follow a ticket's status from the queue's events (idempotent, order-tolerant)."""
        ticket = event.data
        status = ticket.status_after
        counter = getattr(ticket, "counter", None)

        def change(tickets: dict[str, Document]) -> dict[str, Document] | None:
            current = tickets.get(ticket.ticket_id)
            old = TicketStatus(current["status"]) if current else None
            if not domain.newer_status(old, status) or (
                current is not None and current.get("event_time", "") > event.time.isoformat()
            ):
                return None
            tickets[ticket.ticket_id] = {
                "ticket_id": ticket.ticket_id,
                "number": ticket.number,
                "service": ticket.service,
                "status": status.value,
                "counter": counter or (current or {}).get("counter"),
                "event_time": event.time.isoformat(),
            }
            return tickets

        known = await self.store.update_tickets(ticket.request_id, change)
        if not known:
            raise RequestNotFound(ticket.request_id)
        waiter = self._waiters.get(ticket.request_id)
        if waiter is not None:
            waiter.set()

    async def wait_for_tickets(self, request_id: str, wait_seconds: float) -> Document:
        """The request once every service has a ticket, or as it stands after `wait_seconds`.
        Woken by this process's ticket consumer; polls too, for tickets another instance saw."""
        waiter = self._waiters.setdefault(request_id, asyncio.Event())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        try:
            while True:
                doc = await self.store.get(request_id)
                if doc is None:
                    raise RequestNotFound(request_id)
                if len(doc.get("tickets") or {}) >= len(doc["services"]):
                    return doc
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return doc
                waiter.clear()
                try:
                    async with asyncio.timeout(min(remaining, 0.25)):
                        await waiter.wait()
                except TimeoutError:
                    pass
        finally:
            self._waiters.pop(request_id, None)

    async def get(self, request_id: str) -> Document:
        doc = await self.store.get(request_id)
        if doc is None:
            raise RequestNotFound(request_id)
        return doc

    async def open_demo_session(self, slug: str) -> domain.SessionWindow:
        window = domain.demo_session(self._site(slug), self.clock())
        await self.store.save_adhoc_session(
            {
                "_id": window.session_id,
                "site": window.site,
                "local_date": window.local_date.isoformat(),
                "opens_at": instant(window.opens_at),
                "closes_at": instant(window.closes_at),
                "kind": window.kind,
            }
        )
        return window


def tickets_of(doc: Document) -> list[TicketView]:
    """The request's tickets in the order the citizen asked for the services."""
    order = {code: i for i, code in enumerate(doc["services"])}
    tickets = sorted((doc.get("tickets") or {}).values(), key=lambda t: order.get(t["service"], 99))
    return [
        TicketView(
            ticket_id=t["ticket_id"],
            request_id=doc["_id"],
            number=t["number"],
            service=t["service"],
            status=TicketStatus(t["status"]),
            counter=t.get("counter"),
        )
        for t in tickets
    ]
