"""Reporting's projections are the same whatever the order of events and however often each is
delivered (property-based, on an in-memory fake of the fact store)."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from giliran.contracts import (
    Channel,
    CitizenRef,
    FeedbackSubmitted,
    NotificationSent,
    RequestSubmitted,
    TicketCalled,
    TicketCompleted,
    TicketIssued,
    new_event,
)
from services.reporting.handlers import Reporting
from services.reporting.ikm import ELEMENTS
from services.reporting.subscribers import handlers_for

START = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)


class InMemoryFacts:
    """The FactStore's operations over dicts: `$set` upserts are dict updates."""

    def __init__(self) -> None:
        self.requests: dict[str, dict[str, Any]] = {}
        self.tickets: dict[str, dict[str, Any]] = {}
        self.feedback: dict[str, dict[str, Any]] = {}
        self.notifications: dict[str, dict[str, Any]] = {}

    async def upsert_request(self, key: str, fields: dict[str, Any]) -> None:
        self.requests.setdefault(key, {}).update(fields)

    async def upsert_ticket(self, key: str, fields: dict[str, Any]) -> None:
        self.tickets.setdefault(key, {}).update(fields)

    async def upsert_feedback(self, key: str, fields: dict[str, Any]) -> None:
        self.feedback.setdefault(key, {}).update(fields)

    async def upsert_notification(self, key: str, fields: dict[str, Any]) -> None:
        self.notifications.setdefault(key, {}).update(fields)

    async def notifications_on(self, site: str, day: date) -> list[dict[str, Any]]:
        return [d for d in self.notifications.values() if (d["site"], d["day"]) == (site, str(day))]

    async def requests_on(self, site: str, day: date) -> list[dict[str, Any]]:
        return [d for d in self.requests.values() if (d["site"], d["day"]) == (site, str(day))]

    async def tickets_on(self, site: str, day: date) -> list[dict[str, Any]]:
        return [d for d in self.tickets.values() if (d["site"], d["day"]) == (site, str(day))]


def lifecycle(n: int, wait: int, service_time: int, survey: bool) -> list[Any]:
    request_id = f"r{n}"
    issued_at = START + timedelta(minutes=n)
    called_at = issued_at + timedelta(seconds=wait)
    facts = {
        "ticket_id": f"t{n}", "request_id": request_id, "session_id": "s", "service": "KIA",
        "number": f"K-{n:03d}", "issued_at": issued_at,
    }  # fmt: skip
    events = [
        RequestSubmitted(
            request_id=request_id, session_id="s", services=["KIA"], channel=Channel.KIOSK,
            citizen=CitizenRef(), submitted_at=issued_at,
        ),
        TicketIssued(**facts, waiting_ahead=0),
        TicketCalled(**facts, counter="1", called_at=called_at),
        TicketCompleted(
            **facts, counter="1", called_at=called_at,
            completed_at=called_at + timedelta(seconds=service_time),
        ),
    ]  # fmt: skip
    events.append(
        NotificationSent(
            delivery_id=f"d{n}", cause_event_id="e", cause_type="giliran.ticket.called.v1",
            request_id=request_id, ticket_id=f"t{n}", channel="sms", template="ticket_called",
            cost_units=1, sent_at=called_at,
        )
    )  # fmt: skip
    if survey:
        events.append(
            FeedbackSubmitted(
                feedback_id=f"f{n}", request_id=request_id, session_id="s", service="KIA",
                scores=dict.fromkeys(ELEMENTS, 3), submitted_at=called_at,
            )
        )  # fmt: skip
    return [new_event(e, site="cikarang-utara", source="t") for e in events]


async def project(events: list[Any]) -> tuple[InMemoryFacts, Any]:
    store = InMemoryFacts()
    reporting = Reporting(store=store)  # type: ignore[arg-type]
    handlers = handlers_for(reporting)
    for event in events:
        await handlers[type(event.data)](event)
    return store, await reporting.day_summary("cikarang-utara", date(2026, 11, 29))


day = st.lists(
    st.tuples(st.integers(0, 3600), st.integers(60, 1800), st.booleans()), min_size=1, max_size=8
)


@settings(max_examples=60, deadline=None)
@given(day, st.randoms(use_true_random=False), st.data())
def test_order_and_repetition_do_not_change_the_projection(
    tickets: list[tuple[int, int, bool]], rng: Any, data: st.DataObject
) -> None:
    events = [e for n, t in enumerate(tickets, start=1) for e in lifecycle(n, *t)]
    reference_store, reference = asyncio.run(project(events))

    shuffled = copy.copy(events)
    rng.shuffle(shuffled)
    repeats = data.draw(st.lists(st.sampled_from(events), max_size=len(events)))
    delivered = shuffled + repeats
    rng.shuffle(delivered)
    store, summary = asyncio.run(project(delivered))

    assert store.requests == reference_store.requests
    assert store.tickets == reference_store.tickets
    assert store.feedback == reference_store.feedback
    assert store.notifications == reference_store.notifications
    assert summary == reference
    assert (summary.issued, summary.completed) == (len(tickets), len(tickets))
    assert summary.wait_seconds.max == max(wait for wait, _, _ in tickets)


def test_no_shows_transfers_and_cancellations_are_counted() -> None:
    from giliran.contracts import TicketCancelled, TicketNoShow, TicketTransferred

    events = lifecycle(1, 60, 300, False)[:2] + lifecycle(2, 90, 300, False)[:2]
    events += lifecycle(3, 120, 300, False)[:2]
    facts = {"session_id": "s", "service": "KIA", "issued_at": START}
    at = START + timedelta(minutes=40)
    events += [
        new_event(
            TicketNoShow(**facts, ticket_id="t1", request_id="r1", number="K-001",
                         counter="1", marked_at=at),
            site="cikarang-utara", source="t",
        ),
        new_event(
            TicketTransferred(**facts, ticket_id="t2", request_id="r2", number="K-002",
                              counter="1", to_service="KK-UBAH", new_ticket_id="t9",
                              transferred_at=at),
            site="cikarang-utara", source="t",
        ),
        new_event(
            TicketCancelled(**facts, ticket_id="t3", request_id="r3", number="K-003",
                            reason="citizen left", cancelled_at=at),
            site="cikarang-utara", source="t",
        ),
    ]  # fmt: skip
    _, summary = asyncio.run(project(events))
    assert (summary.issued, summary.no_show, summary.transferred, summary.cancelled) == (3, 1, 1, 1)
    assert summary.within_target is None  # none was called
