"""Reporting's projections are the same whatever the order of events and however often each is
delivered (property-based, on an in-memory fake of the fact store)."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from giliran.contracts import (
    Channel,
    CitizenRef,
    CounterClosed,
    CounterOpened,
    FeedbackSubmitted,
    NotificationSent,
    Outcome,
    PriorityReason,
    RequestCheckedIn,
    RequestSubmitted,
    TicketCalled,
    TicketCompleted,
    TicketIssued,
    TicketStarted,
    new_event,
)
from services.reporting.handlers import Reporting
from services.reporting.ikm import ELEMENTS
from services.reporting.subscribers import handlers_for
from tests.fakes.reporting_facts import InMemoryFacts

START = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)


def lifecycle(
    n: int,
    wait: int,
    service_time: int,
    survey: bool,
    eta_error: int | None = None,
    outcome: Outcome = Outcome.SERVED,
    late_check_in: int = 0,
) -> list[Any]:
    """One citizen's events; the wait runs from check-in (issue + late_check_in) to the call;
    eta_error: the quoted call time is this many seconds before the actual one."""
    request_id = f"r{n}"
    issued_at = START + timedelta(minutes=n)
    queued_at = issued_at + timedelta(seconds=late_check_in)
    called_at = queued_at + timedelta(seconds=wait)
    facts = {
        "ticket_id": f"t{n}", "request_id": request_id, "session_id": "s", "service": "KIA",
        "number": f"K-{n:03d}", "issued_at": issued_at,
    }  # fmt: skip
    eta = None if eta_error is None else called_at - timedelta(seconds=eta_error)
    priority = PriorityReason.ELDERLY if n % 3 == 0 else None
    events = [
        RequestSubmitted(
            request_id=request_id, session_id="s", services=["KIA"], channel=Channel.KIOSK,
            citizen=CitizenRef(), submitted_at=issued_at, priority=priority,
        ),
        TicketIssued(**facts, waiting_ahead=0, eta=eta, priority=priority,
                     arrived=not late_check_in),
        TicketCalled(**facts, counter="1", called_at=called_at,
                     queued_at=queued_at if late_check_in else None),
        TicketStarted(**facts, counter="1", called_at=called_at,
                      started_at=called_at + timedelta(seconds=20)),
        TicketCompleted(
            **facts, counter="1", called_at=called_at,
            completed_at=called_at + timedelta(seconds=service_time), outcome=outcome,
        ),
        CounterOpened(counter=str(n % 3), session_id="s", services=["KIA"], at=issued_at),
        CounterClosed(counter=str(n % 3), session_id="s", at=called_at, paused=n % 2 == 0),
    ]  # fmt: skip
    if late_check_in:
        events.append(RequestCheckedIn(request_id=request_id, session_id="s",
                                       checked_in_at=queued_at))  # fmt: skip
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
    return [new_event(e, site="cikarang-utara") for e in events]


async def project(events: list[Any]) -> tuple[InMemoryFacts, Any]:
    store = InMemoryFacts()
    reporting = Reporting(store=store)
    handlers = handlers_for(reporting)
    for event in events:
        await handlers[type(event.data)](event)
    return store, await reporting.day_summary("cikarang-utara", date(2026, 11, 29))


def citizens(
    at_most: int,
) -> st.SearchStrategy[list[tuple[int, int, bool, int | None, Outcome, int]]]:
    """A day of citizens: lifecycle()'s arguments after `n` (wait, service time, survey, ETA
    error, outcome, late check-in), for property tests of the projection."""
    return st.lists(
        st.tuples(
            st.integers(0, 3600),
            st.integers(60, 1800),
            st.booleans(),
            st.none() | st.integers(-1800, 1800),
            st.sampled_from(Outcome),
            st.sampled_from([0, 0, 300]),
        ),
        min_size=1,
        max_size=at_most,
    )


day = citizens(8)


@settings(max_examples=60, deadline=None)
@given(day, st.randoms(use_true_random=False), st.data())
def test_order_and_repetition_do_not_change_the_projection(
    tickets: list[tuple[int, int, bool, int | None, Outcome, int]],
    rng: Any,
    data: st.DataObject,
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
    assert store.ticket_cells == reference_store.ticket_cells
    assert store.request_cells == reference_store.request_cells
    assert store.counters == reference_store.counters
    assert summary == reference
    # ... and the figures are right, checked against the inputs directly:
    assert (summary.issued, summary.completed) == (len(tickets), len(tickets))
    assert (summary.called, summary.started) == (len(tickets), len(tickets))
    assert summary.wait_seconds.max == max(t[0] for t in tickets)  # from check-in, not issue
    assert summary.service_seconds.max == max(t[1] for t in tickets)
    outcomes = Counter(t[4].value for t in tickets)
    assert summary.outcomes == dict(sorted(outcomes.items()))
    assert summary.checked_in == sum(1 for t in tickets if t[5])
    assert summary.priority == ({"elderly": len(tickets) // 3} if len(tickets) >= 3 else {})
    quoted = [t[3] for t in tickets if t[3] is not None]
    if quoted:
        assert summary.eta is not None and summary.eta.quoted == len(quoted)
        within = sum(1 for e in quoted if abs(e) <= 600) / len(quoted)
        assert summary.eta.within_10_min == round(within, 4)
    else:
        assert summary.eta is None


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
            site="cikarang-utara",
        ),
        new_event(
            TicketTransferred(**facts, ticket_id="t2", request_id="r2", number="K-002",
                              counter="1", to_service="KK-UBAH", new_ticket_id="t9",
                              transferred_at=at),
            site="cikarang-utara",
        ),
        new_event(
            TicketCancelled(**facts, ticket_id="t3", request_id="r3", number="K-003",
                            reason="citizen left", cancelled_at=at),
            site="cikarang-utara",
        ),
    ]  # fmt: skip
    _, summary = asyncio.run(project(events))
    assert (summary.issued, summary.no_show, summary.transferred, summary.cancelled) == (3, 1, 1, 1)
    assert summary.within_target is None  # none was called
