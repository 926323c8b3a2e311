"""Reporting use cases: project events into facts, and summarise a site's day."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel

from giliran.contracts import (
    Event,
    RequestSubmitted,
    TicketCalled,
    TicketCompleted,
    TicketFacts,
    TicketIssued,
)
from giliran.store import Document, from_instant, instant
from services.reporting.domain import Distribution, distribution, local_day
from services.reporting.store import FactStore


class ServiceSummary(BaseModel):
    service: str
    issued: int
    called: int
    completed: int
    wait_seconds: Distribution
    service_seconds: Distribution


class DaySummary(BaseModel):
    site: str
    date: date
    timezone: str
    submitted: int
    issued: int
    called: int
    completed: int
    wait_seconds: Distribution
    service_seconds: Distribution
    by_service: list[ServiceSummary]
    by_channel: dict[str, int]


@dataclass
class Reporting:
    store: FactStore
    timezone: str = "Asia/Jakarta"

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
        await self.store.upsert_ticket(ticket.ticket_id, fields)

    async def day_summary(self, site: str, day: date) -> DaySummary:
        requests = await self.store.requests_on(site, day)
        tickets = await self.store.tickets_on(site, day)
        by_service: dict[str, list[Document]] = defaultdict(list)
        for t in tickets:
            by_service[t["service"]].append(t)
        channels: dict[str, int] = defaultdict(int)
        for r in requests:
            channels[r["channel"]] += 1
        return DaySummary(
            site=site,
            date=day,
            timezone=self.timezone,
            submitted=len(requests),
            **_counts(tickets),
            by_service=[
                ServiceSummary(service=code, **_counts(group))
                for code, group in sorted(by_service.items())
            ],
            by_channel=dict(channels),
        )


def _counts(tickets: list[Document]) -> dict[str, Any]:
    waits = [_seconds(t["issued_at"], t["called_at"]) for t in tickets if t.get("called_at")]
    services = [
        _seconds(t["called_at"], t["completed_at"])
        for t in tickets
        if t.get("completed_at") and t.get("called_at")
    ]
    return {
        "issued": len(tickets),
        "called": sum(1 for t in tickets if t.get("called_at")),
        "completed": sum(1 for t in tickets if t.get("completed_at")),
        "wait_seconds": distribution(waits),
        "service_seconds": distribution(services),
    }


def _seconds(start: str, end: str) -> float:
    return (from_instant(end) - from_instant(start)).total_seconds()


# Registered for every ticket event that carries a new timestamp.
TICKET_EVENTS = (TicketIssued, TicketCalled, TicketCompleted)
