"""What a site offers a citizen now, as the kiosk, the register page and the public schedule
show it: each service's cost, documents and places left, and when online registration opens."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from giliran.catalogue import SiteDef
from giliran.errors import DomainError
from services.intake import sessions
from services.intake.handlers import Intake
from services.intake.views import registration_text


async def service_rows(
    intake: Intake, site: SiteDef, window: sessions.SessionWindow | None
) -> list[dict[str, Any]]:
    """Each service as a citizen weighs it: name, cost, what to bring, places left."""
    left = await intake.places_left(site, window) if window else {}
    return [
        {
            "def": s,
            "cost": {"id": s.cost("id"), "en": s.cost("en")},
            "left": left.get(s.code),
            "limited": window is not None and left.get(s.code) is not None,
        }
        for s in site.services
    ]


async def current_window(intake: Intake, site: SiteDef) -> sessions.SessionWindow | None:
    """The session a walk-in at the kiosk joins now, if one runs."""
    now = intake.clock()
    try:
        return sessions.session_for_registration(
            site,
            now,
            intake.holidays,
            await intake._adhoc_sessions(site.site, now),
            await intake.overrides(site.site),
        )
    except DomainError:
        return None


async def next_registration(intake: Intake, site: SiteDef) -> dict[str, str] | None:
    """When online registration opens next, for a page that has no session open for it."""
    now = intake.clock()
    for window in await intake.upcoming(site.site, 60):
        if window.cancelled:
            continue
        _opens, closes = sessions.registration_window(window, site.admission, site.timezone)
        if now < closes:
            return {
                "id": registration_text(window, site, now)[2],
                "en": registration_text(window, site, now, "en")[2],
                "when_id": sessions.format_local(window.opens_at, site.timezone),
                "when_en": sessions.format_local(window.opens_at, site.timezone, "en"),
            }
    return None


async def schedule(intake: Intake, site: SiteDef, days: int = 30) -> list[dict[str, Any]]:
    """The sessions ahead as the public schedule shows them."""
    now = intake.clock()
    zone = site.timezone
    rows = []
    for window in await intake.upcoming(site.site, days):
        rows.append(
            {
                "window": window,
                "when_id": sessions.format_local(window.opens_at, zone),
                "when_en": sessions.format_local(window.opens_at, zone, "en"),
                "closes": f"{window.closes_at.astimezone(ZoneInfo(zone)):%H.%M}",
                "registration": {
                    "id": registration_text(window, site, now)[2],
                    "en": registration_text(window, site, now, "en")[2],
                },
                "services": await service_rows(intake, site, window),
            }
        )
    return rows
