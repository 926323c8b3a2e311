"""The pure rule by which a request follows its tickets (services/intake/tickets.py): every pair of
statuses, older/equal/newer event times, counters kept, the store filter's status list, and a
batch's events applied in stream order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import product

import pytest

from giliran.contracts import TicketCalled, TicketStatus, new_event
from giliran.store import instant
from services.intake.tickets import (
    TicketEntry,
    TicketWait,
    applied,
    applied_in_order,
    outranking,
)

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def entry(status: TicketStatus, minutes: int, counter: str | None = None) -> TicketEntry:
    return TicketEntry(
        ticket_id="r1-KIA",
        number="C-001",
        service="KIA",
        status=status,
        counter=counter,
        event_time=instant(T0 + timedelta(minutes=minutes)),
    )


def test_a_first_event_is_always_applied() -> None:
    for status in TicketStatus:
        assert applied(None, entry(status, 0)) == entry(status, 0)


@pytest.mark.parametrize(
    ("old", "new", "shift"), list(product(TicketStatus, TicketStatus, (-1, 0, 1)))
)
def test_every_pair_of_statuses_and_times(old: TicketStatus, new: TicketStatus, shift: int) -> None:
    """Applied exactly when the status does not go back in rank and the event is not older."""
    result = applied(entry(old, 10), entry(new, 10 + shift))
    expected = new.rank >= old.rank and shift >= 0
    assert (result is not None) is expected
    if expected:
        assert result == entry(new, 10 + shift)
    # The store's filter says the same: the current status must not be among those outranking.
    assert (old.value not in outranking(new)) is (new.rank >= old.rank)


def test_a_later_event_without_a_counter_keeps_the_counter_known() -> None:
    after = applied(entry(TicketStatus.CALLED, 1, "L3"), entry(TicketStatus.COMPLETED, 2))
    assert after is not None and after.counter == "L3"
    moved = applied(entry(TicketStatus.CALLED, 1, "L3"), entry(TicketStatus.CALLED, 2, "L4"))
    assert moved is not None and moved.counter == "L4"  # a recall at another counter


def test_an_entry_stored_without_an_event_time_is_moved_by_any_event() -> None:
    legacy = TicketEntry.model_validate(
        {"ticket_id": "r1-KIA", "number": "C-001", "service": "KIA", "status": "waiting"}
    )
    assert applied(legacy, entry(TicketStatus.CALLED, 0)) == entry(TicketStatus.CALLED, 0)
    # Nor does one written with the extended ISO form (before instants were used) hold it back.
    extended = legacy.model_copy(update={"event_time": (T0 + timedelta(days=1)).isoformat()})
    assert applied(extended, entry(TicketStatus.CALLED, 0)) == entry(TicketStatus.CALLED, 0)


def test_the_entry_of_an_event_and_what_a_waiting_answer_merges() -> None:
    called = new_event(
        TicketCalled(
            ticket_id="r1-KIA",
            request_id="r1",
            session_id="s",
            service="KIA",
            number="C-001",
            issued_at=T0,
            counter="L2",
            called_at=T0,
        ),
        site="cikarang-utara",
        source="queue",
        at=T0,
    )
    seen = TicketEntry.of(called)
    assert (seen.status, seen.counter, seen.event_time) == (
        TicketStatus.CALLED,
        "L2",
        instant(T0),
    )
    wait = TicketWait()
    wait.seen(seen)
    wait.seen(entry(TicketStatus.WAITING, -5))  # an older event seen later changes nothing
    assert wait.changed.is_set()
    stored = {"_id": "r1", "services": ["KIA"], "tickets": {}}
    assert wait.merged(stored)["tickets"] == {"r1-KIA": seen.model_dump(mode="json")}
    # What the store already holds further along wins over what was seen here.
    further = entry(TicketStatus.COMPLETED, 9).model_dump(mode="json")
    merged = wait.merged({**stored, "tickets": {"r1-KIA": further}})
    assert merged["tickets"]["r1-KIA"] == further


def test_a_batch_applied_in_order_keeps_the_furthest_and_says_which_events_changed_nothing() -> (
    None
):
    """A request's events of one fetched batch: completed first, then its called and issued,
    each twice (duplicates and out of order inside the batch), and a second ticket issued."""
    issued, called = entry(TicketStatus.WAITING, 0), entry(TicketStatus.CALLED, 5, "2")
    completed = entry(TicketStatus.COMPLETED, 9)
    other = entry(TicketStatus.WAITING, 1).model_copy(update={"ticket_id": "r1-KK"})
    batch = [completed, called, issued, called, completed, issued, other]
    after, results = applied_in_order({}, batch)
    assert after == {"r1-KIA": completed, "r1-KK": other}
    # The first completed sets it; the repeated completed sets the same again (as the store's
    # filter matches it); the older ones change nothing.
    assert results == [completed, None, None, None, completed, None, other]
    # Over what is stored already (the bulk wrote the issued entry): the called moves it on.
    after, results = applied_in_order({"r1-KIA": issued}, [called, issued])
    assert after == {"r1-KIA": called} and results == [called, None]
    # The same batch again over its own outcome: nothing new.
    again, _ = applied_in_order(after, [called, issued])
    assert again == after


def test_a_heard_ticket_fits_only_its_requests_site_and_a_service_without_a_ticket() -> None:
    """ADR 0228: a `ticket.issued` heard on plain NATS names a request id; it reaches the
    waiting answer only for that request's site and a service it asked for and has no other
    ticket for. Before the request is known (no site yet) nothing fits."""
    wait = TicketWait()
    issued = entry(TicketStatus.WAITING, 0)
    assert not wait.fits("cikarang-utara", issued)
    wait.site, wait.services = "cikarang-utara", ("KIA", "KTP-CETAK")
    assert wait.fits("cikarang-utara", issued)
    assert not wait.fits("botram-babelan", issued)  # another site's notice, same request id
    assert not wait.fits("cikarang-utara", issued.model_copy(update={"service": "AKTA"}))
    wait.seen(issued)
    assert wait.fits("cikarang-utara", issued)  # the same ticket again (a redelivery)
    second = issued.model_copy(update={"ticket_id": "r1-KIA-2", "number": "Z-999"})
    assert not wait.fits("cikarang-utara", second)  # a second ticket for one service
