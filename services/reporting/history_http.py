"""HTTP entrypoints of the history views: a session, a site over a period, the kabupaten with its
BOTRAM fairs side by side — JSON for tools, pages with SVG charts for people and projectors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse

from giliran.contracts import utcnow
from giliran.contracts.subjects import SITE_PATTERN
from giliran.errors import NotFound
from giliran.runtime import from_app_state
from services.reporting import charts
from services.reporting.domain import local_day
from services.reporting.figures import Counts, DaySummary
from services.reporting.history import History, KabupatenPeriod, SitePeriod
from services.reporting.http import (
    MAX_PERIOD_DAYS,
    OUTCOMES,
    PAGES,
    PRIORITIES,
    PeriodInvalid,
    Reader,
    ReaderPage,
    whole_kabupaten,
)

DEFAULT_DAYS = 30
LABELS = {**OUTCOMES, **PRIORITIES}
SiteQuery = Annotated[str, Query(pattern=SITE_PATTERN, max_length=63)]
SitePath = Annotated[str, Path(pattern=SITE_PATTERN, max_length=63)]
SessionId = Annotated[str, Query(min_length=1, max_length=128)]
From = Annotated[date | None, Query(alias="from", description="first local day")]
To = Annotated[date | None, Query(alias="to", description="last local day, inclusive")]


class SessionNotFound(NotFound):
    def __init__(self, site: str, session_id: str) -> None:
        super().__init__(
            f"Sesi {session_id} di {site} tidak ditemukan.",
            f"Session {session_id} at {site} not found.",
        )


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


def _wait_series(rows: Sequence[Counts]) -> dict[str, list[float | None]]:
    return {
        "tunggu p50 (menit)": [_minutes(r.wait_seconds.p50) for r in rows],
        "tunggu p90 (menit)": [_minutes(r.wait_seconds.p90) for r in rows],
    }


Histories = Annotated[History, Depends(from_app_state("history", History))]
api = APIRouter(tags=["history"])


def period(history: History, first: date | None, last: date | None) -> tuple[date, date]:
    """Default: the 30 days up to today (site-local)."""
    last = last or local_day(utcnow(), history.timezone)
    first = first or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last or (last - first).days >= MAX_PERIOD_DAYS:
        raise PeriodInvalid()
    return first, last


async def session_or_404(history: History, site: str, session_id: str) -> DaySummary:
    found = await history.session(site, session_id)
    if found is None:
        raise SessionNotFound(site, session_id)
    return found


@api.get("/api/v1/sites/{site}/history", response_model=SitePeriod)
async def site_history(
    history: Histories, site: SitePath, _: Reader, first: From = None, last: To = None
) -> SitePeriod:
    return await history.site_period(site, *period(history, first, last))


@api.get("/api/v1/sites/{site}/sessions/{session_id}", response_model=DaySummary)
async def session_figures(
    history: Histories, site: SitePath, session_id: Annotated[str, Path(max_length=128)], _: Reader
) -> DaySummary:
    return await session_or_404(history, site, session_id)


@api.get("/api/v1/kabupaten/history", response_model=KabupatenPeriod)
async def kabupaten_history(
    history: Histories, who: Reader, first: From = None, last: To = None
) -> KabupatenPeriod:
    whole_kabupaten(who)
    return await history.kabupaten(*period(history, first, last))


def page(request: Request, template: str, context: dict[str, Any]) -> HTMLResponse:
    return PAGES.TemplateResponse(request, template, {"labels": LABELS, **context})


@api.get("/history/session", response_class=HTMLResponse)
async def session_page(
    history: Histories, request: Request, site: SiteQuery, session: SessionId, _: ReaderPage
) -> HTMLResponse:
    day = await session_or_404(history, site, session)
    hours = [f"{h.hour}:00" for h in day.by_hour]
    return page(request, "history_session.html", {
        "day": day,
        "session_id": session,
        "name": history.name(site),
        "chart_hours": charts.bars(
            "Tiket per jam / Tickets per hour", hours,
            {"diambil": [h.issued for h in day.by_hour],
             "selesai": [h.completed for h in day.by_hour]},
        ),
        "chart_waits": charts.bars(
            "Waktu tunggu per jam (menit) / Wait per hour (min)", hours,
            _wait_series(day.by_hour),
        ),
    })  # fmt: skip


@api.get("/history/site", response_class=HTMLResponse)
async def site_page(
    history: Histories,
    request: Request,
    site: SiteQuery,
    _: ReaderPage,
    first: From = None,
    last: To = None,
) -> HTMLResponse:
    figures = await history.site_period(site, *period(history, first, last))
    labels = [f"{d.date:%d-%m}" for d in figures.days]
    return page(request, "history_site.html", {
        "p": figures,
        "chart_days": charts.bars(
            "Tiket per hari / Tickets per day", labels,
            {"diambil": [d.issued for d in figures.days],
             "selesai": [d.completed for d in figures.days]},
        ),
        "chart_waits": charts.bars(
            "Waktu tunggu per hari (menit) / Wait per day (min)", labels,
            _wait_series(figures.days),
        ),
    })  # fmt: skip


@api.get("/history/kabupaten", response_class=HTMLResponse)
async def kabupaten_page(
    history: Histories, request: Request, who: ReaderPage, first: From = None, last: To = None
) -> HTMLResponse:
    whole_kabupaten(who)
    k = await history.kabupaten(*period(history, first, last))
    fair_labels = [f"{f.name} {f.day:%d-%m}" for f in k.fairs]
    return page(request, "history_kabupaten.html", {
        "k": k,
        "chart_sites": charts.bars(
            "Selesai per lokasi / Completed per site", [s.name for s in k.sites],
            {"selesai": [s.completed for s in k.sites],
             "tidak hadir": [s.no_show for s in k.sites]},
            horizontal=True,
        ),
        "chart_fairs": charts.bars(
            "BOTRAM: tunggu per acara (menit) / wait per fair (min)", fair_labels,
            _wait_series(k.fairs), horizontal=True,
        ),
    })  # fmt: skip
