"""Reporting use cases: project events into facts and report cells, and summarise them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from giliran.contracts import (
    CounterClosed,
    CounterOpened,
    Event,
    FeedbackSubmitted,
    NotificationFailed,
    NotificationReceipt,
    NotificationSent,
    RequestSubmitted,
    TicketCalled,
    TicketCancelled,
    TicketCompleted,
    TicketFacts,
    TicketIssued,
    TicketNoShow,
    TicketStarted,
    TicketTransferred,
)
from giliran.contracts.events import NotificationFacts, RequestCheckedIn
from giliran.push import Changes
from giliran.store import Document, instant
from services.reporting import ikm as ikm_rules
from services.reporting.cells import (
    CellKey,
    RequestCellKey,
    request_contributions,
    tally,
    ticket_contributions,
)
from services.reporting.domain import local_day
from services.reporting.figures import (
    ChannelFigures,
    Counts,
    DaySummary,
    KabupatenSummary,
    counts,
    day_figures,
)
from services.reporting.live import LiveView, live_view
from services.reporting.store import FactStore

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
    store: FactStore
    timezone: str = "Asia/Jakarta"
    target_wait_minutes: float = 30.0
    changes: Changes = field(default_factory=Changes)

    async def record_request(self, event: Event[RequestSubmitted]) -> None:
        request = event.data
        day = local_day(request.submitted_at, self.timezone).isoformat()
        fields: dict[str, Any] = {
            "site": event.site,
            "day": day,
            "session_id": request.session_id,
            "channel": request.channel.value,
            "services": len(request.services),
            "submitted_at": instant(request.submitted_at),
            "priority": request.priority.value if request.priority else None,
            "booked": request.appointment_at is not None,
        }
        await self.store.upsert_request(request.request_id, fields)
        key = RequestCellKey(event.site, day, request.session_id, request.channel.value)
        for c in request_contributions(request, key):
            await self.store.contribute_request(request.request_id, c)

    async def record_check_in(self, event: Event[RequestCheckedIn]) -> None:
        """A booking's holder arrived: counted on the day of arrival; its tickets join the line."""
        arrival = event.data
        day = local_day(arrival.checked_in_at, self.timezone).isoformat()
        at = instant(arrival.checked_in_at)
        await self.store.upsert_request(arrival.request_id, {"checked_in_at": at})
        await self.store.mark_checked_in(arrival.request_id, at)
        key = RequestCellKey(event.site, day, arrival.session_id, "")
        for c in request_contributions(arrival, key):
            await self.store.contribute_request(arrival.request_id, c)
        self.changes.bump(event.site)

    async def record_ticket(self, event: Event[TicketFacts]) -> None:
        """Every ticket event carries the ticket's facts, so any of them can create the document;
        each adds the timestamps it knows (same event twice: same $set, same document). Then
        each figure the event owns is added to its cell, once per ticket (contribute_ticket)."""
        ticket = event.data
        day = local_day(ticket.issued_at, self.timezone).isoformat()
        hour = f"{ticket.issued_at.astimezone(ZoneInfo(self.timezone)):%H}"
        fields: dict[str, Any] = {
            "site": event.site,
            "day": day,
            "hour": hour,
            "session_id": ticket.session_id,
            "request_id": ticket.request_id,
            "service": ticket.service,
            "number": ticket.number,
            "issued_at": instant(ticket.issued_at),
        }
        if isinstance(ticket, TicketIssued):
            fields["arrived"] = ticket.arrived
            if not ticket.arrived:  # a booking: its holder may have checked in before this event
                checked_in = await self.store.checked_in_at(ticket.request_id)
                if checked_in:
                    fields["checked_in_at"] = checked_in
            fields["priority"] = ticket.priority.value if ticket.priority else None
            if ticket.eta is not None:
                fields["eta"] = instant(ticket.eta)
        if isinstance(ticket, TicketCalled | TicketStarted | TicketCompleted):
            fields["called_at"] = instant(ticket.called_at)
            fields["counter"] = ticket.counter
        if isinstance(ticket, TicketCalled) and ticket.queued_at is not None:
            fields["queued_at"] = instant(ticket.queued_at)
        if isinstance(ticket, TicketStarted):
            fields["started_at"] = instant(ticket.started_at)
        if isinstance(ticket, TicketCompleted):
            fields["completed_at"] = instant(ticket.completed_at)
            fields["outcome"] = ticket.outcome.value
        if isinstance(ticket, TicketNoShow):
            fields["no_show_at"] = instant(ticket.marked_at)
        if isinstance(ticket, TicketTransferred):
            fields["transferred_at"] = instant(ticket.transferred_at)
            fields["transferred_to"] = ticket.to_service
        if isinstance(ticket, TicketCancelled):
            fields["cancelled_at"] = instant(ticket.cancelled_at)
        stored = await self.store.upsert_ticket(ticket.ticket_id, fields)
        key = CellKey(event.site, day, ticket.session_id, ticket.service, hour)
        for c in ticket_contributions(ticket, key, stored):
            await self.store.contribute_ticket(ticket.ticket_id, c)
        self.changes.bump(event.site)

    async def record_counter(self, event: Event[CounterOpened | CounterClosed]) -> None:
        """Open, paused or closed, by the latest event (ties: closed, then paused, win)."""
        change = event.data
        if isinstance(change, CounterOpened):
            state, rank = "open", 0
        else:
            state, rank = ("paused", 1) if change.paused else ("closed", 2)
        await self.store.set_counter(
            f"{event.site}|{change.session_id}|{change.counter}",
            {
                "site": event.site,
                "day": local_day(change.at, self.timezone).isoformat(),
                "session_id": change.session_id,
                "counter": change.counter,
                "state": state,
                "at": instant(change.at),
            },
            # microseconds since the epoch, then the tie-breaker
            order=round(change.at.timestamp() * 1_000_000) * 10 + rank,
        )
        self.changes.bump(event.site)

    async def record_feedback(self, event: Event[FeedbackSubmitted]) -> None:
        """One SKM answer per feedback id: the same answer twice is still one answer."""
        answer = event.data
        await self.store.upsert_feedback(
            answer.feedback_id,
            {
                "site": event.site,
                "day": local_day(answer.submitted_at, self.timezone).isoformat(),
                "session_id": answer.session_id,
                "service": answer.service,
                "scores": dict(answer.scores),
            },
        )

    async def record_notification(self, event: Event[NotificationFacts]) -> None:
        """A delivery's outcome: sent (with its cost) or failed; a later success wins, as a
        retried delivery ends sent."""
        note = event.data
        fields: dict[str, Any] = {
            "site": event.site,
            "day": local_day(event.time, self.timezone).isoformat(),
            "channel": note.channel,
            "template": note.template,
        }
        if isinstance(note, NotificationSent):
            fields["sent_at"] = instant(note.sent_at)
            fields["cost_units"] = note.cost_units
        elif isinstance(note, NotificationReceipt):
            # The report's day is the message's day: it settles that day's accepted count.
            del fields["day"]
            fields["receipt"] = note.outcome.value
        else:
            fields["failed_at"] = instant(event.time)
            fields["refused"] = isinstance(note, NotificationFailed) and note.refused
        await self.store.upsert_notification(note.delivery_id, fields)

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

    async def _notifications(self, site: str, day: date) -> dict[str, ChannelFigures]:
        notifications: dict[str, ChannelFigures] = {}
        for n in await self.store.notifications_on(site, day):
            figures = notifications.setdefault(n["channel"], ChannelFigures())
            if n.get("sent_at"):
                figures.sent += 1
                figures.cost_units += int(n.get("cost_units", 0))
                if n.get("receipt") == "delivered":
                    figures.delivered += 1
                elif n.get("receipt") == "undelivered":
                    figures.undelivered += 1
            elif n.get("failed_at"):
                figures.failed += 1
                figures.refused += bool(n.get("refused"))
        return notifications

    async def day_summary(self, site: str, day: date) -> DaySummary:
        return day_figures(
            site,
            day,
            await self.store.ticket_cells_where(day, day, site=site),
            await self.store.request_cells_where(day, day, site=site),
            timezone=self.timezone,
            target_wait_minutes=self.target_wait_minutes,
            notifications=await self._notifications(site, day),
        )

    async def period(self, site: str, first: date, last: date) -> list[DaySummary]:
        days = (last - first).days + 1
        return [await self.day_summary(site, first + timedelta(days=i)) for i in range(days)]

    async def kabupaten(self, day: date) -> KabupatenSummary:
        """Every site of the day from one read of the day's cells."""
        cells = await self.store.ticket_cells_where(day, day)
        request_cells = await self.store.request_cells_where(day, day)
        by_site: dict[str, tuple[list[Document], list[Document]]] = {}
        for cell in cells:
            by_site.setdefault(cell["site"], ([], []))[0].append(cell)
        for cell in request_cells:
            by_site.setdefault(cell["site"], ([], []))[1].append(cell)
        sites = [
            day_figures(
                site, day, site_cells, site_requests, timezone=self.timezone,
                target_wait_minutes=self.target_wait_minutes,
                notifications=await self._notifications(site, day),
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
