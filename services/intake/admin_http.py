"""Admin API and page of intake for the admin role: sessions, holiday and closed dates, quotas,
cancellation; every change is written to the audit trail."""

from __future__ import annotations

from datetime import date, time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from giliran.auth import AuditLog, Principal, Role, requires, wrong_site
from giliran.errors import DomainError
from services.intake import sessions
from services.intake.admin import AddSession, Admin, DateNote, QuotaChange
from services.intake.http import Site
from services.intake.pages import PAGES, _texts
from services.intake.views import SessionView, session_view

SessionIdPath = Annotated[str, Path(pattern=r"^[a-z0-9-]{1,80}$")]
# Admins of one site administer that site; GILIRAN_ADMIN_TOKEN (before accounts) still works as
# an admin API token of every site until replaced (docs/decisions/0040).
AdminUser = Annotated[Principal, Depends(requires(Role.ADMIN))]
AdminPage = Annotated[Principal, Depends(requires(Role.ADMIN, page=True))]
AdminForm = Annotated[Principal, Depends(requires(Role.ADMIN, site_from=None))]


def routers(admin: Admin, audit: AuditLog) -> tuple[APIRouter, APIRouter]:
    api = APIRouter(prefix="/api/v1/admin", tags=["admin"])
    intake = admin.intake

    async def overrides(site: str) -> dict[str, Any]:
        """The site's calendar changes, as the audit trail keeps them before and after."""
        found = await intake.overrides(site)
        return {
            "holidays_added": {str(d): n for d, n in found.holidays_added.items()},
            "holidays_removed": sorted(str(d) for d in found.holidays_removed),
            "closed": {str(d): n for d, n in found.closed.items()},
            "sessions_added": {
                str(d): [str(t) for t in span] for d, span in found.sessions_added.items()
            },
            "cancelled": dict(found.cancelled),
            "closures_lifted": sorted(str(d) for d in found.closures_lifted),
        }

    async def listing(site: str, days: int = 60) -> list[SessionView]:
        spec = intake.site(site)
        return [session_view(w, spec.timezone, True) for w in await intake.upcoming(site, days)]

    @api.get("/sites/{site}/sessions", response_model=list[SessionView])
    async def sessions_ahead(site: Site, _: AdminUser) -> list[SessionView]:
        return await listing(site)

    @api.post("/sites/{site}/sessions", response_model=SessionView, status_code=201)
    async def add_session(site: Site, body: AddSession, who: AdminUser) -> SessionView:
        window = await admin.add_session(site, body)
        view = session_view(window, intake.site(site).timezone, True)
        after = view.model_dump(mode="json")
        await audit.record(who, "add_session", site, f"session:{view.session_id}", None, after)
        return view

    @api.post("/sites/{site}/sessions/{session_id}/cancel")
    async def cancel_session(
        site: Site, session_id: SessionIdPath, body: DateNote, who: AdminUser
    ) -> dict[str, Any]:
        cancelled = await admin.cancel_session(site, session_id, body.note)
        result = {"session_id": session_id, "requests_cancelled": cancelled}
        facts = {**result, "note": body.note}
        await audit.record(who, "cancel_session", site, f"session:{session_id}", None, facts)
        return result

    @api.put("/sites/{site}/holidays/{day}", status_code=204)
    async def add_holiday(site: Site, day: date, body: DateNote, who: AdminUser) -> Response:
        was = await overrides(site)
        await admin.set_holiday(site, day, True, body.note)
        await audit.record(who, "holiday_add", site, f"date:{day}", was, await overrides(site))
        return Response(status_code=204)

    @api.delete("/sites/{site}/holidays/{day}", status_code=204)
    async def remove_holiday(site: Site, day: date, who: AdminUser) -> Response:
        was = await overrides(site)
        await admin.set_holiday(site, day, False)
        await audit.record(who, "holiday_remove", site, f"date:{day}", was, await overrides(site))
        return Response(status_code=204)

    @api.put("/sites/{site}/closed/{day}")
    async def close_date(site: Site, day: date, body: DateNote, who: AdminUser) -> dict[str, Any]:
        was = await overrides(site)
        cancelled = await admin.set_closed(site, day, True, body.note)
        await audit.record(who, "close", site, f"date:{day}", was, await overrides(site))
        return {"date": day.isoformat(), "closed": True, "requests_cancelled": cancelled}

    @api.delete("/sites/{site}/closed/{day}")
    async def reopen_date(site: Site, day: date, who: AdminUser) -> dict[str, Any]:
        was = await overrides(site)
        await admin.set_closed(site, day, False)
        await audit.record(who, "reopen", site, f"date:{day}", was, await overrides(site))
        return {"date": day.isoformat(), "closed": False, "requests_cancelled": 0}

    @api.get("/sites/{site}/sessions/{session_id}/quotas")
    async def quotas(site: Site, session_id: SessionIdPath, _: AdminUser) -> list[dict[str, Any]]:
        return await admin.quotas(site, session_id)

    @api.put("/sites/{site}/sessions/{session_id}/quotas")
    async def set_quotas(
        site: Site, session_id: SessionIdPath, body: QuotaChange, who: AdminUser
    ) -> list[dict[str, Any]]:
        was = await admin.quotas(site, session_id)
        now = await admin.set_quotas(site, session_id, body)
        await audit.record(who, "set_quotas", site, f"session:{session_id}", was, now)
        return now

    # --- the plain page: forms that post here and come back -----------------------------------

    page = APIRouter(tags=["admin"], include_in_schema=False)

    async def render(
        request: Request, who: Principal, site: str, message: str = "", status: int = 200
    ) -> Response:
        spec = intake.site(site)
        overrides = await intake.overrides(site)
        upcoming = await listing(site)
        first = next((s for s in upcoming if not s.cancelled), None)
        return PAGES.TemplateResponse(
            request,
            "admin.html",
            {
                "lang": "id",
                "_": _texts("id"),
                "toggle": request.url.path,
                "site": spec,
                "sites": list(intake.catalogue.sites),
                "sessions": upcoming,
                "overrides": overrides,
                "quotas": await admin.quotas(site, first.session_id) if first else [],
                "quota_session": first.session_id if first else None,
                "closed_days": sessions.closed_days(
                    spec, intake.clock(), intake.holidays, overrides, days=120
                ),
                "fairs": list(intake.catalogue.fairs),
                "message": message,
                "who": who,
                "csrf": getattr(request.state, "csrf", ""),
            },
            status_code=status,
        )

    @page.get("/admin", response_class=HTMLResponse)
    async def admin_page(
        request: Request, who: AdminPage, site: str = "cikarang-utara"
    ) -> Response:
        if not who.at(site):
            site = who.site  # an admin of one site sees that site
        return await render(request, who, site)

    @page.post("/admin/action", response_class=HTMLResponse)
    async def action(
        request: Request,
        who: AdminForm,
        site: Annotated[str, Form(max_length=63)],
        what: Annotated[str, Form(max_length=20)],
        day: Annotated[str, Form(max_length=10)] = "",
        session_id: Annotated[str, Form(max_length=80)] = "",
        note: Annotated[str, Form(max_length=100)] = "",
        opens: Annotated[str, Form(max_length=5)] = "",
        closes: Annotated[str, Form(max_length=5)] = "",
    ) -> Response:
        if not who.at(site):
            raise wrong_site(who, site)
        try:
            was = await overrides(site)
            when = date.fromisoformat(day) if day else None
            if what == "add_session" and when:
                await admin.add_session(
                    site,
                    AddSession(
                        date=when,
                        opens=time.fromisoformat(opens) if opens else None,
                        closes=time.fromisoformat(closes) if closes else None,
                    ),
                )
            elif what == "cancel" and session_id:
                await admin.cancel_session(site, session_id, note)
            elif what in ("holiday_add", "holiday_remove") and when:
                await admin.set_holiday(site, when, what == "holiday_add", note)
            elif what in ("close", "reopen") and when:
                await admin.set_closed(site, when, what == "close", note)
            elif what == "quotas" and session_id:
                form = await request.form()
                quotas = {
                    str(k).removeprefix("q_"): (int(str(v)) if str(v).strip() else None)
                    for k, v in form.items()
                    if str(k).startswith("q_")
                }
                await admin.set_quotas(site, session_id, QuotaChange(quotas=quotas))
            else:
                return await render(request, who, site, "Isian belum lengkap.", 422)
        except (DomainError, ValueError) as exc:
            text = exc.message_id if isinstance(exc, DomainError) else str(exc)
            return await render(request, who, site, text, 422)
        target = f"session:{session_id}" if session_id else f"date:{day}"
        facts = {"note": note, "opens": opens, "closes": closes} if what == "add_session" else None
        await audit.record(who, what, site, target, was, facts or await overrides(site))
        return RedirectResponse(f"/admin?site={site}", status_code=303)

    return api, page


__all__ = ["routers", "sessions"]
