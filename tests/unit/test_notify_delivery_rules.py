"""The rules of one delivery attempt, exhaustively: how a new delivery is recorded, and what an
attempt that meets an existing one does (send, wait for the hold, drop, or nothing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from giliran.contracts import TicketStatus
from services.notify.domain import (
    APPROACHING,
    STATUS_OF_TEMPLATE,
    TEMPLATES,
    DeliveryStatus,
    Step,
    first_status,
    is_requests_ticket,
    is_stale,
    next_step,
)
from services.queue.domain import rechecked_id, ticket_id_for, transferred_id

NOW = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
TEMPLATE_NAMES = sorted({p.name.split(".")[0] for p in TEMPLATES.glob("*.txt.j2")} | {"event"})


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
@pytest.mark.parametrize("status", [None, *TicketStatus])
def test_a_new_delivery_is_held_for_sending_unless_its_ticket_moved_on(
    template: str, status: TicketStatus | None
) -> None:
    recorded = first_status(template, status)
    announced = STATUS_OF_TEMPLATE.get(template)
    moved_on = announced is not None and status is not None and status.rank > announced.rank
    assert recorded is (DeliveryStatus.DROPPED if moved_on else DeliveryStatus.SENDING)
    assert (recorded is DeliveryStatus.DROPPED) == is_stale(template, status)


def test_the_stale_rule_on_examples() -> None:
    assert first_status("ticket_called", TicketStatus.COMPLETED) is DeliveryStatus.DROPPED
    assert first_status("ticket_issued", TicketStatus.CALLED) is DeliveryStatus.DROPPED
    assert first_status(APPROACHING, TicketStatus.CALLED) is DeliveryStatus.DROPPED
    assert first_status("ticket_called", TicketStatus.CALLED) is DeliveryStatus.SENDING
    assert first_status("ticket_completed", TicketStatus.COMPLETED) is DeliveryStatus.SENDING
    assert first_status("ticket_called", None) is DeliveryStatus.SENDING  # not seen: send


HELD = {
    "released long ago": datetime(1970, 1, 1, tzinfo=UTC),
    "lapsed just now": NOW,
    "lapsed a second ago": NOW - timedelta(seconds=1),
    "held a moment more": NOW + timedelta(milliseconds=200),
    "held 25 s more": NOW + timedelta(seconds=25),
}


@pytest.mark.parametrize("status", list(DeliveryStatus))
@pytest.mark.parametrize("held", list(HELD))
@pytest.mark.parametrize("stale", [False, True])
def test_an_existing_delivery(status: DeliveryStatus, held: str, stale: bool) -> None:
    held_until = HELD[held]
    decided = next_step(status, held_until, NOW, stale=stale)
    if status is not DeliveryStatus.SENDING:
        # Sent, failed for good or dropped: whatever else holds, a redelivery changes nothing.
        assert decided.step is Step.DONE
    elif stale:
        assert decided.step is Step.DROP
    elif held_until > NOW:
        # Another attempt has it in hand (the other replica, the ack wait ran out): sending now
        # would send it twice. Come back when the hold ends, and never sooner than a second.
        assert decided.step is Step.WAIT
        assert decided.wait_seconds == max(1.0, (held_until - NOW).total_seconds())
    else:
        # Nobody holds it: a crash or a transient failure let it go; the message goes (again).
        assert decided.step is Step.TAKE
    assert decided.wait_seconds == 0.0 or decided.step is Step.WAIT


def test_a_ticket_is_its_requests_only_as_the_queue_makes_its_id() -> None:
    """Every id the queue makes for a request's ticket (issued, transferred, rechecked, and
    both together) is that request's; another request's ticket, or a request id that is only a
    prefix of the ticket's request id, is not."""
    request_id, other = "01JFZQ8Y3N5T6V7W8X9Y0Z1A2B", "01JFZQ8Y3N5T6V7W8X9Y0Z1A2C"
    issued = ticket_id_for(request_id, "KIA")
    for made in (issued, transferred_id(issued, "IMUN"), rechecked_id(issued)):
        assert is_requests_ticket(made, request_id)
        assert is_requests_ticket(rechecked_id(transferred_id(made, "GIZI")), request_id)
        assert not is_requests_ticket(made, other)
    assert not is_requests_ticket(ticket_id_for(other, "KIA"), request_id)
    assert not is_requests_ticket(issued, request_id[:-1])
    assert not is_requests_ticket(request_id, request_id)
