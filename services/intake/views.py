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
from services.intake.sessions import SessionWindow, format_local


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


def request_view(
    doc: Document,
    status_url: str,
    page_url: str,
    warnings: tuple[str, ...] = (),
) -> RequestView:
    tickets = tickets_of(doc)
    complete = len(tickets) >= len(doc["services"])
    numbers = ", ".join(t.number for t in tickets)
    if doc.get("cancelled_at"):
        message_id = "Sesi layanan dibatalkan; permohonan ini tidak akan dilayani."
        message_en = "The service session was cancelled; this request will not be served."
    elif complete:
        message_id = f"Nomor antrean Anda: {numbers}. Layanan ini GRATIS."
        message_en = f"Your queue number(s): {numbers}. This service is FREE."
    else:
        message_id = "Permohonan diterima; nomor antrean sedang diterbitkan. Buka tautan status."
        message_en = "Request received; your queue number is being issued. Open the status link."
    if not doc.get("arrived", True) and doc.get("checkin_code"):
        message_id += f" Saat tiba, check-in di kios dengan kode {doc['checkin_code']}."
        message_en += f" On arrival, check in at the kiosk with code {doc['checkin_code']}."
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


def status_view(
    doc: Document,
    site: SiteDef,
    queue: dict[str, TicketView] | None,
    answered: set[str],
) -> StatusView:
    """Intake's own record of the tickets, with the queue's position and ETA when it answered."""
    zone = ZoneInfo(site.timezone)
    lines = []
    for ticket in tickets_of(doc):
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


def session_view(window: SessionWindow, zone: str, bookable: bool) -> SessionView:
    tz = ZoneInfo(zone)
    return SessionView(
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
