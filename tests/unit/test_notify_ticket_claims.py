"""What a ticket's own message does when its event's write took no claim (ADR 0198), exhaustively
and without I/O: the log decides what it holds, then the stale rule, then the claim in the ticket's
document (free, held by another attempt, or left by a crashed one)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from giliran.contracts import TicketStatus
from services.notify.domain import (
    STATUS_OF_TEMPLATE,
    Claim,
    DeliveryStatus,
    Go,
    is_stale,
    plan_message,
)
from services.notify.store import TicketNotices, claim_field, stored_claim

NOW = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)
TEMPLATES = ["ticket_issued", "ticket_called", "ticket_completed", "ticket_no_show"]
CLAIMS = {
    "none": None,
    "held": Claim(
        delivery_id="e:sms:k", held_until=NOW + timedelta(seconds=30), attempts=1, claimed_at=NOW
    ),
    "lapsed": Claim(
        delivery_id="e:sms:k", held_until=NOW - timedelta(seconds=1), attempts=2, claimed_at=NOW
    ),
    "let go": Claim(
        delivery_id="e:sms:k",
        held_until=datetime(1970, 1, 1, tzinfo=UTC),
        attempts=1,
        claimed_at=NOW,
        last_error="HTTP 500",
    ),
}


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("status", [None, *TicketStatus])
@pytest.mark.parametrize("claim", list(CLAIMS))
@pytest.mark.parametrize("logged", [None, *DeliveryStatus])
def test_a_message_met_again_is_sent_only_when_nobody_has_or_holds_it(
    template: str, status: TicketStatus | None, claim: str, logged: DeliveryStatus | None
) -> None:
    held = CLAIMS[claim]
    plan = plan_message(template, status, held, logged, NOW)
    if logged is DeliveryStatus.SENDING:
        assert plan.go is Go.LOG  # the operator's retry reopened it: the log's holds decide
    elif logged is not None:
        assert plan.go is Go.DONE  # settled: a repeat changes nothing
    elif is_stale(template, status):
        assert plan.go is Go.DROP  # "go to counter 2" after the service completed
    elif held is None:
        assert (plan.go, plan.attempt) == (Go.SEND, 1)
    elif held.held_until > NOW:
        # Another attempt is on the wire (the other instance, the ack wait ran out): never a
        # second send; back when its hold ends.
        assert plan.go is Go.WAIT
        assert plan.wait_seconds == max(1.0, (held.held_until - NOW).total_seconds())
    else:
        # A crash after the claim (or a transient failure that let go): sent again, counted.
        assert (plan.go, plan.attempt) == (Go.SEND, held.attempts + 1)


def test_only_the_templates_about_a_status_can_be_stale() -> None:
    assert set(STATUS_OF_TEMPLATE) == {"ticket_issued", "ticket_approaching", "ticket_called"}
    late_call = plan_message("ticket_called", TicketStatus.COMPLETED, CLAIMS["held"], None, NOW)
    assert late_call.go is Go.DROP
    completed = plan_message("ticket_completed", TicketStatus.COMPLETED, None, None, NOW)
    assert completed.go is Go.SEND


def test_a_claim_reads_back_from_the_stored_instants() -> None:
    stored = {
        "delivery_id": "e:sms:k",
        "held_until": "20261207T220030.000000Z",
        "attempts": 1,
        "claimed_at": "20261207T220000.000000Z",
        "last_error": None,
    }
    claim = Claim.model_validate(stored)
    assert claim.held_until == NOW + timedelta(seconds=30) and claim.claimed_at == NOW


def test_a_ticket_document_keeps_each_claim_under_its_delivery_id() -> None:
    """The repository's mapping, both ways: a claim saved under `claims.<delivery id>` (a dot in
    an id escaped, so it cannot open a sub-document) is found again by the same id."""
    odd = "evt.1:sms:abc$"
    claim = CLAIMS["held"].model_copy(update={"delivery_id": odd})
    path = claim_field(odd)
    assert path.count(".") == 1 and "$" not in path
    doc = {
        "_id": "t1",
        "site": "cikarang-utara",
        "status": "waiting",
        "rank": TicketStatus.WAITING.rank,
        "version": 3,
        "claims": {path.removeprefix("claims."): stored_claim(claim)},
    }
    notices = TicketNotices.model_validate(doc)
    assert notices.claim(odd) == claim and notices.claim("other:sms:abc") is None
    assert notices.version == 3 and notices.status is TicketStatus.WAITING
