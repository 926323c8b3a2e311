"""Reporting use cases: project events into facts, and summarise a site's day."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from giliran.contracts import (
    Event,
    FeedbackSubmitted,
    NotificationSent,
    RequestSubmitted,
    TicketCalled,
    TicketCancelled,
    TicketCompleted,
    TicketFacts,
    TicketIssued,
    TicketNoShow,
    TicketTransferred,
)
from giliran.contracts.events import NotificationFacts
from giliran.store import Document, from_instant, instant
from services.reporting import ikm as ikm_rules
from services.reporting.domain import Distribution, distribution, local_day
from services.reporting.live import Changes, LiveView, live_view
from services.reporting.store import FactStore


class Counts(BaseModel):
    issued: int
    called: int
    completed: int
    no_show: int
    transferred: int
    cancelled: int
    within_target: float | None  # share of called tickets called within the target wait
    wait_seconds: Distribution
    service_seconds: Distribution


class ServiceSummary(Counts):
    service: str


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


class ChannelFigures(BaseModel):
    sent: int = 0
    failed: int = 0
    cost_units: int = 0


class CounterSummary(Counts):
    counter: str


class HourSummary(Counts):
    hour: str  # site-local hour the tickets were issued, "09"


class DaySummary(Counts):
    site: str
    date: date
    timezone: str
    target_wait_minutes: float
    submitted: int
    by_service: list[ServiceSummary]
    by_counter: list[CounterSummary]
    by_hour: list[HourSummary]
    by_channel: dict[str, int]
    notifications: dict[str, ChannelFigures] = {}


@dataclass
class Reporting:
    store: FactStore
    timezone: str = "Asia/Jakarta"
    target_wait_minutes: float = 30.0
    changes: Changes = field(default_factory=Changes)

    async def record_request(self, event: Event[RequestSubmitted]) -> None:
        request = event.data
        await self.store.upsert_request(
            request.request_id,
            {
                "site": event.site,
                "day": local_day(request.submitted_at, self.timezone).isoformat(),
                "session_id": request.session_id,
                "channel": request.channel.value,
                "services": len(request.services),
                "submitted_at": instant(request.submitted_at),
            },
        )

    async def record_ticket(self, event: Event[TicketFacts]) -> None:
        """Every ticket event carries the ticket's facts, so any of them can create the document;
        each adds the timestamp it knows. Same event twice: same $set, same document."""
        ticket = event.data
        fields: dict[str, Any] = {
            "site": event.site,
            "day": local_day(ticket.issued_at, self.timezone).isoformat(),
            "session_id": ticket.session_id,
            "request_id": ticket.request_id,
            "service": ticket.service,
            "number": ticket.number,
            "issued_at": instant(ticket.issued_at),
        }
        if isinstance(ticket, TicketCalled | TicketCompleted):
            fields["called_at"] = instant(ticket.called_at)
            fields["counter"] = ticket.counter
        if isinstance(ticket, TicketCompleted):
            fields["completed_at"] = instant(ticket.completed_at)
        if isinstance(ticket, TicketNoShow):
            fields["no_show_at"] = instant(ticket.marked_at)
        if isinstance(ticket, TicketTransferred):
            fields["transferred_at"] = instant(ticket.transferred_at)
            fields["transferred_to"] = ticket.to_service
        if isinstance(ticket, TicketCancelled):
            fields["cancelled_at"] = instant(ticket.cancelled_at)
        await self.store.upsert_ticket(ticket.ticket_id, fields)
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
        else:
            fields["failed_at"] = instant(event.time)
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
        tickets = await self.store.tickets_on(site, local_day(now, self.timezone))
        return live_view(site, tickets, now, version)

    async def period(self, site: str, first: date, last: date) -> list[DaySummary]:
        days = (last - first).days + 1
        return [await self.day_summary(site, first + timedelta(days=i)) for i in range(days)]

    async def kabupaten(self, day: date) -> KabupatenSummary:
        sites = [await self.day_summary(s, day) for s in await self.store.sites_on(day)]
        return KabupatenSummary(
            date=day,
            sites=sites,
            submitted=sum(s.submitted for s in sites),
            issued=sum(s.issued for s in sites),
            called=sum(s.called for s in sites),
            completed=sum(s.completed for s in sites),
        )

    async def day_summary(self, site: str, day: date) -> DaySummary:
        requests = await self.store.requests_on(site, day)
        tickets = await self.store.tickets_on(site, day)
        target = self.target_wait_minutes * 60
        zone = ZoneInfo(self.timezone)
        by_service: dict[str, list[Document]] = defaultdict(list)
        by_counter: dict[str, list[Document]] = defaultdict(list)
        by_hour: dict[str, list[Document]] = defaultdict(list)
        for t in tickets:
            by_service[t["service"]].append(t)
            if t.get("counter"):
                by_counter[t["counter"]].append(t)
            by_hour[f"{from_instant(t['issued_at']).astimezone(zone):%H}"].append(t)
        channels: dict[str, int] = defaultdict(int)
        for r in requests:
            channels[r["channel"]] += 1
        notifications: dict[str, ChannelFigures] = {}
        for n in await self.store.notifications_on(site, day):
            figures = notifications.setdefault(n["channel"], ChannelFigures())
            if n.get("sent_at"):
                figures.sent += 1
                figures.cost_units += int(n.get("cost_units", 0))
            else:
                figures.failed += 1
        return DaySummary(
            site=site,
            date=day,
            timezone=self.timezone,
            target_wait_minutes=self.target_wait_minutes,
            submitted=len(requests),
            **_counts(tickets, target),
            by_service=[
                ServiceSummary(service=code, **_counts(group, target))
                for code, group in sorted(by_service.items())
            ],
            by_counter=[
                CounterSummary(counter=c, **_counts(group, target))
                for c, group in sorted(by_counter.items())
            ],
            by_hour=[
                HourSummary(hour=h, **_counts(group, target))
                for h, group in sorted(by_hour.items())
            ],
            by_channel=dict(channels),
            notifications=dict(sorted(notifications.items())),
        )


class KabupatenSummary(BaseModel):
    """Every site with activity on a day, side by side, and their sum."""

    date: date
    sites: list[DaySummary]
    submitted: int
    issued: int
    called: int
    completed: int


def _counts(tickets: list[Document], target_wait_seconds: float) -> dict[str, Any]:
    waits = [_seconds(t["issued_at"], t["called_at"]) for t in tickets if t.get("called_at")]
    within = sum(1 for w in waits if w <= target_wait_seconds)
    services = [
        _seconds(t["called_at"], t["completed_at"])
        for t in tickets
        if t.get("completed_at") and t.get("called_at")
    ]
    return {
        "issued": len(tickets),
        "called": sum(1 for t in tickets if t.get("called_at")),
        "completed": sum(1 for t in tickets if t.get("completed_at")),
        "no_show": sum(1 for t in tickets if t.get("no_show_at")),
        "transferred": sum(1 for t in tickets if t.get("transferred_at")),
        "cancelled": sum(1 for t in tickets if t.get("cancelled_at")),
        "within_target": round(within / len(waits), 4) if waits else None,
        "wait_seconds": distribution(waits),
        "service_seconds": distribution(services),
    }


def _seconds(start: str, end: str) -> float:
    return (from_instant(end) - from_instant(start)).total_seconds()


# Registered for every ticket event that carries a new fact (a recall changes none of these).
TICKET_EVENTS = (
    TicketIssued,
    TicketCalled,
    TicketCompleted,
    TicketNoShow,
    TicketTransferred,
    TicketCancelled,
)
