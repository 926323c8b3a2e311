"""History use cases: a session, a site over a period, and the kabupaten with its BOTRAM fairs
side by side, each from one read of report cells."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel

from giliran.catalogue import Catalogue
from services.reporting.cells import tally
from services.reporting.figures import Counts, DaySummary, counts, day_figures, grouped
from services.reporting.store import Facts

BOTRAM, MSC = "BOTRAM", "MSC"


class SiteFigures(Counts):
    site: str
    name: str
    programme: str | None
    submitted: int


class SessionFigures(Counts):
    site: str
    name: str
    programme: str | None
    session_id: str
    day: date


class SitePeriod(Counts):
    """A site over a period: totals, one entry per day with activity, and its sessions."""

    site: str
    name: str
    programme: str | None
    first: date
    last: date
    target_wait_minutes: float
    submitted: int
    days: list[DaySummary]
    sessions: list[SessionFigures]


class KabupatenPeriod(BaseModel):
    """Every site with activity in a period side by side, its BOTRAM fairs (sessions at BOTRAM
    sites) side by side, and the kabupaten's totals."""

    first: date
    last: date
    target_wait_minutes: float
    sites: list[SiteFigures]
    fairs: list[SessionFigures]
    totals: Counts
    submitted: int


@dataclass
class History:
    store: Facts
    catalogue: Catalogue | None = None
    timezone: str = "Asia/Jakarta"
    target_wait_minutes: float = 30.0

    def name(self, site: str) -> str:
        known = self.catalogue.site(site) if self.catalogue else None
        return known.name.id if known else site

    def programme(self, site: str) -> str | None:
        """From the catalogue; a site reporting does not know is a BOTRAM fair when its slug
        says so (fairs rotate over venues not every catalogue lists)."""
        known = self.catalogue.site(site) if self.catalogue else None
        if known:
            return known.programme
        return BOTRAM if site.startswith("botram") else None

    @property
    def _target(self) -> float:
        return self.target_wait_minutes * 60

    def _sessions(self, cells: Sequence[Mapping[str, Any]]) -> list[SessionFigures]:
        """Newest first; a session spans the days its tickets were issued on (its first)."""
        by_session = grouped(cells, lambda c: f"{c['site']}|{c['session_id']}")
        firsts: dict[str, str] = {}
        for c in cells:
            key = f"{c['site']}|{c['session_id']}"
            firsts[key] = min(firsts.get(key, c["day"]), c["day"])
        found = []
        for key, figures in by_session.items():
            site, session_id = key.split("|", 1)
            found.append(
                SessionFigures(
                    site=site, name=self.name(site), programme=self.programme(site),
                    session_id=session_id, day=date.fromisoformat(firsts[key]),
                    **counts(figures, self._target),
                )
            )  # fmt: skip
        return sorted(found, key=lambda s: (s.day, s.site, s.session_id), reverse=True)

    async def session(self, site: str, session_id: str) -> DaySummary | None:
        """One session (a Sunday's MSC, a BOTRAM fair) with the breakdowns of a day."""
        cells = await self.store.ticket_cells_where(date.min, date.max, site, session_id)
        if not cells:
            return None
        requests = await self.store.request_cells_where(date.min, date.max, site, session_id)
        return day_figures(
            site,
            min(date.fromisoformat(c["day"]) for c in cells),
            cells,
            requests,
            timezone=self.timezone,
            target_wait_minutes=self.target_wait_minutes,
            notifications={},
        )

    async def site_period(self, site: str, first: date, last: date) -> SitePeriod:
        cells = await self.store.ticket_cells_where(first, last, site=site)
        request_cells = await self.store.request_cells_where(first, last, site=site)
        by_day: dict[str, list[Mapping[str, Any]]] = {}
        for cell in cells:
            by_day.setdefault(cell["day"], []).append(cell)
        requests_by_day: dict[str, list[Mapping[str, Any]]] = {}
        for cell in request_cells:
            requests_by_day.setdefault(cell["day"], []).append(cell)
        days = [
            day_figures(
                site, date.fromisoformat(d), by_day.get(d, []), requests_by_day.get(d, []),
                timezone=self.timezone, target_wait_minutes=self.target_wait_minutes,
                notifications={},
            )
            for d in sorted(set(by_day) | set(requests_by_day))
        ]  # fmt: skip
        return SitePeriod(
            site=site,
            name=self.name(site),
            programme=self.programme(site),
            first=first,
            last=last,
            target_wait_minutes=self.target_wait_minutes,
            submitted=tally(request_cells).count("submitted"),
            **counts(tally(cells), self._target),
            days=days,
            sessions=self._sessions(cells),
        )

    async def kabupaten(self, first: date, last: date) -> KabupatenPeriod:
        cells = await self.store.ticket_cells_where(first, last)
        request_cells = await self.store.request_cells_where(first, last)
        requests = grouped(request_cells, lambda c: str(c["site"]))
        sites = [
            SiteFigures(
                site=site, name=self.name(site), programme=self.programme(site),
                submitted=requests[site].count("submitted") if site in requests else 0,
                **counts(figures, self._target),
            )
            for site, figures in grouped(cells, lambda c: str(c["site"])).items()
        ]  # fmt: skip
        fairs = [s for s in self._sessions(cells) if s.programme == BOTRAM]
        return KabupatenPeriod(
            first=first,
            last=last,
            target_wait_minutes=self.target_wait_minutes,
            sites=sites,
            fairs=sorted(fairs, key=lambda s: (s.day, s.site)),
            totals=Counts(**counts(tally(cells), self._target)),
            submitted=tally(request_cells).count("submitted"),
        )
