"""HTTP entrypoints of reporting: a site's day in figures."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query

from giliran.contracts.subjects import SITE_PATTERN
from services.reporting.handlers import DaySummary, Reporting


def router(reporting: Reporting) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["reports"])

    @api.get("/sites/{site}/summary", response_model=DaySummary)
    async def summary(
        site: Annotated[str, Path(pattern=SITE_PATTERN, max_length=63)],
        day: Annotated[date, Query(alias="date", description="site-local day, YYYY-MM-DD")],
    ) -> DaySummary:
        return await reporting.day_summary(site, day)

    return api
