"""Intake use cases for citizens: register (walk-in or booking), check in, follow tickets, answer
the survey; plus the purge of personal data after a session."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from giliran.catalogue import Catalogue, SiteDef
from giliran.contracts import (
    Channel,
    CitizenRef,
    Event,
    FeedbackSubmitted,
    Language,
    PriorityReason,
    RequestCheckedIn,
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
from giliran.errors import Unavailable
from giliran.store import Document, from_instant, instant
from services.intake import domain, sessions
from services.intake.errors import (
    CheckInRefused,
    FeedbackRefused,
    NikRequired,
    QuotaExhausted,
    RateLimited,
    RequestNotFound,
    SlotFull,
    UnknownCheckInCode,
)
from services.intake.privacy import PERSONAL_FIELDS, NikCipher, purge_before
from services.intake.store import RequestStore

SOURCE = "intake"
# Check-in codes: six characters a person can read out without confusing 0/O, 1/I, 2/Z, 5/S.
CODE_ALPHABET = "ACDEFHJKMNPQRTUVWXY3479"
CODE_LENGTH = 6
SessionId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,80}$")]


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
    session_id: SessionId | None = Field(
        default=None, description="book this session (see /api/v1/sites/{site}/sessions)"
    )
    appointment_at: AwareDatetime | None = Field(
        default=None, description="start of an appointment slot within the session"
    )
    priority: PriorityReason | None = Field(
        default=None, description="declared: disability, pregnancy, infant (elderly: from NIK)"
    )


class Scores(BaseModel):
    """SKM answers U1..U9 on the 1-4 scale of PermenPANRB 14/2017."""

    model_config = ConfigDict(extra="forbid")

    U1: int = Field(ge=1, le=4)
    U2: int = Field(ge=1, le=4)
    U3: int = Field(ge=1, le=4)
    U4: int = Field(ge=1, le=4)
    U5: int = Field(ge=1, le=4)
    U6: int = Field(ge=1, le=4)
    U7: int = Field(ge=1, le=4)
    U8: int = Field(ge=1, le=4)
    U9: int = Field(ge=1, le=4)


@dataclass(frozen=True)
class Limits:
    """Rate limits against bots: per client address a minute, per phone an hour."""

    ip_per_minute: int = 30
    phone_per_hour: int = 5
    exempt: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Submitted:
    doc: Document
    warnings: tuple[str, ...]
    duplicate: bool = False


def _calendar(doc: Document) -> sessions.CalendarOverrides:
    """The stored overrides of a site as the pure session rules take them."""

    def day(value: str) -> date:
        return date.fromisoformat(value)

    return sessions.CalendarOverrides(
        holidays_added={day(k): v for k, v in (doc.get("holidays_added") or {}).items()},
        holidays_removed=frozenset(day(v) for v in doc.get("holidays_removed") or []),
        closed={day(k): v for k, v in (doc.get("closed") or {}).items()},
        sessions_added={
            day(k): (time.fromisoformat(v["opens"]), time.fromisoformat(v["closes"]))
            for k, v in (doc.get("sessions_added") or {}).items()
        },
        cancelled=dict(doc.get("cancelled") or {}),
    )


@dataclass
class Intake:
    store: RequestStore
    catalogue: Catalogue
    holidays: Collection[date]
    nik_key: bytes
    wake: Callable[[], None]
    cipher: NikCipher | None = None
    limits: Limits = field(default_factory=Limits)
    purge_after_days: int = 30
    clock: Callable[[], datetime] = utcnow
    _waiters: dict[str, asyncio.Event] = field(default_factory=dict)
    # Called with a request id whenever one of its tickets changes (the status page's push).
    on_change: Callable[[str], None] = lambda _request_id: None

    def site(self, slug: str) -> SiteDef:
        site = self.catalogue.site(slug)
        if site is None:
            raise domain.UnknownSite(slug)
        return site

    async def overrides(self, site: str) -> sessions.CalendarOverrides:
        return _calendar(await self.store.calendar_of(site))

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

    # --- registration ------------------------------------------------------------------------

    async def _rate_limit(
        self, key: str, limit: int, window_seconds: int, what: tuple[str, str]
    ) -> None:
        """A fixed window counted in the store: correct across concurrent requests and across
        instances (an in-process bucket would give each instance its own allowance)."""
        now = self.clock()
        start = int(now.timestamp()) // window_seconds * window_seconds
        hits = await self.store.hit(key, str(start), now + timedelta(seconds=2 * window_seconds))
        if hits > limit:
            retry = max(start + window_seconds - int(now.timestamp()), 1)
            raise RateLimited(what[0], what[1], retry)

    def _keyed(self, value: str) -> str:
        return hmac.new(self.nik_key, value.encode(), hashlib.sha256).hexdigest()

    async def submit(self, command: SubmitRequest, client: str | None = None) -> Submitted:
        """Validate, claim places atomically, and store the request with its `request.submitted`
        event in one write. A NIK already registered for one of these services in the session
        gets its existing request back instead of a second one."""
        if client is not None and client not in self.limits.exempt:
            await self._rate_limit(
                f"ip:{client}", self.limits.ip_per_minute, 60, ("alamat ini", "this address")
            )
        site = self.site(command.site)
        unknown = [code for code in command.services if site.service(code) is None]
        if unknown:
            raise domain.UnknownService(site.site, unknown)
        services = list(dict.fromkeys(command.services))  # one ticket per service, order kept
        now = self.clock()
        today = now.astimezone(ZoneInfo(site.timezone)).date()
        nik = domain.check_nik(command.nik, today) if command.nik else None
        if nik is None and command.channel == Channel.ONLINE:
            needing = [c for c in services if (s := site.service(c)) and s.requires_nik]
            if needing:
                raise NikRequired(needing)
        phone = domain.normalize_phone(command.phone) if command.phone else None
        # Contact details serve notifications only: without consent they are not kept.
        warnings: list[str] = list(nik.warnings) if nik else []
        if not command.consent and (phone or command.email):
            phone, warnings = None, [*warnings, "contact_ignored_without_consent"]
        if phone is not None:
            await self._rate_limit(
                f"phone:{self._keyed(phone)}",
                self.limits.phone_per_hour,
                3600,
                ("nomor HP ini", "this phone number"),
            )
        email = command.email if command.consent else None
        overrides = await self.overrides(site.site)
        adhoc = await self._adhoc_sessions(site.site, now)
        chosen = next((w for w in adhoc if w.session_id == command.session_id), None)
        if command.session_id and chosen is None:
            chosen = sessions.session_for_booking(
                site, command.session_id, now, self.holidays, overrides
            )
        session = chosen or sessions.session_for_registration(
            site, now, self.holidays, adhoc, overrides
        )
        slot = None
        if command.appointment_at is not None:
            slot = sessions.check_slot(
                session, site.booking.slot_minutes, command.appointment_at, now, site.timezone
            )
        # A booking (a later day, or a slot) keeps its numbers out of the line until check-in.
        arrived = command.channel != Channel.ONLINE or (
            session.local_date <= today and slot is None
        )
        request_id = new_id()
        nik_hash = domain.nik_hash(nik.nik, self.nik_key) if nik else None
        session_date = session.local_date.isoformat()
        undo: list[Callable[[], Awaitable[None]]] = []
        try:
            if nik_hash is not None:
                for code in services:
                    existing = await self._claim_nik(
                        session.session_id, code, nik_hash, request_id, session_date
                    )
                    if existing is not None:
                        await self._undo(undo)
                        return Submitted(existing, ("duplicate_request",), duplicate=True)
                    undo.append(
                        partial(
                            self.store.release_nik, session.session_id, code, nik_hash, request_id
                        )
                    )
            for code in services:
                service = site.service(code)
                assert service is not None
                if not await self.store.claim_place(session.session_id, code, service.quota):
                    raise QuotaExhausted(code)
                undo.append(partial(self.store.release_place, session.session_id, code))
            if slot is not None:
                if not await self.store.claim_place(
                    session.session_id, f"slot-{slot}", site.booking.slot_capacity
                ):
                    raise SlotFull(f"{slot[:2]}.{slot[2:]}")
                undo.append(partial(self.store.release_place, session.session_id, f"slot-{slot}"))
            checkin_code = None
            if not arrived:
                checkin_code = await self._new_code(
                    site.site, session.session_id, request_id, session_date
                )
                undo.append(partial(self.store.release_code, site.site, checkin_code))
            priority = domain.priority_for(command.priority, nik, session.local_date)
            citizen = CitizenRef(
                nik_masked=nik.masked if nik else None,
                nik_hash=nik_hash,
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
                    priority=priority,
                    appointment_at=command.appointment_at.astimezone(UTC)
                    if command.appointment_at
                    else None,
                    arrived=arrived,
                ),
                site=site.site,
                source=SOURCE,
                at=now,
            )
            doc: Document = {
                "_id": request_id,
                "site": site.site,
                "session_id": session.session_id,
                "session_date": session_date,
                "services": services,
                "channel": command.channel.value,
                "language": command.language.value,
                "name": command.name,
                # The NIK only encrypted; its mask for display, its keyed hash to recognise it.
                "nik_encrypted": self.cipher.encrypt(nik.nik) if nik and self.cipher else None,
                "nik_masked": citizen.nik_masked,
                "nik_hash": nik_hash,
                "phone": phone,
                "email": email,
                "consent": command.consent,
                "priority": priority.value if priority else None,
                "appointment_at": instant(command.appointment_at)
                if command.appointment_at
                else None,
                "slot": slot,
                "arrived": arrived,
                "checkin_code": checkin_code,
                "checked_in_at": None,
                "token": secrets.token_urlsafe(18),
                "submitted_at": instant(now),
                "tickets": {},
                "cancelled_at": None,
                "purged_at": None,
            }
            await self.store.insert(doc, [event])
        except BaseException:
            await self._undo(undo)
            raise
        self.wake()
        return Submitted(doc, tuple(warnings))

    async def _claim_nik(
        self, session_id: str, code: str, nik_hash: str, request_id: str, session_date: str
    ) -> Document | None:
        """Claim (session, service, NIK) for `request_id`; None once claimed, else the active
        request that holds it. A holder still being registered (claimed, not yet stored) is
        waited for; one that failed and let go, or was cancelled, is claimed over."""
        for _ in range(100):
            held = await self.store.claim_nik(session_id, code, nik_hash, request_id, session_date)
            if held is None:
                return None
            existing = await self.store.get(held)
            if existing is not None and existing.get("cancelled_at") is None:
                return existing
            if existing is not None:  # cancelled: its claim no longer counts
                await self.store.release_nik(session_id, code, nik_hash, held)
                continue
            await asyncio.sleep(0.02)
        raise Unavailable(
            "Pendaftaran dengan NIK ini sedang diproses. Coba lagi sebentar lagi.",
            "A registration with this NIK is being processed. Try again shortly.",
        )

    @staticmethod
    async def _undo(undo: list[Callable[[], Awaitable[None]]]) -> None:
        """Give back what a failed registration had claimed, newest first."""
        for step in reversed(undo):
            await step()

    async def _new_code(self, site: str, session_id: str, request_id: str, day: str) -> str:
        while True:
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            if await self.store.reserve_code(site, session_id, code, request_id, day):
                return code

    # --- check-in ----------------------------------------------------------------------------

    async def check_in(self, slug: str, scanned: str) -> tuple[Document, bool]:
        """A booking's holder at the kiosk: by the 6-character code or the QR (status link).
        Returns the request and whether this call checked it in (False: already in)."""
        site, now = self.site(slug), self.clock()
        text = scanned.strip()
        doc: Document | None = None
        token = re.search(r"/s/([A-Za-z0-9_-]{16,64})", text)
        if token is None and re.fullmatch(r"[A-Za-z0-9]{6}", text):
            found = await self.store.request_for_code(site.site, text.upper())
            doc = await self.store.get(found) if found else None
        else:
            doc = await self.store.by_token(token.group(1) if token else text)
        if doc is None or doc["site"] != site.site:
            raise UnknownCheckInCode()
        if doc.get("cancelled_at"):
            raise CheckInRefused("pendaftaran ini dibatalkan.", "this booking was cancelled.")
        if doc.get("arrived"):
            return doc, False
        window = await self.window_of(site, doc["session_id"])
        early = timedelta(minutes=site.booking.checkin_early_minutes)
        if window is None or not window.opens_at - early <= now < window.closes_at:
            opens = sessions.format_local(window.opens_at - early, site.timezone) if window else "-"
            opens_en = (
                sessions.format_local(window.opens_at - early, site.timezone, "en")
                if window
                else "-"
            )
            raise CheckInRefused(
                f"check-in untuk sesi ini dibuka {opens} sampai sesi selesai.",
                f"check-in for this session opens {opens_en} until the session closes.",
            )
        event = new_event(
            RequestCheckedIn(
                request_id=doc["_id"], session_id=doc["session_id"], checked_in_at=now
            ),
            site=site.site,
            source=SOURCE,
            at=now,
        )
        changed = await self.store.update_if(
            {"_id": doc["_id"], "arrived": False, "cancelled_at": None},
            {"arrived": True, "checked_in_at": instant(now)},
            [event],
        )
        self.wake()
        fresh = await self.store.get(doc["_id"])
        assert fresh is not None
        return fresh, changed

    # --- tickets -------------------------------------------------------------------------------

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
        self.on_change(ticket.request_id)

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

    async def by_token(self, token: str) -> Document:
        doc = await self.store.by_token(token) if len(token) <= 64 else None
        if doc is None:
            raise RequestNotFound(token[:8] + "…")
        return doc

    # --- survey --------------------------------------------------------------------------------

    async def submit_feedback(self, token: str, ticket_id: str, scores: Scores) -> Document:
        """One SKM response per completed ticket, published as `feedback.submitted`."""
        doc = await self.by_token(token)
        ticket = (doc.get("tickets") or {}).get(ticket_id)
        if ticket is None:
            raise FeedbackRefused("tiket tidak dikenal.", "unknown ticket.")
        if ticket["status"] != TicketStatus.COMPLETED.value:
            raise FeedbackRefused(
                "survei dibuka setelah layanan selesai.", "the survey opens once served."
            )
        now = self.clock()
        event = new_event(
            FeedbackSubmitted(
                feedback_id=ticket_id,
                request_id=doc["_id"],
                session_id=doc["session_id"],
                service=ticket["service"],
                scores=scores.model_dump(),
                submitted_at=now,
            ),
            site=doc["site"],
            source=SOURCE,
            at=now,
        )
        stored = {
            "_id": ticket_id,
            "request_id": doc["_id"],
            "session_id": doc["session_id"],
            "service": ticket["service"],
            "scores": scores.model_dump(),
            "submitted_at": instant(now),
        }
        if not await self.store.insert_feedback(stored, [event]):
            raise FeedbackRefused(
                "survei untuk tiket ini sudah diisi. Terima kasih!",
                "this ticket's survey was already answered. Thank you!",
            )
        self.wake()
        return stored

    # --- retention -----------------------------------------------------------------------------

    async def purge(self) -> int:
        """Blank the personal data of requests whose session is older than the retention
        period; the request itself (services, tickets, times) stays for the statistics."""
        now = self.clock()
        zone = ZoneInfo("Asia/Jakarta")
        before = purge_before(now.astimezone(zone).date(), self.purge_after_days).isoformat()
        purged = 0
        while batch := await self.store.to_purge(before):
            for doc in batch:
                await self.store.purge(doc["_id"], PERSONAL_FIELDS, now)
                purged += 1
        await self.store.purge_session_keys(before)
        await self.store.forget_rates(now)
        return purged

    async def open_demo_session(self, slug: str) -> sessions.SessionWindow:
        window = sessions.demo_session(self.site(slug), self.clock())
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
