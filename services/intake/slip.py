"""What a printed ticket says, one model for both paper widths (58 and 80 mm) and both ways to
print (the browser's kiosk printing and ESC/POS). Paper is read by whoever picks it up: a
priority is a mark, never its reason (ADR 0147). Pure: no I/O."""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from giliran.catalogue import SiteDef
from services.intake.views import StatusView, cost_text


class Paper(IntEnum):
    """Thermal roll widths kecamatan offices buy; the value is the roll's width in mm."""

    MM58 = 58
    MM80 = 80

    @property
    def columns(self) -> int:
        """Characters per line in the printer's standard font (12x24 dots at 203 dpi)."""
        return 32 if self is Paper.MM58 else 48

    @property
    def profile(self) -> str:
        """python-escpos's profile of the commonest printer of this width (its dots per line)."""
        return "POS-5890" if self is Paper.MM58 else "TM-T20II"


LABELS: dict[str, tuple[str, str]] = {
    "title": ("NOMOR ANTREAN", "QUEUE NUMBER"),
    "ahead": ("Di depan Anda", "Ahead of you"),
    "expected": ("perkiraan dipanggil", "expected call"),
    "counters": ("Loket", "Counter"),
    "priority": ("PRIORITAS", "PRIORITY"),
    "pending": (
        "Nomor antrean sedang diterbitkan; lihat halaman status.",
        "Your number is being issued; see the status page.",
    ),
    "checkin": ("Kode check-in", "Check-in code"),
    "scan": ("Pindai untuk melihat status antrean", "Scan to follow your place in line"),
}


class SlipTicket(BaseModel):
    number: str
    service: str
    counters: str  # where to go: "Loket 1, Loket 2" or "Booth Dukcapil 1 (Tenda A)"
    ahead: int | None
    expected: str | None  # "10.45 WIB"


class Slip(BaseModel):
    lang: str
    site_name: str
    printed_at: str
    tickets: list[SlipTicket]
    # What it costs (views.cost_text over ServiceDef.cost): GRATIS only for free services.
    cost: str
    free: bool  # every service on it is free
    checkin_code: str | None
    checkin_rule: str | None  # how and by when a booking checks in
    nik_masked: str | None
    priority: bool  # a mark: the reason (pregnancy, disability, ...) is never printed
    status_url: str

    def say(self, key: str) -> str:
        text_id, text_en = LABELS[key]
        return text_en if self.lang == "en" else text_id


def counters_of(site: SiteDef, service: str, lang: str) -> str:
    found = []
    for counter in site.counters:
        if service in counter.services:
            name = counter.name.en if lang == "en" else counter.name.id
            if counter.hint is not None:
                name += f" ({counter.hint.en if lang == 'en' else counter.hint.id})"
            found.append(name)
    return ", ".join(found)


def slip_for(
    view: StatusView, site: SiteDef, lang: str, status_url: str, printed_at: datetime
) -> Slip:
    tickets = []
    for line in view.tickets:
        tickets.append(
            SlipTicket(
                number=line.number,
                service=line.service_name.get(lang) or line.service_name.get("id", line.service),
                counters=counters_of(site, line.service, lang),
                ahead=line.position,
                expected=f"{line.eta_local} WIB" if line.eta_local else None,
            )
        )
    return Slip(
        lang=lang,
        site_name=site.name.en if lang == "en" else site.name.id,
        printed_at=f"{printed_at.astimezone(ZoneInfo(site.timezone)):%d-%m-%Y %H.%M} WIB",
        tickets=tickets,
        cost=view.cost.get(lang) or cost_text(site, [t.service for t in view.tickets], lang),
        free=view.free,
        checkin_code=None if view.arrived else view.checkin_code,
        checkin_rule=view.checkin.get(lang),
        nik_masked=view.nik_masked,
        priority=view.priority is not None,
        status_url=status_url,
    )
