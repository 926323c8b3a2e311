"""The call decisions of ADR 0161 without I/O, over every ticket status, counter and site."""

from __future__ import annotations

import itertools

import pytest

from giliran.contracts import TicketStatus
from services.queue.calling import (
    BUSY_STATUSES,
    CounterNow,
    LostCall,
    Sharing,
    TicketAt,
    after_lost_call,
    counter_now,
    needs_slot,
    sharing,
)

SITE, COUNTER = "cikarang-utara", "1"
CASES = list(
    itertools.product(TicketStatus, (SITE, "another-site"), (COUNTER, "2", None), (True, False))
)


def test_no_pointer_is_a_free_counter() -> None:
    assert counter_now(SITE, COUNTER, None) == CounterNow.FREE


@pytest.mark.parametrize(("status", "site", "counter", "arrived"), CASES)
def test_counter_now_over_every_ticket(
    status: TicketStatus, site: str, counter: str | None, arrived: bool
) -> None:
    found = counter_now(SITE, COUNTER, TicketAt(site, status, counter, arrived))
    if site != SITE:
        expected = CounterNow.FREE  # a pointer never reaches another site's ticket
    elif status == TicketStatus.WAITING:
        # reserved and not called yet (in flight, or cut short by a crash): complete it
        expected = CounterNow.RESERVED if arrived else CounterNow.FREE
    elif status in BUSY_STATUSES and counter == COUNTER:
        expected = CounterNow.BUSY
    else:
        expected = CounterNow.FREE  # called elsewhere, finished, transferred, cancelled...
    assert found == expected


def test_a_lost_call_of_a_vanished_ticket_frees_its_citizen() -> None:
    assert after_lost_call(COUNTER, None) == LostCall.GONE


@pytest.mark.parametrize(("status", "site", "counter", "arrived"), CASES)
def test_after_lost_call_over_every_ticket(
    status: TicketStatus, site: str, counter: str | None, arrived: bool
) -> None:
    found = after_lost_call(COUNTER, TicketAt(site, status, counter, arrived))
    if status in BUSY_STATUSES:
        assert found == (LostCall.CALLED_HERE if counter == COUNTER else LostCall.TAKEN)
    elif status == TicketStatus.WAITING:
        # still waiting: what the call read of it changed (it became shared, ADR 0190); its
        # citizen's slot is not this call's to free, whoever may be calling it now
        assert found == LostCall.CHANGED
    else:
        assert found == LostCall.GONE


@pytest.mark.parametrize("shared", [True, False])
def test_only_a_ticket_sharing_its_request_is_called_under_the_serving_slot(shared: bool) -> None:
    """ADR 0190: a ticket alone in its request cannot be at two counters (its own conditional
    write lets one call have it); one of several tickets takes the request's slot first."""
    ticket = TicketAt(SITE, TicketStatus.WAITING, None, True, shared=shared)
    assert needs_slot(ticket) is shared
    assert needs_slot(TicketAt(SITE, TicketStatus.WAITING, None)) is True  # before the flag


def test_the_repository_types_a_stored_counter_and_ticket() -> None:
    from services.queue.calling import CounterStatus
    from services.queue.store import counter_state, ticket_at

    stored = {
        "_id": f"{SITE}:1", "site": SITE, "counter": "1", "status": "open",
        "session_id": f"{SITE}-20261207", "services": ["KIA", "IKD"], "revision": 7,
        "current": "t1", "normal_since_priority": 2, "pinned": True,
    }  # fmt: skip
    state = counter_state(stored)
    assert state.status is CounterStatus.OPEN and state.services == ("KIA", "IKD")
    assert (state.revision, state.current, state.normal_since_priority) == (7, "t1", 2)
    bare = {k: v for k, v in stored.items() if k not in ("revision", "current", "pinned")}
    assert (counter_state(bare).revision, counter_state(bare).current) == (0, None)
    assert ticket_at(None) is None
    assert ticket_at({"site": SITE, "status": "called", "counter": "1"}) == TicketAt(
        SITE, TicketStatus.CALLED, "1", True
    )


@pytest.mark.parametrize(
    ("status", "shared", "slot_given"),
    list(itertools.product(TicketStatus, (True, False), (True, False))),
)
def test_sharing_a_request_over_every_ticket(
    status: TicketStatus, shared: bool, slot_given: bool
) -> None:
    """ADR 0190: a lone ticket brought under its request's slot before the request gets another
    ticket; one given the slot that finished before it was flagged frees it (its completion,
    reading the flag from its own write, did not)."""
    found = sharing(TicketAt(SITE, status, COUNTER, shared=shared), slot_given=slot_given)
    if shared:
        expected = Sharing.NOTHING  # under the slot already: its completion frees it
    elif status == TicketStatus.WAITING:
        expected = Sharing.FLAG
    elif status in BUSY_STATUSES:
        expected = Sharing.SLOT_THEN_FLAG
    else:
        expected = Sharing.FREE_SLOT if slot_given else Sharing.NOTHING
    assert found == expected


def test_sharing_a_vanished_ticket_frees_only_a_slot_it_was_given() -> None:
    assert sharing(None, slot_given=True) == Sharing.FREE_SLOT
    assert sharing(None, slot_given=False) == Sharing.NOTHING
