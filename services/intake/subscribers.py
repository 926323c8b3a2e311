"""Bus entrypoints of intake: the queue's ticket events update the citizen's request."""

from __future__ import annotations

from giliran.contracts import (
    TicketCalled,
    TicketCancelled,
    TicketCompleted,
    TicketIssued,
    TicketNoShow,
    TicketRecalled,
    TicketTransferred,
)
from giliran.contracts.subjects import entity_events
from giliran.runtime import ServiceRuntime
from services.intake.handlers import Intake


def register(runtime: ServiceRuntime, intake: Intake) -> None:
    models = (
        TicketIssued,
        TicketCalled,
        TicketRecalled,
        TicketCompleted,
        TicketNoShow,
        TicketTransferred,
        TicketCancelled,
    )
    runtime.consume("tickets", entity_events("ticket"), dict.fromkeys(models, intake.record_ticket))
