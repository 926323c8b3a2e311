"""Citizen registration use cases: submit (walk-in or booking) and check-in at the kiosk."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

from giliran.auth import Principal, Role
from giliran.catalogue import SiteDef
from giliran.contracts import (
    Channel,
    CitizenContact,
    CitizenRef,
    RequestCheckedIn,
    RequestLinkRequested,
    RequestSubmitted,
    new_event,
    new_id,
)
from giliran.errors import Unavailable
from giliran.store import Document, from_instant, instant
from services.intake import domain, sessions
from services.intake.admission import Admission
from services.intake.errors import (
    AlreadyRegistered,
    CheckInRefused,
    ContactRequired,
    NikRequired,
    QuotaExhausted,
    RateLimited,
    SlotFull,
    TooManyServices,
    UnknownCheckInCode,
)
from services.intake.models import (
    BUDGET,
    CODE_ALPHABET,
    CODE_LENGTH,
    NOT_CHECKED_IN,
    SOURCE,
    ResendLink,
    SubmitRequest,
    Submitted,
)


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

    def _keyed(self, value: str) -> str:
        return hmac.new(self.nik_key, value.encode(), hashlib.sha256).hexdigest()

    async def submit(
        self, command: SubmitRequest, client: str | None = None, who: Principal | None = None
    ) -> Submitted:
        """Validate, claim places atomically, and store the request with its `request.submitted`
        event in one write. A NIK already registered for one of these services in the session
        is refused, with nothing of the request that holds it (ADR 0100). `who`: the signed-in
        caller, which the kiosk and counter channels need."""
        domain.check_channel(command.channel, command.site, who)
        # `client`: None when exempt, decided at the edge from the real peer (limited_address).
        if client is not None:
            await self._rate_limit(
                f"ip:{client}", self.limits.ip_per_minute, 60, ("alamat ini", "this address")
            )
        site = self.site(command.site)
        unknown = [code for code in command.services if site.service(code) is None]
        if unknown:
            raise domain.UnknownService(site.site, unknown)
        services = list(dict.fromkeys(command.services))  # one ticket per service, order kept
        if len(services) > site.max_services_per_request:
            raise TooManyServices(site.max_services_per_request)
        now = self.clock()
        today = now.astimezone(ZoneInfo(site.timezone)).date()
        nik = domain.check_nik(command.nik, today) if command.nik else None
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
        defs = [d for c in services if (d := site.service(c)) is not None]
        rules = [site.admission_for(d) for d in defs]
        # The demo session (`giliran up --demo`, kind adhoc) is a sandbox: walk-in rules.
        sandbox = session.kind == "adhoc"
        online = command.channel == Channel.ONLINE
        if nik is None and not sandbox:
            needing = [d.code for d in defs if d.requires_nik]
            if needing:
                raise NikRequired(needing, kiosk=not online)
        if online and not sandbox:
            self._check_window(site, session, rules, now)
        undo: list[Callable[[], Awaitable[None]]] = []
        # `client` is None for the exempt box itself (limited_address); a forwarded 127.0.0.1 is
        # a value someone sent, counted like any other address (ADR 0114).
        if online and not sandbox and client is not None:
            undo.append(await self._admit_address(site, session, client, command, now))
        # An online registration joins the line once its holder checks in (ADR 0120); where the
        # catalogue does not ask for check-in, a booking (a later day, or a slot) still does.
        checkin = online and not sandbox and any(r.checkin_required for r in rules)
        arrived = not online or (not checkin and session.local_date <= today and slot is None)
        lapses = (
            sessions.lapse_at(
                session,
                min(r.checkin_grace_minutes for r in rules),
                now,
                command.appointment_at.astimezone(UTC) if command.appointment_at else None,
            )
            if not arrived
            else None
        )
        request_id = new_id()
        nik_hash = domain.nik_hash(nik.nik, self.nik_key) if nik else None
        session_date = session.local_date.isoformat()
        try:
            if nik_hash is not None:
                for code in services:
                    existing = await self._claim_nik(
                        session.session_id, code, nik_hash, request_id, session_date
                    )
                    if existing is not None:
                        raise AlreadyRegistered()
                    undo.append(
                        partial(
                            self.store.release_nik, session.session_id, code, nik_hash, request_id
                        )
                    )
            for service in defs:
                code = service.code
                if not await self.store.claim_place(
                    session.session_id, code, None if sandbox else site.quota_of(service)
                ):
                    raise QuotaExhausted(code)
                undo.append(partial(self.store.release_place, session.session_id, code))
                # The session's counter-minutes, shared by every service (MSC: 480).
                if site.capacity_minutes is not None and service.minutes and not sandbox:
                    if not await self.store.claim_place(
                        session.session_id, BUDGET, site.capacity_minutes, service.minutes
                    ):
                        raise QuotaExhausted(code)
                    undo.append(
                        partial(
                            self.store.release_place, session.session_id, BUDGET, service.minutes
                        )
                    )
            if slot is not None:
                if not await self.store.claim_place(
                    session.session_id, f"slot-{slot}", site.booking.slot_capacity
                ):
                    raise SlotFull(f"{slot[:2]}.{slot[2:]}")
                undo.append(partial(self.store.release_place, session.session_id, f"slot-{slot}"))
            checkin_code = None
            if not arrived:
                checkin_code = await self._new_code(
                    site.site, session.session_id, request_id, session_date, session.closes_at
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
                "lapse_at": instant(lapses) if lapses else None,
                "checkin_code": checkin_code,
                "checked_in_at": None,
                "token": token,
                "submitted_at": instant(now),
                "tickets": {},
                # Survey answers, one per completed ticket (ADR 0177).
                "feedback": {},
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
