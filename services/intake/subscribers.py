"""Bus entrypoints of intake: the queue's ticket events update the citizen's request."""

from __future__ import annotations

from giliran.contracts import TICKET_EVENTS
from giliran.contracts.subjects import entity_events
from giliran.runtime import ServiceRuntime
from services.intake.handlers import Intake

# After a short batch the consumer waits this long before fetching again, so the next batch
# holds the events that came meanwhile: one bulk write for them instead of one each (ADR 0196).
# Short, because a kiosk is waiting for the ticket.issued of its registration: 0.1 s saved
# some of intake's CPU but doubled the kiosk's median wait and broke the p99 target of issue
# #17 (ADR 0209, reverted).
LINGER_SECONDS = 0.03


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
