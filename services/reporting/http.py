"""HTTP entrypoints of reporting: a site's day in figures."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query

from giliran.contracts.subjects import SITE_PATTERN
from services.reporting.handlers import DaySummary, Reporting, SatisfactionReport


def router(reporting: Reporting) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["reports"])

    @api.get("/sites/{site}/summary", response_model=DaySummary)
    async def summary(
        site: Annotated[str, Path(pattern=SITE_PATTERN, max_length=63)],
        day: Annotated[date, Query(alias="date", description="site-local day, YYYY-MM-DD")],
    ) -> DaySummary:
        return await reporting.day_summary(site, day)

    @api.get("/sites/{site}/satisfaction", response_model=SatisfactionReport)
    async def satisfaction(
        site: Annotated[str, Path(pattern=SITE_PATTERN, max_length=63)],
        first: Annotated[date, Query(alias="from", description="first site-local day")],
        last: Annotated[date, Query(alias="to", description="last site-local day, inclusive")],
    ) -> SatisfactionReport:
        return await reporting.satisfaction(site, first, last)

    return api
