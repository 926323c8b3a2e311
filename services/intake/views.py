"""What intake's API and pages show: a request, its live status, the sessions ahead."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from giliran.catalogue import SiteDef
from giliran.contracts import TicketStatus, TicketView
from giliran.privacy import mask_phone
from giliran.store import Document, from_instant
from services.intake.handlers import tickets_of
from services.intake.models import NOT_CHECKED_IN
from services.intake.sessions import SessionWindow, format_local, registration_window


class RequestView(BaseModel):
    request_id: str
    site: str
    session_id: str
    services: list[str]
    channel: str
    nik_masked: str | None
    phone_masked: str | None
    status_url: str
    status_page_url: str = ""
    tickets: list[TicketView]
    priority: str | None = None
    appointment_at: datetime | None = None
    arrived: bool = True
    checkin_code: str | None = None
    cancelled: bool = False
    warnings: list[str] = []
    message_id: str
    message_en: str


def cost_text(site: SiteDef, codes: list[str], lang: str = "id") -> str:
    """What the request's services cost, from the catalogue's `ServiceDef.cost` (the one
    source): one sentence for one service or all free ones, else one per service by name."""
    found = [d for c in codes if (d := site.service(c)) is not None]
    if not found:
        return ""
    if len(found) == 1 or all(d.fee is None for d in found):
        return found[0].cost(lang)
    return " ".join(f"{d.name.en if lang == 'en' else d.name.id}: {d.cost(lang)}" for d in found)


def checkin_text(doc: Document, zone: str, lang: str = "id") -> str:
    """What a registration that must check in is told: how, and by when before it lapses."""
    code = doc.get("checkin_code")
    lapse = from_instant(doc["lapse_at"]) if doc.get("lapse_at") else None
    by = f"{lapse.astimezone(ZoneInfo(zone)):%H.%M}" if lapse else ""
    if lang == "en":
        text = f"On arrival, check in at the kiosk or counter with code {code} or the QR code."
        if lapse:
            text += (
                " Your number is called only after check-in; not checked in by "
                f"{by.replace('.', ':')} WIB, the registration lapses."
            )
        return text
    text = f"Saat tiba, check-in di kios atau loket dengan kode {code} atau kode QR."
    if lapse:
        text += (
            " Nomor Anda dipanggil hanya setelah check-in; bila belum check-in sampai pukul "
            f"{by} WIB, pendaftaran gugur."
        )
    return text


def checkin_texts(doc: Document, zone: str) -> dict[str, str]:
    """`checkin_text` in both languages, or nothing once the request is in or cancelled."""
    if doc.get("arrived", True) or not doc.get("checkin_code") or doc.get("cancelled_at"):
        return {}
    return {"id": checkin_text(doc, zone), "en": checkin_text(doc, zone, "en")}


def request_view(
    doc: Document,
    site: SiteDef,
    status_url: str,
    page_url: str,
    warnings: tuple[str, ...] = (),
) -> RequestView:
    tickets = tickets_of(doc)
    complete = len(tickets) >= len(doc["services"])
    numbers = ", ".join(t.number for t in tickets)
    cost_id, cost_en = cost_text(site, doc["services"]), cost_text(site, doc["services"], "en")
    if doc.get("cancel_reason") == NOT_CHECKED_IN:
        message_id = "Pendaftaran ini gugur karena belum check-in. Silakan ambil nomor di kios."
        message_en = "This registration lapsed: it was not checked in. Please take a number at "
        message_en += "the kiosk."
    elif doc.get("cancelled_at"):
        message_id = "Sesi layanan dibatalkan; permohonan ini tidak akan dilayani."
        message_en = "The service session was cancelled; this request will not be served."
    elif complete:
        message_id = f"Nomor antrean Anda: {numbers}. {cost_id}"
        message_en = f"Your queue number(s): {numbers}. {cost_en}"
    else:
        message_id = "Permohonan diterima; nomor antrean sedang diterbitkan. Buka tautan status. "
        message_id += cost_id
        message_en = "Request received; your queue number is being issued. Open the status link. "
        message_en += cost_en
    if not doc.get("arrived", True) and doc.get("checkin_code") and not doc.get("cancelled_at"):
        message_id += " " + checkin_text(doc, site.timezone)
        message_en += " " + checkin_text(doc, site.timezone, "en")
    return RequestView(
        request_id=doc["_id"],
        site=doc["site"],
        session_id=doc["session_id"],
        services=doc["services"],
        channel=doc["channel"],
        nik_masked=doc.get("nik_masked"),
        phone_masked=mask_phone(doc["phone"]) if doc.get("phone") else None,
        status_url=status_url,
        status_page_url=page_url,
        tickets=tickets,
        priority=doc.get("priority"),
        appointment_at=from_instant(doc["appointment_at"]) if doc.get("appointment_at") else None,
        arrived=doc.get("arrived", True),
        checkin_code=doc.get("checkin_code") if not doc.get("arrived", True) else None,
        cancelled=bool(doc.get("cancelled_at")),
        warnings=list(warnings),
        message_id=message_id,
        message_en=message_en,
    )


class TicketLine(BaseModel):
    """One ticket on the status page."""

    ticket_id: str
    number: str
    service: str
    service_name: dict[str, str]
    status: TicketStatus
    counter: str | None = None
    counter_name: dict[str, str] | None = None
    position: int | None = None
    eta: datetime | None = None
    eta_local: str | None = None
    documents: list[dict[str, str]] = []
    survey_open: bool = False
    # What this service costs: "Layanan ini GRATIS." or its fee and where it is paid.
    cost: dict[str, str] = {}


class StatusView(BaseModel):
    request_id: str
    site: str
    site_name: dict[str, str]
    session_id: str
    arrived: bool
    checkin_code: str | None
    cancelled: bool
    nik_masked: str | None
    priority: str | None = None
    live: bool  # the queue answered: positions and ETAs are current
    tickets: list[TicketLine]
    pending_services: list[str]
    free: bool
    # The request's cost in one or a few sentences (cost_text), in both languages.
    cost: dict[str, str] = {}
    lapsed: bool = False
    # How to check in and by when (empty once arrived).
    checkin: dict[str, str] = {}


def issued_unrecorded(doc: Document, queue: dict[str, TicketView] | None) -> list[TicketView]:
    """Tickets the queue answered for this request that intake's own record does not hold yet
    (its ticket consumer writes a moment later, ADR 0228): the queue's store is where a number
    is issued, so a slip printed in that moment still carries it. Only one of the request's own
    site's answer (the query names the site), for a service it asked for and has no ticket for."""
    recorded = {t["service"] for t in (doc.get("tickets") or {}).values()}
    return [
        t
        for t in (queue or {}).values()
        if t.request_id == doc["_id"] and t.service in doc["services"] and t.service not in recorded
    ]


