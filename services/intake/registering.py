"""The pure decisions of a registration: who is asking for what, in which session, and which
places it must claim; no I/O (Registration.submit loads the facts, asks these, then saves)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from giliran.catalogue import AdmissionRule, ServiceDef, SiteDef
from giliran.contracts import Channel, PriorityReason
from giliran.errors import DomainError
from services.intake import domain, sessions
from services.intake.errors import (
    NikRequired,
    QuotaExhausted,
    RegistrationNotOpen,
    SlotFull,
    TooManyServices,
)
from services.intake.models import BUDGET, SubmitRequest


@dataclass(frozen=True)
class Applicant:
    """What was asked, checked: the services (one ticket each, order kept), the NIK, and the
    contact kept (only with consent)."""

    services: tuple[str, ...]
    defs: tuple[ServiceDef, ...]
    nik: domain.NikCheck | None
    phone: str | None
    email: str | None
    warnings: tuple[str, ...]


def check_applicant(command: SubmitRequest, site: SiteDef, today: date) -> Applicant:
    """Unknown services, too many, a NIK or phone that cannot be one: refused; contact details
    given without consent: dropped, with a warning."""
    unknown = [code for code in command.services if site.service(code) is None]
    if unknown:
        raise domain.UnknownService(site.site, unknown)
    services = tuple(dict.fromkeys(command.services))
    if len(services) > site.max_services_per_request:
        raise TooManyServices(site.max_services_per_request)
    nik = domain.check_nik(command.nik, today) if command.nik else None
    phone = domain.normalize_phone(command.phone) if command.phone else None
    # Contact details serve notifications only: without consent they are not kept.
    warnings: tuple[str, ...] = nik.warnings if nik else ()
    if not command.consent and (phone or command.email):
        phone, warnings = None, (*warnings, "contact_ignored_without_consent")
    return Applicant(
        services=services,
        defs=tuple(d for c in services if (d := site.service(c)) is not None),
        nik=nik,
        phone=phone,
        email=command.email if command.consent else None,
        warnings=warnings,
    )


@dataclass(frozen=True)
class Claim:
    """Places to take in one of a session's quota documents, and the refusal when none is left."""

    what: str  # a service code, the counter-minutes budget, or `slot-HHMM`
    limit: int | None  # None: unlimited (created so on first use)
    amount: int
    refusal: DomainError


@dataclass(frozen=True)
class Plan:
    """What a registration that passed every rule must claim, and how it is stored."""

    session: sessions.SessionWindow
    sandbox: bool  # the demo session: walk-in rules
    count_address: bool  # online from a counted address: the per-session cap and challenge
    slot: str | None
    arrived: bool  # joins the line now (else once checked in, with a code)
    lapses: datetime | None
    claims: tuple[Claim, ...]
    priority: PriorityReason | None


def check_window(
    site: SiteDef, session: sessions.SessionWindow, rules: Sequence[AdmissionRule], now: datetime
) -> None:
    """Online registration runs only inside every chosen service's window."""
    for rule in rules:
        opens, closes = sessions.registration_window(session, rule, site.timezone)
        if now < opens:
            raise RegistrationNotOpen(
                sessions.format_local(opens, site.timezone),
                sessions.format_local(opens, site.timezone, "en"),
                closed=False,
            )
        if now >= closes:
            raise RegistrationNotOpen(
                sessions.format_local(closes, site.timezone),
                sessions.format_local(closes, site.timezone, "en"),
                closed=True,
            )


def plan(
    command: SubmitRequest,
    site: SiteDef,
    applicant: Applicant,
    now: datetime,
    holidays: Collection[date],
    overrides: sessions.CalendarOverrides,
    adhoc: Sequence[sessions.SessionWindow],
    *,
    counted_address: bool,
) -> Plan:
    """The session (the one booked, else the one registering now), the admission rules of
    every chosen service, and the places to claim in order: each service's quota and its
    counter-minutes (ADR 0120), then the appointment slot. `counted_address`: the caller's
    address is not exempt (ADR 0114)."""
    today = now.astimezone(ZoneInfo(site.timezone)).date()
    chosen = next((w for w in adhoc if w.session_id == command.session_id), None)
    if command.session_id and chosen is None:
        chosen = sessions.session_for_booking(site, command.session_id, now, holidays, overrides)
    session = chosen or sessions.session_for_registration(
        site, now, holidays, list(adhoc), overrides
    )
    slot = None
    if command.appointment_at is not None:
        slot = sessions.check_slot(
            session, site.booking.slot_minutes, command.appointment_at, now, site.timezone
        )
    rules = [site.admission_for(d) for d in applicant.defs]
    # The demo session (`giliran up --demo`, kind adhoc) is a sandbox: walk-in rules.
    sandbox = session.kind == "adhoc"
    online = command.channel == Channel.ONLINE
    if applicant.nik is None and not sandbox:
        needing = [d.code for d in applicant.defs if d.requires_nik]
        if needing:
            raise NikRequired(needing, kiosk=not online)
    if online and not sandbox:
        check_window(site, session, rules, now)
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
    claims: list[Claim] = []
    for service in applicant.defs:
        limit = None if sandbox else site.quota_of(service)
        claims.append(Claim(service.code, limit, 1, QuotaExhausted(service.code)))
        # The session's counter-minutes, shared by every service (MSC: 480).
        if site.capacity_minutes is not None and service.minutes and not sandbox:
            claims.append(
                Claim(BUDGET, site.capacity_minutes, service.minutes, QuotaExhausted(service.code))
            )
    if slot is not None:
        claims.append(
            Claim(f"slot-{slot}", site.booking.slot_capacity, 1, SlotFull(f"{slot[:2]}.{slot[2:]}"))
        )
    return Plan(
        session=session,
        sandbox=sandbox,
        count_address=online and not sandbox and counted_address,
        slot=slot,
        arrived=arrived,
        lapses=lapses,
        claims=tuple(claims),
        priority=domain.priority_for(command.priority, applicant.nik, session.local_date),
    )
