"""Citizen registration use cases: submit (walk-in or booking) and check-in at the kiosk."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

from giliran.auth import Principal, Role
from giliran.catalogue import SiteDef
from giliran.contracts import (
    CitizenContact,
    CitizenRef,
    Event,
    RequestCheckedIn,
    RequestLinkRequested,
    RequestSubmitted,
    new_event,
    new_id,
)
from giliran.errors import Unavailable
from giliran.store import Document, from_instant, instant
from services.intake import domain, registering, sessions
from services.intake.admission import Admission
from services.intake.errors import (
    AlreadyRegistered,
    CheckInRefused,
    ContactRequired,
    RateLimited,
    UnknownCheckInCode,
)
from services.intake.models import (
    CODE_ALPHABET,
    CODE_LENGTH,
    NOT_CHECKED_IN,
    SOURCE,
    Request,
    ResendLink,
    SubmitRequest,
    Submitted,
)
from services.intake.store import WINDOW_PREFIX, Place, WindowHit

# The phone's window: registrations per phone number per hour (Limits.phone_per_hour).
PHONE_WINDOW_SECONDS = 3600


class Registration(Admission):
    """Registering and checking in: quotas, NIK claims, rate limits, codes."""

    async def _rate_limit(
        self,
        key: str,
        limit: int,
        window_seconds: int,
        what: tuple[str, str],
        doing: tuple[str, str] = ("pendaftaran", "registrations"),
        *,
        count: bool = True,
    ) -> None:
        """A fixed window counted in the store: correct across concurrent requests and across
        instances (an in-process bucket would give each instance its own allowance).
        `count=False` only checks the window (for limits that count failures afterwards)."""
        now = self.clock()
        start = int(now.timestamp()) // window_seconds * window_seconds
        if count:
            expires = now + timedelta(seconds=2 * window_seconds)
            hits = await self.store.hit(key, str(start), expires)
        else:
            hits = await self.store.hits(key, str(start)) + 1
        if hits > limit:
            retry = max(start + window_seconds - int(now.timestamp()), 1)
            raise RateLimited(what[0], what[1], retry, doing)

    def _phone_hit(self, phone: str | None, now: datetime) -> WindowHit | None:
        """The hit a registration with `phone` counts in the phone's hourly window: a fixed
        window counted in the store, correct across concurrent requests and instances."""
        if phone is None:
            return None
        start = int(now.timestamp()) // PHONE_WINDOW_SECONDS * PHONE_WINDOW_SECONDS
        return WindowHit(
            key=f"{WINDOW_PREFIX}{self._keyed(phone)}",
            window_start=str(start),
            limit=self.limits.phone_per_hour,
            expires_at=now + timedelta(seconds=2 * PHONE_WINDOW_SECONDS),
        )

    @staticmethod
    def _phone_limited(hit: WindowHit, now: datetime) -> RateLimited:
        retry = max(int(hit.window_start) + PHONE_WINDOW_SECONDS - int(now.timestamp()), 1)
        return RateLimited("nomor HP ini", "this phone number", retry)

    def _keyed(self, value: str) -> str:
        return hmac.new(self.nik_key, value.encode(), hashlib.sha256).hexdigest()

    async def submit(
        self, command: SubmitRequest, client: str | None = None, who: Principal | None = None
    ) -> Submitted:
        """Validate, claim places atomically, and store the request with its `request.submitted`
        event in one write. A NIK already registered for one of these services in the session
        is refused, with nothing of the request that holds it (ADR 0100). `who`: the signed-in
        caller, which the kiosk and counter channels need.

        Load -> decide -> save: the rules are pure (`registering`); what is claimed in the store
        (the address's count, NIK claims, places, a check-in code) is given back, newest first,
        if a later step refuses or fails (the exit stack), and kept once the request is stored."""
        domain.check_channel(command.channel, command.site, who)
        # `client`: None when exempt, decided at the edge from the real peer (limited_address).
        if client is not None:
            await self._rate_limit(
                f"ip:{client}", self.limits.ip_per_minute, 60, ("alamat ini", "this address")
            )
        site = self.site(command.site)
        now = self.clock()
        applicant = registering.check_applicant(command, site, sessions.local_today(site, now))
        # `client` is None for the exempt box itself (limited_address); a forwarded 127.0.0.1 is
        # a value someone sent, counted like any other address (ADR 0114).
        plan = registering.plan(
            command,
            site,
            applicant,
            now,
            self.holidays,
            await self.overrides(site.site),
            await self._adhoc_sessions(site.site, now),
            counted_address=client is not None,
        )
        session = plan.session
        request_id = new_id()
        nik = applicant.nik
        nik_hash = domain.nik_hash(nik.nik, self.nik_key) if nik else None
        session_date = session.local_date.isoformat()
        async with AsyncExitStack() as claimed:
            # The phone's hourly window and the places, in one store command (ADR 0211).
            hit = self._phone_hit(applicant.phone, now)
            # Each place is on `claimed` as soon as it is known to be taken, also when the
            # store fails part-way through (a place taken, the next one failing).
            taken = await self.store.claim_together(
                hit,
                session.session_id,
                [Place(c.what, c.limit, c.amount) for c in plan.claims],
                claimed,
            )
            if not taken.counted:
                assert hit is not None  # only a window can be over its limit
                raise self._phone_limited(hit, now)
            # A place refused is told after the address and NIK rules, as when places were
            # claimed last: a NIK already registered is refused as such, whatever is left.
            refused = plan.claims[taken.taken] if taken.taken < len(plan.claims) else None
            if plan.count_address and client is not None:
                claimed.push_async_callback(
                    await self._admit_address(site, session, client, command, now)
                )
            if nik_hash is not None:
                for code in applicant.services:
                    existing = await self._claim_nik(
                        session.session_id, code, nik_hash, request_id, session_date
                    )
                    if existing is not None:
                        raise AlreadyRegistered()
                    claimed.push_async_callback(
                        self.store.release_nik, session.session_id, code, nik_hash, request_id
                    )
            if refused is not None:
                raise refused.refusal
            checkin_code = None
            if not plan.arrived:
                checkin_code = await self._new_code(
                    site.site, session.session_id, request_id, session_date, session.closes_at
                )
                claimed.push_async_callback(self.store.release_code, site.site, checkin_code)
            request = Request(
                request_id=request_id,
                site=site.site,
                session_id=session.session_id,
                session_date=session.local_date,
                services=applicant.services,
                channel=command.channel,
                language=command.language,
                name=command.name,
                nik_encrypted=self.cipher.encrypt(nik.nik) if nik and self.cipher else None,
                nik_masked=nik.masked if nik else None,
                nik_hash=nik_hash,
                phone=applicant.phone,
                email=applicant.email,
                consent=command.consent,
                priority=plan.priority,
                appointment_at=command.appointment_at,
                slot=plan.slot,
                arrived=plan.arrived,
                lapse_at=plan.lapses,
                checkin_code=checkin_code,
                token=secrets.token_urlsafe(18),
                submitted_at=now,
            )
            events = self._submitted_events(request, session)
            doc = await self.store.add(request, events)
            claimed.pop_all()  # stored: every claim is the request's now
        self.publish_now(request_id, events)
        return Submitted(doc, applicant.warnings)

    def _submitted_events(
        self, request: Request, session: sessions.SessionWindow
    ) -> list[Event[Any]]:
        """`request.submitted`, and before it the contact on the personal stream if the citizen
        consented. Nothing that reaches the citizen goes into request.submitted: GILIRAN keeps it
        for ever. The contact travels apart (ADR 0115)."""
        now = request.submitted_at
        citizen = CitizenRef(
            nik_masked=request.nik_masked,
            nik_hash=request.nik_hash,
            consent=request.consent,
            language=request.language,
        )
        contact: list[Event[Any]] = (
            [
                new_event(
                    CitizenContact(
                        request_id=request.request_id,
                        session_id=request.session_id,
                        phone=request.phone,
                        email=request.email,
                        language=request.language,
                        status_token=request.token,
                        submitted_at=now,
                        keep_until=now + self.contact_retention,
                    ),
                    site=request.site,
                    source=SOURCE,
                    at=now,
                )
            ]
            if request.consent
            else []
        )
        submitted = new_event(
            RequestSubmitted(
                request_id=request.request_id,
                session_id=request.session_id,
                services=list(request.services),
                channel=request.channel,
                citizen=citizen,
                submitted_at=now,
                session_opens_at=session.opens_at,
                session_closes_at=session.closes_at,
                priority=request.priority,
                appointment_at=request.appointment_at.astimezone(UTC)
                if request.appointment_at
                else None,
                arrived=request.arrived,
            ),
            site=request.site,
            source=SOURCE,
            at=now,
        )
        return [*contact, submitted]

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

    async def _new_code(
        self, site: str, session_id: str, request_id: str, day: str, until: datetime
    ) -> str:
        """A fresh code, valid only until its booking's session closes."""
        while True:
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            if await self.store.reserve_code(site, session_id, code, request_id, day, until):
                return code

    # --- the status link again, to the registered contact only -----------------------------

    async def request_link(self, command: ResendLink, client: str | None = None) -> int:
        """Send the status link again to the phone/e-mail a request was registered with, if the
        NIK and that contact match an active request of the site. The caller is told the same
        whatever happens (the HTTP answer never says whether anything matched): only the
        registered contact ever receives the link, through notify (`request.link_requested`
        carries no contact). Returns how many requests matched, for tests and logs."""
        if client is not None:  # no exemption: a kiosk has no reason to ask for links
            await self._rate_limit(
                f"resend-ip:{client}",
                self.limits.resend_ip_per_hour,
                3600,
                ("alamat ini", "this address"),
                ("permintaan tautan", "link requests"),
            )
        site, now = self.site(command.site), self.clock()
        if not command.phone and not command.email:
            raise ContactRequired()
        nik = domain.check_nik(command.nik, sessions.local_today(site, now))
        nik_hash = domain.nik_hash(nik.nik, self.nik_key)
        phone = domain.normalize_phone(command.phone) if command.phone else None
        email = command.email.lower() if command.email else None
        # Counted per NIK and contact, whether or not they are registered: a 429 tells nothing,
        # the registered phone gets at most so many links, and a stranger who knows the NIK (it
        # is no secret) cannot spend the citizen's own allowance by asking with other contacts.
        asked = self._keyed("|".join((nik_hash, phone or "", email or "")))
        await self._rate_limit(
            f"resend-nik:{asked}",
            self.limits.resend_nik_per_hour,
            3600,
            ("NIK dan kontak ini", "this NIK and contact"),
            ("permintaan tautan", "link requests"),
        )
        today = sessions.local_today(site, now).isoformat()
        matched = 0
        for doc in await self.store.active_for_nik(site.site, nik_hash, today):
            same_phone = phone is not None and doc.get("phone") == phone
            same_email = email is not None and str(doc.get("email") or "").lower() == email
            if not (same_phone or same_email):
                continue
            event = new_event(
                RequestLinkRequested(
                    request_id=doc["_id"], session_id=doc["session_id"], requested_at=now
                ),
                site=site.site,
                source=SOURCE,
                at=now,
            )
            if await self.store.update_if(
                {"_id": doc["_id"], "cancelled_at": None},
                {"link_requested_at": instant(now)},
                [event],
            ):
                matched += 1
        if matched:
            self.wake()
        return matched

    # --- check-in ----------------------------------------------------------------------------

    async def check_in(
        self,
        slug: str,
        scanned: str,
        client: str | None = None,
        who: Principal | None = None,
    ) -> tuple[Document, bool]:
        """A booking's holder at the kiosk: by the 6-character code or the QR (status link).
        Returns the request and whether this call checked it in (False: already in).

        A short code can be guessed, so (ADR 0101): attempts are limited per address, failed
        code attempts per site; a code is valid only in its session's check-in window, and
        unknown, cancelled, early or expired codes all get the one same answer. The QR carries
        the unguessable status token: it is never held back by the site's limit and its holder
        is told exactly why a check-in is refused. The site's own signed-in kiosk (`who`) checks
        everyone in from one address: only the site's limit applies to it."""
        site, now = self.site(slug), self.clock()
        early = timedelta(minutes=site.booking.checkin_early_minutes)
        kiosk = who is not None and who.role is Role.KIOSK and who.at(site.site)
        if client is not None and not kiosk:
            await self._rate_limit(
                f"checkin-ip:{client}",
                self.limits.checkin_ip_per_minute,
                60,
                ("alamat ini", "this address"),
                ("percobaan check-in", "check-in attempts"),
            )
        text = scanned.strip()
        token = re.search(r"/s/([A-Za-z0-9_-]{16,64})", text)
        if token is None and re.fullmatch(r"[A-Za-z0-9]{6}", text):
            doc = await self._by_code(site, text.upper(), now, early)
        else:
            held = await self.store.by_token(token.group(1) if token else text)
            if held is None or held["site"] != site.site:
                raise UnknownCheckInCode(site.booking.checkin_early_minutes)
            doc = held
        if doc.get("cancel_reason") == NOT_CHECKED_IN:
            # What the status page says too: the citizen missed the grace, nobody cancelled.
            raise CheckInRefused(
                "pendaftaran ini gugur karena belum check-in. Silakan ambil nomor di kios.",
                "this registration lapsed: it was not checked in. Please take a number at the "
                "kiosk.",
            )
        if doc.get("cancelled_at"):
            raise CheckInRefused("pendaftaran ini dibatalkan.", "this booking was cancelled.")
        if doc.get("arrived"):
            return doc, False
        window = await self.window_of(site, doc["session_id"])
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

    async def _by_code(self, site: SiteDef, code: str, now: datetime, early: timedelta) -> Document:
        """The booking a short code opens now, or the one same refusal. Failed attempts count
        against the whole site, whatever address they come from."""
        failures = f"checkin-failures:{site.site}"
        limit = self.limits.checkin_failures_per_site_per_hour
        what = ("lokasi ini", "this site")
        doing = ("kode check-in salah", "wrong check-in codes")
        await self._rate_limit(failures, limit, 3600, what, doing, count=False)
        found = await self.store.code(site.site, code)
        doc = await self.store.get(found["request_id"]) if found else None
        if doc is not None and found is not None and not doc.get("cancelled_at"):
            valid_until = found.get("valid_until")
            window = await self.window_of(site, doc["session_id"])
            if (
                window is not None
                and window.opens_at - early <= now < window.closes_at
                and (valid_until is None or now < from_instant(valid_until))
            ):
                return doc
        await self._rate_limit(failures, limit, 3600, what, doing)
        raise UnknownCheckInCode(site.booking.checkin_early_minutes)

    # --- tickets -------------------------------------------------------------------------------
