"""Reporting's batch fold (services/reporting/fold.py, Reporting.fold), without I/O: however the
stream is cut into fetched batches, and whatever is delivered again, the documents are those of
one event at a time; a redelivery is named as one; each cell gets one write per batch."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, date, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from giliran.contracts import (
    DeliveryOutcome,
    NotificationReceipt,
    NotificationSent,
    Outcome,
    RequestCheckedIn,
    RequestSubmitted,
    TicketCalled,
    TicketCompleted,
    TicketFacts,
    TicketIssued,
    new_event,
)
from services.reporting import fold
from services.reporting.cells import (
    CellKey,
    Contribution,
    StoredTicket,
    combine,
    ticket_contributions,
)
from services.reporting.handlers import Reporting
from services.reporting.store import PATHS_PER_WRITE, mark
from tests.fakes.reporting_facts import InMemoryFacts
from tests.unit.test_projection_properties import citizens, lifecycle, project

DAY = date(2026, 11, 29)


class CountingFacts(InMemoryFacts):
    """The in-memory store, counting cell writes as the real one makes them (one per cell)."""

    def __init__(self) -> None:
        super().__init__()
        self.cell_writes = 0

    async def add_ticket_cells(self, contributions: Any) -> None:
        self.cell_writes += len(combine(contributions, mark))
        await super().add_ticket_cells(contributions)


async def project_in_batches(batches: list[list[Any]]) -> tuple[CountingFacts, Any, list[set[str]]]:
    store = CountingFacts()
    reporting = Reporting(store=store)
    duplicates = [await reporting.fold(batch) for batch in batches]
    return store, await reporting.day_summary("cikarang-utara", DAY), duplicates


tickets = citizens(6)


@settings(max_examples=60, deadline=None)
@given(tickets, st.randoms(use_true_random=False), st.data())
def test_any_cut_into_batches_gives_the_documents_of_one_event_at_a_time(
    day: list[tuple[int, int, bool, int | None, Outcome, int]], rng: Any, data: st.DataObject
) -> None:
    events = [e for n, t in enumerate(day, start=1) for e in lifecycle(n, *t)]
    reference_store, reference = asyncio.run(project(events))

    delivered = copy.copy(events)
    rng.shuffle(delivered)
    delivered += data.draw(st.lists(st.sampled_from(events), max_size=len(events)))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(delivered) - 1), max_size=12)))
    batches = [delivered[a:b] for a, b in zip([0, *cuts], [*cuts, len(delivered)], strict=True)]
    store, summary, duplicates = asyncio.run(project_in_batches(batches))

    for name in ("requests", "tickets", "feedback", "notifications", "ticket_cells",
                 "request_cells", "counters"):  # fmt: skip
        assert getattr(store, name) == getattr(reference_store, name), name
    assert summary == reference
    # A redelivery is named as one exactly when its request or ticket folded it in an earlier
    # batch (events of other documents are never named).
    folded: set[str] = set()
    for batch, named in zip(batches, duplicates, strict=True):
        ours = {e.id for e in batch if _remembered(e)}
        assert named == ours & folded
        folded |= ours
    # One write per cell touched per batch, never one per event.
    touched = sum(
        len({k for e in b if isinstance(e.data, TicketIssued | TicketCalled | TicketCompleted)
             for k in [_cell_of(e)]})
        for b in batches
    )  # fmt: skip
    assert store.cell_writes <= touched + len(batches)  # + the ETA's issue-time cell per batch


def _remembered(event: Any) -> bool:
    """Folded into a request's or a ticket's facts, which keep the ids they folded."""
    return isinstance(event.data, TicketFacts | RequestSubmitted | RequestCheckedIn)


def _cell_of(event: Any) -> str:
    return f"{event.data.ticket_id}|{getattr(event.data, 'counter', '')}"


def test_a_batch_writes_each_cell_once_with_every_fact_it_counts() -> None:
    events = [e for n in (1, 2, 3) for e in lifecycle(n, 60 * n, 300, False)]
    store, summary, duplicates = asyncio.run(project_in_batches([events]))
    # Three tickets, issued in one cell and called/completed at counter 1: two cells, two
    # writes (the issue-time cell also holds the ETA errors, none here).
    assert store.cell_writes == 2
    assert (summary.issued, summary.called, summary.completed) == (3, 3, 3)
    assert duplicates == [set()]
    # The same batch again (a crash before the acks): everything is named a duplicate except
    # what no request or ticket remembers (counters, notifications), and nothing counts twice.
    again = asyncio.run(project_in_batches([events, events]))
    assert again[1] == summary
    assert again[2][1] == {e.id for e in events if _remembered(e)}


def test_the_eta_error_belongs_to_issued_and_called_only() -> None:
    [_, issued, called, started, completed, *_] = lifecycle(1, 600, 300, False, eta_error=120)
    key = CellKey("cikarang-utara", "2026-11-29", "s", "KIA", "09")
    both = StoredTicket(eta=called.data.called_at, called_at=called.data.called_at)
    owners = {
        type(e.data).__name__
        for e in (issued, called, started, completed)
        if any(c.name == "eta" for c in ticket_contributions(e.data, key, both))
    }
    assert owners == {"TicketIssued", "TicketCalled"}
    assert isinstance(completed.data, TicketCompleted)
    # Without both facts written, nobody counts it yet.
    only_quote = StoredTicket(eta=called.data.called_at)
    assert not any(c.name == "eta" for c in ticket_contributions(issued.data, key, only_quote))


def test_a_booking_gets_its_check_in_from_the_batch_or_the_store() -> None:
    events = lifecycle(1, 60, 300, False, late_check_in=300)
    issued = next(e for e in events if isinstance(e.data, TicketIssued))
    check_in = next(e for e in events if type(e.data).__name__ == "RequestCheckedIn")
    # In one batch, check-in first: the ticket gets it from the batch, nothing to look up.
    batch = fold.fold([check_in, issued], "Asia/Jakarta")
    assert batch.bookings == {}
    assert batch.tickets[issued.data.ticket_id].fields["checked_in_at"]
    # Issued alone: the store is asked, once, for the request's check-in.
    batch = fold.fold([issued], "Asia/Jakarta")
    assert batch.bookings == {issued.data.request_id: [issued.data.ticket_id]}
    batch.arrived({issued.data.request_id: "20261129T021000.000000Z"})
    assert batch.tickets[issued.data.ticket_id].fields["checked_in_at"] == "20261129T021000.000000Z"


def test_the_latest_counter_event_of_a_batch_wins_ties_to_closed() -> None:
    events = lifecycle(1, 60, 300, False)
    opened = next(e for e in events if type(e.data).__name__ == "CounterOpened")
    closed = next(e for e in events if type(e.data).__name__ == "CounterClosed")
    same_time = closed.model_copy(update={"data": closed.data.model_copy(
        update={"at": opened.data.at})})  # fmt: skip
    for order in ([opened, same_time], [same_time, opened]):
        [change] = fold.fold(order, "Asia/Jakarta").counters.values()
        assert change.fields["state"] in ("closed", "paused")


@given(st.lists(st.floats(min_value=0, max_value=20_000), min_size=1, max_size=300))
@settings(max_examples=60, deadline=None)
def test_a_cell_update_is_cut_into_whole_contributions_of_at_most_48_paths(
    waits: list[float],
) -> None:
    """However many calls with whatever waits one cell gets in a batch, its update is written
    in parts that each name fewer than the embedded server's 64 update paths (figures, sketch
    buckets, min/max and marks together) and, taken together, hold every contribution once,
    in order (ADR 0224)."""
    key = CellKey("cikarang-utara", "2026-11-29", "s", "KIA", "09", "1")
    calls = [(f"t{i}", Contribution("called", key, {"called": 1}, {"wait": w}))
             for i, w in enumerate(waits)]  # fmt: skip
    [update] = combine(calls, mark)
    parts = update.split(PATHS_PER_WRITE)
    assert [c for p in parts for c in p.contributions] == [c for _, c in calls]
    assert [m for p in parts for m in p.marks] == update.marks
    for part in parts:
        assert sum(len(fields) for fields in part.update().values()) <= PATHS_PER_WRITE < 64


def test_a_delivery_named_by_two_sites_is_two_documents_one_per_site() -> None:
    """Another site's event naming a delivery id folds into its own site's document, in any
    order within a batch, and never into (or out of) the named site's (ADR 0229)."""
    facts = {"delivery_id": "d1", "cause_event_id": "e", "cause_type": "giliran.ticket.called.v1",
             "channel": "sms", "template": "ticket_called"}  # fmt: skip
    at = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    report = NotificationReceipt(**facts, outcome=DeliveryOutcome.UNDELIVERED, reported_at=at)
    theirs = new_event(report, site="botram-babelan", at=at)
    ours = new_event(NotificationSent(**facts, cost_units=2, sent_at=at), site="cikarang-utara")
    for events in ([theirs, ours], [ours, theirs]):
        batch = fold.fold(events, "Asia/Jakarta")
        assert {k: (c.fields["site"], c.events) for k, c in batch.notifications.items()} == {
            fold.notification_key("botram-babelan", "d1"): ("botram-babelan", [theirs.id]),
            fold.notification_key("cikarang-utara", "d1"): ("cikarang-utara", [ours.id]),
        }
