"""Folding a fetched batch of events into reporting's documents: pure, no I/O. What each fact
document gets ($set fields and the ids of the events folded into it), which counter state wins,
and what each ticket and request adds to the report cells."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from giliran.contracts import (
    CounterClosed,
    CounterOpened,
    Event,
    FeedbackSubmitted,
    NotificationFailed,
    NotificationReceipt,
    NotificationSent,
    RequestCheckedIn,
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
from giliran.store import instant
from services.reporting.cells import (
    CellKey,
    Contribution,
    NotificationFact,
    RequestCellKey,
    StoredTicket,
    request_contributions,
    ticket_contributions,
)
from services.reporting.domain import local_day


class CounterState(StrEnum):
    OPEN = "open"
    PAUSED = "paused"
    CLOSED = "closed"


# Ties between open/close events at the same microsecond: closed, then paused, win.
_RANK = {CounterState.OPEN: 0, CounterState.PAUSED: 1, CounterState.CLOSED: 2}


@dataclass
class FactChange:
    """What a batch writes to one fact document: `$set` fields in stream order (a later event's
    value wins, as it would one event at a time) and the ids of the events folded into it."""

    fields: dict[str, Any] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)

    def fold(self, event_id: str, fields: Mapping[str, Any]) -> None:
        self.fields.update(fields)
        if event_id not in self.events:
            self.events.append(event_id)


@dataclass(frozen=True)
class CounterChange:
    """A counter's state after an open/close event; `order` only moves forward in the store."""

    key: str
    fields: Mapping[str, Any]
    order: int


@dataclass
class Batch:
    """A fetched batch folded per document; `owners` lists, per fact, its events for the cells."""

    requests: dict[str, FactChange] = field(default_factory=dict)
    tickets: dict[str, FactChange] = field(default_factory=dict)
    notifications: dict[str, FactChange] = field(default_factory=dict)
    feedback: dict[str, FactChange] = field(default_factory=dict)
    counters: dict[str, CounterChange] = field(default_factory=dict)
    # request id -> arrival instant: its tickets already stored join the line (the live view)
    check_ins: dict[str, str] = field(default_factory=dict)
    # tickets issued to bookings before any check-in in this batch: the store may know one
    bookings: dict[str, list[str]] = field(default_factory=dict)  # request id -> ticket ids
    ticket_events: dict[str, list[tuple[TicketFacts, CellKey]]] = field(default_factory=dict)
    request_cells: list[tuple[str, Contribution]] = field(default_factory=list)
    changed_sites: set[str] = field(default_factory=set)

    def arrived(self, checked_in: Mapping[str, str]) -> None:
        """Check-ins the store knew for this batch's bookings (see `bookings`)."""
        for request_id, ticket_ids in self.bookings.items():
            at = checked_in.get(request_id)
            if at is not None:
                for ticket_id in ticket_ids:
                    self.tickets[ticket_id].fields.setdefault("checked_in_at", at)

    def eta_owners(self) -> set[str]:
        """Tickets whose events in this batch may count the ETA error (see ticket_contributions)."""
        return {
            ticket_id
            for ticket_id, events in self.ticket_events.items()
            if any(isinstance(t, TicketIssued | TicketCalled) for t, _ in events)
        }

    def ticket_cells(self, stored: Mapping[str, StoredTicket]) -> list[tuple[str, Contribution]]:
        """What the batch's ticket events add to the cells, given each ticket's document after
        this batch's facts were written (the ETA needs facts of two events)."""
        found: list[tuple[str, Contribution]] = []
        for ticket_id, events in self.ticket_events.items():
            for ticket, key in events:
                found += [
                    (ticket_id, c) for c in ticket_contributions(ticket, key, stored[ticket_id])
                ]
        return found

    def duplicates(self, folded_before: Mapping[str, Iterable[str]]) -> set[str]:
        """Events whose fact document had folded them before this batch (by document id)."""
        seen = {event_id for ids in folded_before.values() for event_id in ids}
        return {
            e
            for changes in (self.requests, self.tickets)
            for change in changes.values()
            for e in change.events
            if e in seen
        }


def notification_facts(change: FactChange) -> set[NotificationFact]:
    """Which of a delivery's events a batch folds, by the facts it writes."""
    written = {NotificationFact.SENT: "sent_at", NotificationFact.RECEIPT: "receipt",
               NotificationFact.FAILED: "failed_at"}  # fmt: skip
    return {fact for fact, name in written.items() if name in change.fields}


def fold(events: Sequence[Event[Any]], timezone: str) -> Batch:
    """The batch's events, in stream order, per document they change."""
    batch = Batch()
    for event in events:
        data = event.data
        if isinstance(data, RequestSubmitted):
            _request(batch, event, data, timezone)
        elif isinstance(data, RequestCheckedIn):
            _check_in(batch, event, data, timezone)
        elif isinstance(data, TicketFacts):
            _ticket(batch, event, data, timezone)
        elif isinstance(data, CounterOpened | CounterClosed):
            _counter(batch, event, data, timezone)
        elif isinstance(data, FeedbackSubmitted):
            batch.feedback.setdefault(data.feedback_id, FactChange()).fold(
                event.id,
                {
                    "site": event.site,
                    "day": local_day(data.submitted_at, timezone).isoformat(),
                    "session_id": data.session_id,
                    "service": data.service,
                    "scores": dict(data.scores),
                },
            )
        elif isinstance(data, NotificationSent | NotificationFailed | NotificationReceipt):
            _notification(batch, event, data, timezone)
    return batch


