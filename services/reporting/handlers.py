"""Reporting use cases: project events into facts and report cells, and summarise them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from giliran.contracts import (
    Event,
    TicketCalled,
    TicketCancelled,
    TicketCompleted,
    TicketIssued,
    TicketNoShow,
    TicketStarted,
    TicketTransferred,
)
from giliran.push import Changes
from giliran.store import Document
from services.reporting import fold as fold_rules
from services.reporting import ikm as ikm_rules
from services.reporting.cells import notification_contributions, tally
from services.reporting.domain import local_day
from services.reporting.figures import (
    Counts,
    DaySummary,
    KabupatenSummary,
    channel_figures,
    counts,
    day_figures,
)
from services.reporting.live import LiveView, live_view
from services.reporting.store import Facts

__all__ = ["DaySummary", "KabupatenSummary", "Reporting", "SatisfactionReport"]


class ElementScore(BaseModel):
    element: str
    name_id: str
    name_en: str
    nrr: float
    nrr_weighted: float


class GradeView(BaseModel):
    letter: str
    name_id: str
    name_en: str


class SatisfactionReport(BaseModel):
    """IKM per PermenPANRB 14/2017 for a site and period (site-local days, inclusive)."""

    site: str
    first: date
    last: date
    responses: int
    served: int
    required_sample: int
    meets_sample: bool
    elements: list[ElementScore]
    ikm: float | None
    grade: GradeView | None


@dataclass
class Reporting:
    store: Facts
    timezone: str = "Asia/Jakarta"
    target_wait_minutes: float = 30.0
    changes: Changes = field(default_factory=Changes)
    # True while this process fills the notification cells from facts folded before they existed
    # (app.py, ADR 0229): until then a summary's notification figures may be short, and say so.
    filling_notification_cells: bool = False

    async def fold(self, events: Sequence[Event[Any]]) -> set[str]:
        """Project a fetched batch: load what the facts need from the store (bookings' check-ins),
        decide (`fold.fold`, pure), save one write per fact document, then one write per report
        cell. Returns the events whose fact document had already folded them (redeliveries);
        their cell contributions are made again all the same — the cells' marks drop them — since
        a crash may have come between the facts and the cells."""
        batch = fold_rules.fold(events, self.timezone)
        if batch.bookings:
            batch.arrived(await self.store.checked_in(batch.bookings))
        if batch.check_ins:
            await self.store.mark_checked_in(batch.check_ins)
        folded_requests = await self.store.save_requests(batch.requests)
        folded_tickets, stored = await self.store.save_tickets(batch.tickets, batch.eta_owners())
        notifications = await self.store.save_notifications(batch.notifications)
        await self.store.save_feedback(batch.feedback)
        await self.store.save_counters(batch.counters.values())
        await self.store.add_request_cells(batch.request_cells)
        await self.store.add_ticket_cells(batch.ticket_cells(stored))
        await self.store.add_notification_cells(
            [
                (notification.delivery_id or key, c)
                for key, notification in notifications.items()
                for c in notification_contributions(
                    notification,
                    self.timezone,
                    fold_rules.notification_facts(batch.notifications[key]),
                )
            ]
        )
        for site in batch.changed_sites:
            self.changes.bump(site)
        return batch.duplicates({**folded_requests, **folded_tickets})

    async def satisfaction(self, site: str, first: date, last: date) -> SatisfactionReport:
        answers = await self.store.feedback_between(site, first, last)
        served = await self.store.completed_between(site, first, last)
        survey = ikm_rules.tally(a["scores"] for a in answers)
        required = ikm_rules.krejcie_morgan(served)
        if survey.responses == 0:
            return SatisfactionReport(
                site=site, first=first, last=last, responses=0, served=served,
                required_sample=required, meets_sample=False, elements=[], ikm=None, grade=None,
            )  # fmt: skip
        nrr = survey.nrr()
        index = ikm_rules.published(ikm_rules.ikm(nrr))
        band = ikm_rules.grade(index)
        return SatisfactionReport(
            site=site,
            first=first,
            last=last,
            responses=survey.responses,
            served=served,
            required_sample=required,
            meets_sample=survey.responses >= required,
            elements=[
                ElementScore(
                    element=e,
                    name_id=ikm_rules.ELEMENT_NAMES[e][0],
                    name_en=ikm_rules.ELEMENT_NAMES[e][1],
                    nrr=float(round(nrr[e], 4)),
                    nrr_weighted=float(round(nrr[e] / 9, 4)),
                )
                for e in ikm_rules.ELEMENTS
            ],
            ikm=float(index),
            grade=GradeView(letter=band.letter, name_id=band.name_id, name_en=band.name_en),
        )

    async def live(self, site: str, now: datetime) -> LiveView:
        version = self.changes.version(site)
        today = local_day(now, self.timezone)
        tickets = await self.store.tickets_on(site, today)
        counters = await self.store.counters_on(site, today)
        return live_view(site, tickets, counters, now, version)

    async def day_summary(self, site: str, day: date) -> DaySummary:
        """Three reads of cells, however many tickets, requests and notifications the day had."""
        return day_figures(
            site,
            day,
            await self.store.ticket_cells_where(day, day, site=site),
            await self.store.request_cells_where(day, day, site=site),
            timezone=self.timezone,
            target_wait_minutes=self.target_wait_minutes,
            notifications=channel_figures(
                await self.store.notification_cells_where(day, day, site=site)
            ),
            notifications_partial=self.filling_notification_cells,
        )

    async def period(self, site: str, first: date, last: date) -> list[DaySummary]:
        days = (last - first).days + 1
        return [await self.day_summary(site, first + timedelta(days=i)) for i in range(days)]

    async def kabupaten(self, day: date) -> KabupatenSummary:
        """Every site of the day from one read of the day's cells."""
        cells = await self.store.ticket_cells_where(day, day)
        request_cells = await self.store.request_cells_where(day, day)
        notification_cells = await self.store.notification_cells_where(day, day)
        by_site: dict[str, tuple[list[Document], list[Document]]] = {}
        for cell in cells:
            by_site.setdefault(cell["site"], ([], []))[0].append(cell)
        for cell in request_cells:
            by_site.setdefault(cell["site"], ([], []))[1].append(cell)
        sites = [
            day_figures(
                site, day, site_cells, site_requests, timezone=self.timezone,
                target_wait_minutes=self.target_wait_minutes,
                notifications=channel_figures(
                    c for c in notification_cells if c["site"] == site
                ),
                notifications_partial=self.filling_notification_cells,
            )
            for site, (site_cells, site_requests) in sorted(by_site.items())
        ]  # fmt: skip
        return KabupatenSummary(
            date=day,
            sites=sites,
            submitted=sum(s.submitted for s in sites),
            issued=sum(s.issued for s in sites),
            called=sum(s.called for s in sites),
            completed=sum(s.completed for s in sites),
            totals=Counts(**counts(tally(cells), self.target_wait_minutes * 60)),
        )


# Registered for every ticket event that carries a new fact (a recall changes none of these).
TICKET_EVENTS = (
    TicketIssued,
    TicketCalled,
    TicketStarted,
    TicketCompleted,
    TicketNoShow,
    TicketTransferred,
    TicketCancelled,
)
