"""What a ticket's own message does when its event's write took no claim (ADR 0198), exhaustively
and without I/O: the log decides what it holds, then a claim another attempt holds (waited for,
stale or not), then the stale rule, then the claim in the ticket's document (free, or left by a
crashed attempt)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from giliran.contracts import TicketStatus
from giliran.errors import RetryLater, Unprocessable
from services.notify.contacts import ContactUnknown
from services.notify.domain import (
    STATUS_OF_TEMPLATE,
    Claim,
    DeliveryStatus,
    Go,
    plan_message,
)
from services.notify.handlers import what_to_raise
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
    # Each expectation states its whole condition (no `elif` order shared with the rule), so a
    # rule that checks its cases in another order fails here.
    on_the_wire = held is not None and held.held_until > NOW
    stale = status is not None and status.rank > STATUS_OF_TEMPLATE.get(template, status).rank
    if logged is DeliveryStatus.SENDING:
        assert plan.go is Go.LOG  # the operator's retry reopened it: the log's holds decide
    if logged is not None and logged is not DeliveryStatus.SENDING:
        assert plan.go is Go.DONE  # settled: a repeat changes nothing
    if logged is None and on_the_wire:
        # Another attempt may have it on the wire (the other instance, the ack wait ran out):
        # never a second send, and never a drop either (stale or not: the citizen may be getting
        # it, and its record must say so); back when its hold ends.
        assert held is not None
        assert plan.go is Go.WAIT
        assert plan.wait_seconds == max(1.0, (held.held_until - NOW).total_seconds())
    if logged is None and not on_the_wire and stale:
        assert plan.go is Go.DROP  # "go to counter 2" after the service completed
    if logged is None and not on_the_wire and not stale:
        # Never sent, or a crash after the claim (or a transient failure that let go): sent
        # (again), counted.
        assert (plan.go, plan.attempt) == (Go.SEND, 1 + (held.attempts if held else 0))


@pytest.mark.parametrize("status", [TicketStatus.COMPLETED, TicketStatus.NO_SHOW])
def test_a_called_message_on_the_wire_is_waited_for_even_once_its_ticket_moved_on(
    status: TicketStatus,
) -> None:
    """The service completed while the first attempt's "your number is called" was still with
    the gateway: its redelivery waits for that attempt's record rather than recording a drop of
    a message the citizen is getting (which would leave no notification.sent)."""
    plan = plan_message("ticket_called", status, CLAIMS["held"], None, NOW)
    assert (plan.go, plan.wait_seconds) == (Go.WAIT, 30.0)
    lapsed = plan_message("ticket_called", status, CLAIMS["lapsed"], None, NOW)
    assert lapsed.go is Go.DROP  # that attempt crashed: stale now, so never sent again


def test_only_the_templates_about_a_status_can_be_stale() -> None:
    assert set(STATUS_OF_TEMPLATE) == {"ticket_issued", "ticket_approaching", "ticket_called"}
    # (Not while another attempt holds it: see the test above.)
    late_call = plan_message("ticket_called", TicketStatus.COMPLETED, CLAIMS["lapsed"], None, NOW)
    assert late_call.go is Go.DROP
    never_claimed = plan_message("ticket_called", TicketStatus.COMPLETED, None, None, NOW)
    assert never_claimed.go is Go.DROP
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
        "_id": "r1-KIA",
        "site": "cikarang-utara",
        "status": "waiting",
        "rank": TicketStatus.WAITING.rank,
        "version": 3,
        "claims": {path.removeprefix("claims."): stored_claim(claim)},
    }
    notices = TicketNotices.model_validate(doc)
    assert notices.claim(odd) == claim and notices.claim("other:sms:abc") is None
    assert notices.version == 3 and notices.status is TicketStatus.WAITING


def test_an_event_comes_back_while_any_of_its_messages_failed_only_for_now() -> None:
    """What a `ticket.called` raises for its messages' failures: a failure for now (a "near"
    message handed to the log, whose only resumer is the event's redelivery) wins over one that
    dead-letters the event, whichever came first; failures of one kind keep their order."""
    refused, foreign = Unprocessable("sms: HTTP 400"), Unprocessable("not of site")
    for_now, unseen = RetryLater("HTTP 503", 2.0), ContactUnknown("r1")
    assert what_to_raise([]) is None
    assert what_to_raise([refused]) is refused
    assert what_to_raise([refused, foreign]) is refused
    assert what_to_raise([refused, for_now]) is for_now
    assert what_to_raise([foreign, unseen, for_now]) is unseen
    assert what_to_raise([for_now, refused]) is for_now


@pytest.mark.parametrize("status", list(TicketStatus))
def test_a_message_is_stale_by_what_its_own_channel_has_seen_not_by_a_faster_channel(
    status: TicketStatus,
) -> None:
    """ADR 0226: the channels share the ticket's document. The SMS channel, behind, meets its
    "called" after WhatsApp moved the ticket to `status`: for SMS the ticket is where its own
    events left it ("waiting"), so its "called" goes; for WhatsApp, which saw `status`, a late
    "called" is stale exactly as before."""
    notices = TicketNotices.model_validate(
        {
            "_id": "r1-KIA",
            "site": "cikarang-utara",
            "status": status.value,
            "rank": status.rank,
            "seen": {"sms": TicketStatus.WAITING.rank, "wa": status.rank},
        }
    )
    behind = plan_message("ticket_called", notices.seen_by("sms"), None, None, NOW)
    assert behind.go is Go.SEND
    ahead = plan_message("ticket_called", notices.seen_by("wa"), None, None, NOW)
    assert (ahead.go is Go.DROP) == (status.rank > TicketStatus.CALLED.rank)
    # A channel that has seen none of the ticket's events yet (or a document from before
    # channels were kept) holds nothing stale: its first message goes.
    assert notices.seen_by("email") is None
    assert plan_message("ticket_issued", None, None, None, NOW).go is Go.SEND
