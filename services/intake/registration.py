"""Citizen registration use cases: submit (walk-in or booking) and check-in at the kiosk."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta
from functools import partial
from zoneinfo import ZoneInfo

from giliran.contracts import (
    Channel,
    CitizenContact,
    CitizenRef,
    RequestCheckedIn,
    RequestSubmitted,
    new_event,
    new_id,
)
from giliran.errors import Unavailable
from giliran.store import Document, instant
from services.intake import domain, sessions
from services.intake.base import IntakeBase
from services.intake.errors import (
    CheckInRefused,
    NikRequired,
    QuotaExhausted,
    RateLimited,
    SlotFull,
    UnknownCheckInCode,
)
from services.intake.models import (
    CODE_ALPHABET,
    CODE_LENGTH,
    SOURCE,
    SubmitRequest,
    Submitted,
)


class Registration(IntakeBase):
    """Registering and checking in: quotas, NIK claims, rate limits, codes."""

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
            token = secrets.token_urlsafe(18)
            # Nothing that reaches the citizen goes into request.submitted: GILIRAN keeps it for
            # ever. The contact travels apart, on the personal stream (ADR 0115).
            citizen = CitizenRef(
                nik_masked=nik.masked if nik else None,
                nik_hash=nik_hash,
                consent=command.consent,
                language=command.language,
            )
            contact = (
                [
                    new_event(
                        CitizenContact(
                            request_id=request_id,
                            session_id=session.session_id,
                            phone=phone,
                            email=email,
                            language=command.language,
                            status_token=token,
                            submitted_at=now,
                            keep_until=now + self.contact_retention,
                        ),
                        site=site.site,
                        source=SOURCE,
                        at=now,
                    )
                ]
                if command.consent
                else []
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
                "token": token,
                "submitted_at": instant(now),
                "tickets": {},
                "cancelled_at": None,
                "purged_at": None,
            }
            await self.store.insert(doc, [*contact, event])
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
