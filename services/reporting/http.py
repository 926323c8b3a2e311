"""HTTP entrypoints of reporting: a site's day and period in figures, the IKM, exports, the
kabupaten roll-up and the printable daily report."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from giliran.auth import ALL_SITES, Principal, Role, requires, wrong_site
from giliran.contracts import utcnow
from giliran.contracts.subjects import SITE_PATTERN
from giliran.errors import DomainError
from giliran.push import credential_of, limited_stream
from giliran.runtime import from_app_state
from services.reporting import charts, exports
from services.reporting.handlers import (
    DaySummary,
    KabupatenSummary,
    Reporting,
    SatisfactionReport,
)
from services.reporting.live import LiveView

PAGES = Jinja2Templates(directory=FilePath(__file__).parent / "pages")
MAX_PERIOD_DAYS = 366
HEARTBEAT_SECONDS = 15.0
COALESCE_SECONDS = 0.05

# What the pages call the officers' outcome codes and the priority reasons.
OUTCOMES = {
    "served": "dilayani / served",
    "documents_incomplete": "berkas belum lengkap / documents incomplete",
    "referred": "dirujuk / referred",
    "rejected": "ditolak / rejected",
}
PRIORITIES = {
    "elderly": "lansia / elderly",
    "disability": "disabilitas / disability",
    "pregnancy": "ibu hamil / pregnant",
    "infant": "membawa bayi / with an infant",
}

Site = Annotated[str, Path(pattern=SITE_PATTERN, max_length=63)]
# Figures and exports of a site: its supervisors and auditors, and admins.
READERS = (Role.SUPERVISOR, Role.AUDITOR, Role.ADMIN)
Reader = Annotated[Principal, Depends(requires(*READERS))]
ReaderPage = Annotated[Principal, Depends(requires(*READERS, page=True))]


def whole_kabupaten(who: Principal) -> None:
    """Every site's figures: for accounts of the whole kabupaten only."""
    if who.site != ALL_SITES:
        raise wrong_site(who, ALL_SITES)


First = Annotated[date, Query(alias="from", description="first site-local day")]
Last = Annotated[date, Query(alias="to", description="last site-local day, inclusive")]


class PeriodInvalid(DomainError):
    code = "period_invalid"

    def __init__(self) -> None:
        super().__init__(
            f"Periode tidak valid: 'from' harus sebelum atau sama dengan 'to', paling lama "
            f"{MAX_PERIOD_DAYS} hari.",
            f"Invalid period: 'from' must not be after 'to', and at most {MAX_PERIOD_DAYS} days.",
        )


def _check(first: date, last: date) -> None:
    if first > last or (last - first).days >= MAX_PERIOD_DAYS:
        raise PeriodInvalid()


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


Reports = Annotated[Reporting, Depends(from_app_state("reporting", Reporting))]
api = APIRouter(tags=["reports"])


@api.get("/api/v1/sites/{site}/summary", response_model=DaySummary)
async def summary(
    reporting: Reports,
    site: Site,
    _: Reader,
    day: Annotated[date, Query(alias="date", description="site-local day, YYYY-MM-DD")],
) -> DaySummary:
    return await reporting.day_summary(site, day)


@api.get("/api/v1/sites/{site}/satisfaction", response_model=SatisfactionReport)
async def satisfaction(
    reporting: Reports, site: Site, first: First, last: Last, _: Reader
) -> SatisfactionReport:
    _check(first, last)
    return await reporting.satisfaction(site, first, last)


@api.get("/api/v1/sites/{site}/export.csv", response_class=Response)
async def export_csv(
    reporting: Reports, site: Site, first: First, last: Last, _: Reader
) -> Response:
    _check(first, last)
    table = exports.rows(await reporting.period(site, first, last))
    return Response(
        exports.to_csv(table),
        media_type="text/csv; charset=utf-8",
        headers=_attachment(f"giliran-{site}-{first}-{last}.csv"),
    )


@api.get("/api/v1/sites/{site}/export.xlsx", response_class=Response)
async def export_xlsx(
    reporting: Reports, site: Site, first: First, last: Last, _: Reader
) -> Response:
    _check(first, last)
    table = exports.rows(await reporting.period(site, first, last))
    ikm = await reporting.satisfaction(site, first, last)
    return Response(
        exports.to_xlsx(table, ikm),
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers=_attachment(f"giliran-{site}-{first}-{last}.xlsx"),
    )


@api.get("/api/v1/kabupaten/summary", response_model=KabupatenSummary)
async def kabupaten(
    reporting: Reports,
    day: Annotated[date, Query(alias="date", description="local day, YYYY-MM-DD")],
    who: Reader,
) -> KabupatenSummary:
    whole_kabupaten(who)
    return await reporting.kabupaten(day)


@api.get("/api/v1/sites/{site}/live", response_model=LiveView)
async def live_now(reporting: Reports, site: Site, _: Reader) -> LiveView:
    return await reporting.live(site, utcnow())


@api.get("/api/v1/sites/{site}/live/stream")
async def live_stream(reporting: Reports, site: Site, request: Request, _: Reader) -> Response:
    """Server push (SSE): the live view now, then again within moments of every change;
    EventSource reconnects by itself after a drop or a restart and gets the view anew."""

    async def events() -> AsyncIterator[str]:
        seen = -1
        while not await request.is_disconnected():
            version = await reporting.changes.wait(site, seen, HEARTBEAT_SECONDS)
            if version == seen:
                yield ": heartbeat\n\n"
                continue
            await asyncio.sleep(COALESCE_SECONDS)  # one update for a burst of events
            view = await reporting.live(site, utcnow())
            seen = view.version
            yield f"id: {view.version}\nevent: live\ndata: {view.model_dump_json()}\n\n"

    runtime = request.app.state.runtime
    return limited_stream(request, runtime.streams, credential_of(request), events)


@api.get("/charts/{site}/waiting.svg", response_class=Response)
async def waiting_svg(reporting: Reports, site: Site, _: Reader) -> Response:
    return Response(
        charts.waiting_chart(await reporting.live(site, utcnow())),
        media_type="image/svg+xml",
        headers={"Cache-Control": "no-store"},
    )


@api.get("/dashboard", response_class=HTMLResponse)
async def dashboard(
    reporting: Reports,
    request: Request,
    who: ReaderPage,
    site: Annotated[str, Query(pattern=SITE_PATTERN, max_length=63)] = "cikarang-utara",
) -> HTMLResponse:
    if not who.at(site):
        raise wrong_site(who, site)
    view = await reporting.live(site, utcnow())
    return PAGES.TemplateResponse(request, "dashboard.html", {"view": view})


@api.get("/reports/daily", response_class=HTMLResponse)
async def daily(
    reporting: Reports,
    request: Request,
    _: ReaderPage,
    site: Annotated[str, Query(pattern=SITE_PATTERN, max_length=63)],
    day: Annotated[date, Query(alias="date")],
) -> HTMLResponse:
    return PAGES.TemplateResponse(
        request,
        "daily.html",
        {
            "day": await reporting.day_summary(site, day),
            "ikm": await reporting.satisfaction(site, day, day),
            "outcome_labels": OUTCOMES,
            "priority_labels": PRIORITIES,
        },
    )
