"""Bus entrypoints of intake: the queue's ticket events update the citizen's request."""

from __future__ import annotations

from giliran.contracts import TICKET_EVENTS, TicketIssued
from giliran.contracts.subjects import entity_events, event_pattern
from giliran.runtime import ServiceRuntime
from services.intake.handlers import Intake

# After a short batch the consumer waits this long before fetching again, so the next batch
# holds the events that came meanwhile: one bulk write for them instead of one each (ADR 0196).
# A kiosk waiting for the ticket.issued of its registration does not wait for this consumer:
# every instance hears ticket.issued on plain NATS as it is published (`ticket_heard`, ADR
# 0212). What waits for the store write is the status page's push of a ticket's move (at most
# this much later) and, if a plain NATS message is lost, a kiosk wait's look in the store.
LINGER_SECONDS = 0.25


def register(runtime: ServiceRuntime, intake: Intake) -> None:
    # A batch handler, so no inbox: record_ticket dedupes in its one conditional write
    # (ADR 0175), and a batch is one bulk write when every write matches.
    runtime.consume(
        "tickets",
        entity_events("ticket"),
        dict.fromkeys(TICKET_EVENTS, intake.record_ticket),
        batch_handler=intake.record_tickets,
        linger_seconds=LINGER_SECONDS,
    )
    # A kiosk's wait answered from the event itself, in whichever instance it waits (ADR 0212).
    runtime.watch_events(
        event_pattern(TicketIssued.entity, TicketIssued.event), intake.ticket_heard
    )