def status_view(
    doc: Document,
    site: SiteDef,
    queue: dict[str, TicketView] | None,
    answered: set[str],
) -> StatusView:
    """Intake's own record of the tickets, with the queue's position and ETA when it answered."""
    zone = ZoneInfo(site.timezone)
    lines = []
    for ticket in tickets_of(doc) + issued_unrecorded(doc, queue):
        service = site.service(ticket.service)
        live = (queue or {}).get(ticket.ticket_id)
        status = ticket.status
        if live is not None and live.status.rank > status.rank:
            status = live.status
        counter_id = (live.counter if live else None) or ticket.counter
        counter = site.counter(counter_id) if counter_id else None
        eta = live.eta if live and status == TicketStatus.WAITING else None
        lines.append(
            TicketLine(
                ticket_id=ticket.ticket_id,
                number=ticket.number,
                service=ticket.service,
                service_name=service.name.model_dump() if service else {"id": "", "en": ""},
                status=status,
                counter=counter_id,
                counter_name=counter.name.model_dump() if counter else None,
                position=live.position if live and status == TicketStatus.WAITING else None,
                eta=eta,
                eta_local=f"{eta.astimezone(zone):%H.%M}" if eta else None,
                documents=[d.model_dump() for d in service.documents] if service else [],
                cost={"id": service.cost("id"), "en": service.cost("en")} if service else {},
                survey_open=status == TicketStatus.COMPLETED and ticket.ticket_id not in answered,
            )
        )
    issued = {t.service for t in lines}
    services = [site.service(c) for c in doc["services"]]
    return StatusView(
        request_id=doc["_id"],
        site=site.site,
        site_name=site.name.model_dump(),
        session_id=doc["session_id"],
        arrived=doc.get("arrived", True),
        checkin_code=doc.get("checkin_code"),
        cancelled=bool(doc.get("cancelled_at")),
        nik_masked=doc.get("nik_masked"),
        priority=doc.get("priority"),
        live=queue is not None,
        tickets=lines,
        pending_services=[c for c in doc["services"] if c not in issued],
        free=all(s is not None and s.free for s in services),
        cost={"id": cost_text(site, doc["services"]), "en": cost_text(site, doc["services"], "en")},
        lapsed=doc.get("cancel_reason") == NOT_CHECKED_IN,
        checkin=checkin_texts(doc, site.timezone),
    )