def _request(batch: Batch, event: Event[Any], request: RequestSubmitted, timezone: str) -> None:
    day = local_day(request.submitted_at, timezone).isoformat()
    batch.requests.setdefault(request.request_id, FactChange()).fold(
        event.id,
        {
            "site": event.site,
            "day": day,
            "session_id": request.session_id,
            "channel": request.channel.value,
            "services": len(request.services),
            "submitted_at": instant(request.submitted_at),
            "priority": request.priority.value if request.priority else None,
            "booked": request.appointment_at is not None,
        },
    )
    key = RequestCellKey(event.site, day, request.session_id, request.channel.value)
    batch.request_cells += [(request.request_id, c) for c in request_contributions(request, key)]


def _check_in(batch: Batch, event: Event[Any], arrival: RequestCheckedIn, timezone: str) -> None:
    """A booking's holder arrived: counted on the day of arrival; its tickets join the line."""
    day = local_day(arrival.checked_in_at, timezone).isoformat()
    at = instant(arrival.checked_in_at)
    batch.requests.setdefault(arrival.request_id, FactChange()).fold(
        event.id, {"checked_in_at": at}
    )
    batch.check_ins[arrival.request_id] = at
    for ticket_id in batch.bookings.pop(arrival.request_id, []):
        batch.tickets[ticket_id].fields["checked_in_at"] = at
    for change in batch.tickets.values():  # this batch's earlier events of its tickets
        if change.fields.get("request_id") == arrival.request_id:
            change.fields["checked_in_at"] = at
    key = RequestCellKey(event.site, day, arrival.session_id, "")
    batch.request_cells += [(arrival.request_id, c) for c in request_contributions(arrival, key)]
    batch.changed_sites.add(event.site)


def ticket_fields(site: str, ticket: TicketFacts, timezone: str) -> dict[str, Any]:
    """The facts a ticket event carries. Every ticket event repeats the ticket's facts, so any of
    them can create the document; each adds the timestamps it knows (same event twice: same
    fields)."""
    fields: dict[str, Any] = {
        "site": site,
        "day": local_day(ticket.issued_at, timezone).isoformat(),
        "hour": f"{ticket.issued_at.astimezone(ZoneInfo(timezone)):%H}",
        "session_id": ticket.session_id,
        "request_id": ticket.request_id,
        "service": ticket.service,
        "number": ticket.number,
        "issued_at": instant(ticket.issued_at),
    }
    if isinstance(ticket, TicketIssued):
        fields["arrived"] = ticket.arrived
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
    return fields


def _ticket(batch: Batch, event: Event[Any], ticket: TicketFacts, timezone: str) -> None:
    fields = ticket_fields(event.site, ticket, timezone)
    change = batch.tickets.setdefault(ticket.ticket_id, FactChange())
    change.fold(event.id, fields)
    if isinstance(ticket, TicketIssued) and not ticket.arrived:
        # A booking: its holder may have checked in before this event.
        at = batch.check_ins.get(ticket.request_id)
        if at is not None:
            change.fields["checked_in_at"] = at
        else:
            batch.bookings.setdefault(ticket.request_id, []).append(ticket.ticket_id)
    key = CellKey(event.site, fields["day"], ticket.session_id, ticket.service, fields["hour"])
    batch.ticket_events.setdefault(ticket.ticket_id, []).append((ticket, key))
    batch.changed_sites.add(event.site)


def _counter(
    batch: Batch, event: Event[Any], change: CounterOpened | CounterClosed, timezone: str
) -> None:
    """Open, paused or closed, by the latest event (ties: closed, then paused, win)."""
    if isinstance(change, CounterOpened):
        state = CounterState.OPEN
    else:
        state = CounterState.PAUSED if change.paused else CounterState.CLOSED
    key = f"{event.site}|{change.session_id}|{change.counter}"
    # microseconds since the epoch, then the tie-breaker
    order = round(change.at.timestamp() * 1_000_000) * 10 + _RANK[state]
    fields = {
        "site": event.site,
        "day": local_day(change.at, timezone).isoformat(),
        "session_id": change.session_id,
        "counter": change.counter,
        "state": state.value,
        "at": instant(change.at),
    }
    known = batch.counters.get(key)
    if known is None or known.order < order:
        batch.counters[key] = CounterChange(key, fields, order)
    batch.changed_sites.add(event.site)


def notification_key(site: str, delivery_id: str) -> str:
    """A delivery's fact document: one per site and delivery id. The site is the subject's (the
    consumer dead-letters a body whose site disagrees with it) and only notify may publish
    notification events, for the site of the delivery's cause: an event of another site naming
    the same id writes its own document at its own site and never touches this one, whatever
    the order they arrive in (ADR 0229)."""
    return f"{site}|{delivery_id}"


def _notification(
    batch: Batch,
    event: Event[Any],
    note: NotificationSent | NotificationFailed | NotificationReceipt,
    timezone: str,
) -> None:
    """A delivery's outcome: sent (with its cost) or failed; a later success wins, as a retried
    delivery ends sent."""
    fields: dict[str, Any] = {
        "site": event.site,
        "delivery_id": note.delivery_id,
        "day": local_day(event.time, timezone).isoformat(),
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
    key = notification_key(event.site, note.delivery_id)
    batch.notifications.setdefault(key, FactChange()).fold(event.id, fields)
