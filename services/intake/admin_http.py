"""Admin API and page of intake (a token from settings until real accounts exist): sessions,
holiday and closed dates, quotas, cancellation."""

from __future__ import annotations

import hmac
from datetime import date, time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from giliran.errors import DomainError
from services.intake import sessions
from services.intake.admin import AddSession, Admin, DateNote, QuotaChange
from services.intake.errors import Forbidden
from services.intake.http import Site
from services.intake.pages import PAGES, _texts
from services.intake.views import SessionView, session_view

COOKIE = "giliran_admin"
SessionIdPath = Annotated[str, Path(pattern=r"^[a-z0-9-]{1,80}$")]


def routers(admin: Admin, token: str | None) -> tuple[APIRouter, APIRouter]:
    def authorised(request: Request) -> bool:
        if not token:
            return False  # no token configured: admin is switched off, not open
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        given = given or request.cookies.get(COOKIE, "")
        return hmac.compare_digest(given.encode(), token.encode())

    def require(request: Request) -> None:
        if not authorised(request):
            raise Forbidden()

    api = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require)])
    intake = admin.intake

    async def listing(site: str, days: int = 60) -> list[SessionView]:
        spec = intake.site(site)
        return [session_view(w, spec.timezone, True) for w in await intake.upcoming(site, days)]

    @api.get("/sites/{site}/sessions", response_model=list[SessionView])
    async def sessions_ahead(site: Site) -> list[SessionView]:
        return await listing(site)

    @api.post("/sites/{site}/sessions", response_model=SessionView, status_code=201)
    async def add_session(site: Site, body: AddSession) -> SessionView:
        window = await admin.add_session(site, body)
        return session_view(window, intake.site(site).timezone, True)

    @api.post("/sites/{site}/sessions/{session_id}/cancel")
    async def cancel_session(
        site: Site, session_id: SessionIdPath, body: DateNote
    ) -> dict[str, Any]:
        cancelled = await admin.cancel_session(site, session_id, body.note)
        return {"session_id": session_id, "requests_cancelled": cancelled}

    @api.put("/sites/{site}/holidays/{day}", status_code=204)
    async def add_holiday(site: Site, day: date, body: DateNote) -> Response:
        await admin.set_holiday(site, day, True, body.note)
        return Response(status_code=204)

    @api.delete("/sites/{site}/holidays/{day}", status_code=204)
    async def remove_holiday(site: Site, day: date) -> Response:
        await admin.set_holiday(site, day, False)
        return Response(status_code=204)

    @api.put("/sites/{site}/closed/{day}")
    async def close_date(site: Site, day: date, body: DateNote) -> dict[str, Any]:
        cancelled = await admin.set_closed(site, day, True, body.note)
        return {"date": day.isoformat(), "closed": True, "requests_cancelled": cancelled}

    @api.delete("/sites/{site}/closed/{day}")
    async def reopen_date(site: Site, day: date) -> dict[str, Any]:
        await admin.set_closed(site, day, False)
        return {"date": day.isoformat(), "closed": False, "requests_cancelled": 0}

    @api.get("/sites/{site}/sessions/{session_id}/quotas")
    async def quotas(site: Site, session_id: SessionIdPath) -> list[dict[str, Any]]:
        return await admin.quotas(site, session_id)

    @api.put("/sites/{site}/sessions/{session_id}/quotas")
    async def set_quotas(
        site: Site, session_id: SessionIdPath, body: QuotaChange
    ) -> list[dict[str, Any]]:
        return await admin.set_quotas(site, session_id, body)

    # --- the plain page: forms that post here and come back -----------------------------------

    page = APIRouter(tags=["admin"], include_in_schema=False)

    async def render(request: Request, site: str, message: str = "", status: int = 200) -> Response:
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
                "message": message,
            },
            status_code=status,
        )

    @page.get("/admin", response_class=HTMLResponse)
    async def admin_page(request: Request, site: str = "cikarang-utara") -> Response:
        if not authorised(request):
            return PAGES.TemplateResponse(
                request,
                "admin_login.html",
                {"lang": "id", "_": _texts("id"), "toggle": "/admin", "enabled": bool(token)},
                status_code=401,
            )
        return await render(request, site)

    @page.post("/admin/login")
    async def login(admin_token: Annotated[str, Form(max_length=200)]) -> Response:
        response = RedirectResponse("/admin", status_code=303)
        # SameSite=Strict: another site's form cannot ride on this cookie (no CSRF token needed).
        response.set_cookie(COOKIE, admin_token, httponly=True, samesite="strict")
        return response

    @page.post("/admin/action", response_class=HTMLResponse)
    async def action(
        request: Request,
        site: Annotated[str, Form(max_length=63)],
        what: Annotated[str, Form(max_length=20)],
        day: Annotated[str, Form(max_length=10)] = "",
        session_id: Annotated[str, Form(max_length=80)] = "",
        note: Annotated[str, Form(max_length=100)] = "",
        opens: Annotated[str, Form(max_length=5)] = "",
        closes: Annotated[str, Form(max_length=5)] = "",
    ) -> Response:
        if not authorised(request):
            raise Forbidden()
        try:
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
                return await render(request, site, "Isian belum lengkap.", 422)
        except (DomainError, ValueError) as exc:
            text = exc.message_id if isinstance(exc, DomainError) else str(exc)
            return await render(request, site, text, 422)
        return RedirectResponse(f"/admin?site={site}", status_code=303)

    return api, page


__all__ = ["routers", "sessions"]
