"""A request's view of its tickets: the typed entry and the pure rule applying a ticket event."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from giliran.contracts import Event, TicketFacts, TicketStatus
from giliran.store import Document, instant
from services.intake.domain import newer_status


class TicketEntry(BaseModel):
    """One ticket as the citizen's request shows it (stored under `tickets.<ticket_id>`)."""

    model_config = ConfigDict(frozen=True)

    ticket_id: str
    number: str
    service: str
    status: TicketStatus
    counter: str | None = None
    # The time of the event that set this entry, as the store keeps instants (ADR 0004: string
    # order is time order, also inside the store's filter). An entry stored before may have the
    # extended ISO form or none (""): both order before any instant, so any event moves it.
    event_time: str = ""

    @classmethod
    def of(cls, event: Event[TicketFacts]) -> TicketEntry:
        ticket = event.data
        return cls(
            ticket_id=ticket.ticket_id,
            number=ticket.number,
            service=ticket.service,
            status=ticket.status_after,
            counter=getattr(ticket, "counter", None),
            event_time=instant(event.time),
        )


def applied(current: TicketEntry | None, incoming: TicketEntry) -> TicketEntry | None:
    """The entry once `incoming` is applied over `current`, or None when it changes nothing.

    Events come at least once and, across instances, in any order: a status only moves to an
    equal or higher rank (equal: a recall at another counter), and an event older than the one
    shown is ignored. A later event without a counter keeps the counter already known."""
    if current is not None and (
        not newer_status(current.status, incoming.status)
        or current.event_time > incoming.event_time
    ):
        return None
    if incoming.counter is None and current is not None and current.counter is not None:
        return incoming.model_copy(update={"counter": current.counter})
    return incoming


def applied_in_order(
    current: Mapping[str, TicketEntry], incoming: Sequence[TicketEntry]
) -> tuple[dict[str, TicketEntry], list[TicketEntry | None]]:
    """A request's entries once `incoming` (its events of a batch, in stream order) are applied
    one after another by `applied`, and for each event the entry it set, or None when it
    changed nothing (a duplicate, or older than what is known). An event that sets what is
    already there counts as setting it, as the store's filter does."""
    entries = dict(current)
    results: list[TicketEntry | None] = []
    for entry in incoming:
        after = applied(entries.get(entry.ticket_id), entry)
        if after is not None:
            entries[entry.ticket_id] = after
        results.append(after)
    return entries, results


def outranking(status: TicketStatus) -> list[str]:
    """The statuses a ticket can no longer leave for `status` (a higher rank): what the store's
    conditional write must not find before it applies an event with this status."""
    return [s.value for s in TicketStatus if s.rank > status.rank]


@dataclass
class TicketWait:
    """A kiosk's answer waiting for its tickets: the entries this process's own ticket consumer
    has just written for the request, and those heard as the queue issued them (ADR 0228), so
    the answer needs no read of what was just written.

    `site` and `services`: the waiting request's, once known. A ticket heard on plain NATS is
    taken only if it is for that site and for a service the request asked for and has no ticket
    for yet (`fits`): another site's notice naming this request id, or a second ticket for one
    service, never reaches the answer."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)
    entries: dict[str, TicketEntry] = field(default_factory=dict)
    site: str | None = None
    services: tuple[str, ...] = ()

    def seen(self, entry: TicketEntry) -> None:
        self.entries[entry.ticket_id] = (
            applied(self.entries.get(entry.ticket_id), entry) or self.entries[entry.ticket_id]
        )
        self.changed.set()

    def fits(self, site: str, entry: TicketEntry) -> bool:
        """Whether a heard issued ticket may be this request's (pure): same site, a service
        it asked for, and not a second ticket for a service it already has one for."""
        return (
            self.site == site
            and entry.service in self.services
            and all(
                e.ticket_id == entry.ticket_id or e.service != entry.service
                for e in self.entries.values()
            )
        )

    def merged(self, request: Document) -> Document:
        """`request` (as stored or as submitted) with the entries seen here applied over its
        own: whichever is further along wins, by the same rule as the store's write."""
        tickets: dict[str, Document] = dict(request.get("tickets") or {})
        for ticket_id, entry in self.entries.items():
            stored = tickets.get(ticket_id)
            after = applied(TicketEntry.model_validate(stored) if stored else None, entry)
            if after is not None:
                tickets[ticket_id] = after.model_dump(mode="json")
        return {**request, "tickets": tickets}
