"""The call decisions of ADR 0161 without I/O, over every ticket status, counter and site."""

from __future__ import annotations

import itertools

import pytest

from giliran.contracts import TicketStatus
from services.queue.calling import (
    BUSY_STATUSES,
    CounterNow,
    LostCall,
    TicketAt,
    after_lost_call,
    counter_now,
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
    else:
        assert found == LostCall.GONE
