"""HTTP of the holiday policy and the fair rotation: the public list of closed dates with their
reasons, and the kabupaten admin's quarter plan of a rotating fair (API and page)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from giliran.auth import ALL_SITES, AuditLog, Forbidden, Principal, Role, requires
from giliran.errors import DomainError
from services.intake import fair_plan, sessions
from services.intake.fair_plan import FairDay
from services.intake.fairs import FairPlans
from services.intake.handlers import Intake
from services.intake.http import Site
from services.intake.pages import PAGES, _texts

FairName = Annotated[str, Path(pattern=r"^[a-z0-9-]{1,40}$")]
Quarter = Annotated[str, Query(pattern=r"^20[0-9]{2}Q[1-4]$")]
# A fair's plan spans the kabupaten: only an admin of every site may change it.
FairAdmin = Annotated[Principal, Depends(requires(Role.ADMIN, site_from=None))]
FairAdminPage = Annotated[Principal, Depends(requires(Role.ADMIN, site_from=None, page=True))]


class ClosedDayView(BaseModel):
    date: str
    weekday_id: str
    reason_id: str
    reason_en: str
    source: Literal["policy", "office"]


class FairDayView(BaseModel):
    date: str
    venue: str | None
    venue_name: str | None
    planned: str | None
    note_id: str | None
    note_en: str | None
    edited: bool
    published: bool


class FairEdit(BaseModel):
    """Hold a fair day at another venue, or drop it (venue null)."""

    model_config = ConfigDict(extra="forbid")

    venue: str | None = Field(default=None, max_length=40)


def _kabupaten_admin(who: Principal) -> None:
    if who.site != ALL_SITES:
        raise Forbidden(
            "rencana pameran bergilir hanya untuk admin kabupaten (semua lokasi).",
            "a rotating fair's plan is for kabupaten admins (all sites) only.",
        )


def _view(entry: FairDay, published: dict[date, str]) -> FairDayView:
    return FairDayView(
        date=entry.day.isoformat(),
        venue=entry.venue.slug if entry.venue else None,
        venue_name=entry.venue.name if entry.venue else None,
        planned=entry.planned.slug if entry.planned else None,
        note_id=entry.note.id if entry.note else None,
        note_en=entry.note.en if entry.note else None,
        edited=entry.edited,
        published=entry.venue is not None and published.get(entry.day) == entry.venue.slug,
    )


def routers(intake: Intake, plans: FairPlans, audit: AuditLog) -> tuple[APIRouter, APIRouter]:
    api = APIRouter(prefix="/api/v1", tags=["calendar"])

    @api.get("/sites/{site}/closed-days", response_model=list[ClosedDayView])
    async def closed_days(
        site: Site, days: Annotated[int, Query(ge=1, le=370)] = 60
    ) -> list[ClosedDayView]:
        """Dates the site would open on but does not (holiday policy, office closed), with the
        reason citizens are told."""
        spec = intake.site(site)
        found = sessions.closed_days(
            spec, intake.clock(), intake.holidays, await intake.overrides(site), days=days
        )
        return [
            ClosedDayView(
                date=c.local_date.isoformat(),
                weekday_id=sessions.DAYS_ID[c.local_date.weekday()],
                reason_id=c.reason_id,
                reason_en=c.reason_en,
                source="policy" if c.source == "policy" else "office",
            )
            for c in found
        ]

    async def plan_views(fair: str, quarter: str) -> list[FairDayView]:
        plan, published = await plans.plan(fair, quarter)
        return [_view(e, published) for e in plan]

    @api.get("/admin/fairs/{fair}/plan", response_model=list[FairDayView])
    async def plan(fair: FairName, quarter: Quarter, who: FairAdmin) -> list[FairDayView]:
        _kabupaten_admin(who)
        return await plan_views(fair, quarter)

    @api.put("/admin/fairs/{fair}/plan/{day}", response_model=list[FairDayView])
    async def edit(fair: FairName, day: date, body: FairEdit, who: FairAdmin) -> list[FairDayView]:
        _kabupaten_admin(who)
        quarter = fair_plan.quarter_of(day)
        was = [v.model_dump() for v in await plan_views(fair, quarter)]
        await plans.edit(fair, day, body.venue)
        now = await plan_views(fair, quarter)
        await audit.record(
            who, "fair_edit", ALL_SITES, f"fair:{fair}:{day}", was, [v.model_dump() for v in now]
        )
        return now

    @api.post("/admin/fairs/{fair}/plan/publish")
    async def publish(fair: FairName, quarter: Quarter, who: FairAdmin) -> dict[str, Any]:
        _kabupaten_admin(who)
        done = await plans.publish(fair, quarter)
        result = {
            "quarter": quarter,
            "opened": [
                {"date": e.day.isoformat(), "venue": e.venue.slug if e.venue else None}
                for e in done.opened
            ],
            "withdrawn": [{"date": d.isoformat(), "venue": v} for d, v in done.withdrawn],
        }
        await audit.record(who, "fair_publish", ALL_SITES, f"fair:{fair}:{quarter}", None, result)
        return result

    # --- the plain page ------------------------------------------------------------------------

    page = APIRouter(tags=["admin"], include_in_schema=False)

    async def render(
        request: Request,
        who: Principal,
        fair: str,
        quarter: str,
        message: str = "",
        status: int = 200,
    ) -> Response:
        spec = plans.fair(fair)
        return PAGES.TemplateResponse(
            request,
            "fair_plan.html",
            {
                "lang": "id",
                "_": _texts("id"),
                "toggle": request.url.path,
                "fair": spec,
                "quarter": quarter,
                "quarters": _quarters_around(quarter),
                "entries": await plan_views(fair, quarter),
                "message": message,
                "who": who,
                "csrf": getattr(request.state, "csrf", ""),
            },
            status_code=status,
        )

    @page.get("/admin/fairs/{fair}", response_class=HTMLResponse)
    async def plan_page(
        request: Request, fair: FairName, who: FairAdminPage, quarter: str = ""
    ) -> Response:
        _kabupaten_admin(who)
        if not fair_plan.QUARTER.match(quarter):
            # The quarter of the date at the venues: from 00:00 WIB on 1 January (17:00 UTC the
            # day before) the page opens on the new quarter, not the one that just ended.
            quarter = fair_plan.quarter_of(plans.today(fair))
        return await render(request, who, fair, quarter)

    @page.post("/admin/fairs/{fair}/action", response_class=HTMLResponse)
    async def plan_action(
        request: Request,
        fair: FairName,
        who: FairAdmin,
        quarter: Annotated[str, Form(pattern=r"^20[0-9]{2}Q[1-4]$")],
        what: Annotated[Literal["edit", "publish"], Form()],
        day: Annotated[str, Form(max_length=10)] = "",
        venue: Annotated[str, Form(max_length=40)] = "",
    ) -> Response:
        _kabupaten_admin(who)
        try:
            if what == "edit":
                when = date.fromisoformat(day)
                await plans.edit(fair, when, venue or None)
                await audit.record(who, "fair_edit", ALL_SITES, f"fair:{fair}:{day}", None, venue)
            else:
                done = await plans.publish(fair, quarter)
                facts = {"opened": len(done.opened), "withdrawn": len(done.withdrawn)}
                await audit.record(
                    who, "fair_publish", ALL_SITES, f"fair:{fair}:{quarter}", None, facts
                )
        except (DomainError, ValueError) as exc:
            text = exc.message_id if isinstance(exc, DomainError) else str(exc)
            return await render(request, who, fair, quarter, text, 422)
        return RedirectResponse(f"/admin/fairs/{fair}?quarter={quarter}", status_code=303)

    return api, page


def _quarters_around(quarter: str) -> list[str]:
    """The quarter shown and its neighbours, for the page's links."""
    year, q = int(quarter[:4]), int(quarter[5])
    index = year * 4 + q - 1
    return [f"{i // 4}Q{i % 4 + 1}" for i in (index - 1, index, index + 1)]
