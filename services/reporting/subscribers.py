"""Bus entrypoints of reporting: every event it projects."""

from __future__ import annotations

from typing import Any

from giliran.bus import EventHandler
from giliran.contracts import (
    CounterClosed,
    CounterOpened,
    EventData,
    FeedbackSubmitted,
    NotificationFailed,
    NotificationReceipt,
    NotificationSent,
    RequestCheckedIn,
    RequestSubmitted,
)
from giliran.contracts.subjects import all_events
from giliran.runtime import ServiceRuntime
from services.reporting.handlers import TICKET_EVENTS, Reporting


def handlers_for(reporting: Reporting) -> dict[type[EventData], EventHandler]:
    """Which event feeds which projection: shared by the live consumer and the replay."""
    counter: Any = reporting.record_counter
    handlers: dict[type[EventData], EventHandler] = {
        RequestSubmitted: reporting.record_request,
        RequestCheckedIn: reporting.record_check_in,
        FeedbackSubmitted: reporting.record_feedback,
        NotificationSent: reporting.record_notification,
        NotificationFailed: reporting.record_notification,
        NotificationReceipt: reporting.record_notification,
        CounterOpened: counter,
        CounterClosed: counter,
    }
    ticket_handler: Any = reporting.record_ticket
    handlers.update(dict.fromkeys(TICKET_EVENTS, ticket_handler))
    return handlers


def register(runtime: ServiceRuntime, reporting: Reporting) -> None:
    runtime.consume("projections", all_events(), handlers_for(reporting))