class SessionView(BaseModel):
    session_id: str
    date: str
    weekday_id: str
    label: str
    opens_local: str
    closes_local: str
    opens_at: datetime
    closes_at: datetime
    kind: str
    cancelled: bool
    bookable: bool
    # Online registration for it (the catalogue's admission rule), and the places left per
    # service (null: no limit).
    registration_opens_at: datetime | None = None
    registration_closes_at: datetime | None = None
    registration_id: str = ""
    registration_en: str = ""
    places: dict[str, int | None] = {}


def registration_text(
    window: SessionWindow, site: SiteDef, now: datetime, lang: str = "id"
) -> tuple[datetime, datetime, str]:
    """When online registration for a session opens and closes, in a plain sentence."""
    opens, closes = registration_window(window, site.admission, site.timezone)
    zone = site.timezone
    if window.cancelled:
        text = ("Sesi dibatalkan.", "Session cancelled.")
    elif now < opens:
        text = (
            f"Pendaftaran daring dibuka {format_local(opens, zone)}.",
            f"Online registration opens {format_local(opens, zone, 'en')}.",
        )
    elif now < closes:
        text = (
            f"Pendaftaran daring sedang dibuka, sampai {format_local(closes, zone)}.",
            f"Online registration is open until {format_local(closes, zone, 'en')}.",
        )
    else:
        text = (
            "Pendaftaran daring sudah ditutup; ambil nomor di kios saat sesi berlangsung.",
            "Online registration has closed; take a number at the kiosk during the session.",
        )
    return opens, closes, text[1] if lang == "en" else text[0]


def session_view(
    window: SessionWindow,
    zone: str,
    bookable: bool,
    site: SiteDef | None = None,
    now: datetime | None = None,
    places: dict[str, int | None] | None = None,
) -> SessionView:
    tz = ZoneInfo(zone)
    extra: dict[str, object] = {}
    if site is not None and now is not None:
        opens, closes, text_id = registration_text(window, site, now)
        extra = {
            "registration_opens_at": opens,
            "registration_closes_at": closes,
            "registration_id": text_id,
            "registration_en": registration_text(window, site, now, "en")[2],
            "places": places or {},
        }
    return SessionView(
        **extra,
        session_id=window.session_id,
        date=window.local_date.isoformat(),
        weekday_id=format_local(window.opens_at, zone).split(",")[0],
        label=window.label,
        opens_local=f"{window.opens_at.astimezone(tz):%H:%M}",
        closes_local=f"{window.closes_at.astimezone(tz):%H:%M}",
        opens_at=window.opens_at,
        closes_at=window.closes_at,
        kind=window.kind,
        cancelled=window.cancelled,
        bookable=bookable and not window.cancelled,
    )
