"""Bus entrypoints of intake: the queue's ticket events update the citizen's request."""

from __future__ import annotations

from giliran.contracts import TICKET_EVENTS
from giliran.contracts.subjects import entity_events
from giliran.runtime import ServiceRuntime
from services.intake.handlers import Intake


def register(runtime: ServiceRuntime, intake: Intake) -> None:
    # A batch handler, so no inbox: record_ticket dedupes in its one conditional write
    # (ADR 0175). No lingering: a kiosk is waiting for the ticket.issued in the batch.
    runtime.consume(
        "tickets",
        entity_events("ticket"),
        dict.fromkeys(TICKET_EVENTS, intake.record_ticket),
        batch_handler=intake.record_tickets,
    )
