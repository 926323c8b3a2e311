"""The audit trail on the web: a JSON API and a page for auditors (served by every service)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from giliran.auth.accounts import ALL_SITES, Principal, Role
from giliran.auth.audit import AuditLog
from giliran.auth.web import PAGES, requires
from giliran.contracts.subjects import SITE_PATTERN
from giliran.store import Document

SiteQuery = Annotated[str | None, Query(pattern=SITE_PATTERN, max_length=63)]


def _visible(who: Principal, site: str | None) -> str | None:
    """An auditor of one site reads that site only, whatever it asks for."""
    return site if who.site == ALL_SITES else who.site


def _shown(doc: Document) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_id"}


Reader = Annotated[Principal, Depends(requires(Role.AUDITOR, Role.ADMIN))]
PageReader = Annotated[Principal, Depends(requires(Role.AUDITOR, Role.ADMIN, page=True))]


def audit_router(audit: AuditLog) -> APIRouter:
    api = APIRouter(tags=["audit"])

    @api.get("/api/v1/audit")
    async def records(
        who: Reader,
        site: SiteQuery = None,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict[str, Any]]:
        found = await audit.read(site=_visible(who, site), after_seq=after, limit=limit)
        return [_shown(d) for d in found]

    @api.get("/api/v1/audit/verify")
    async def verify(_: Reader) -> dict[str, Any]:
        found = await audit.verify()
        broken = found.broken
        return {
            "ok": broken is None,
            "checked": found.checked,
            "head": found.head,
            "broken": None if broken is None else {"seq": broken.seq, "reason": broken.reason},
            "by_key": found.by_key,
        }

    @api.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    async def audit_page(
        request: Request,
        who: PageReader,
        site: SiteQuery = None,
        lang: str = "id",
    ) -> Response:
        found = await audit.read(site=_visible(who, site), limit=500)
        return PAGES.TemplateResponse(
            request,
            "audit.html",
            {"lang": "en" if lang == "en" else "id", "records": found, "who": who},
        )

    return api
