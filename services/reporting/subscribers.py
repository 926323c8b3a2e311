"""Bus entrypoints of reporting: every event it projects, a fetched batch at a time."""

from __future__ import annotations

from giliran.bus import EventHandler
from giliran.contracts import (
    CounterClosed,
    CounterOpened,
    Event,
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

PROJECTED: tuple[type[EventData], ...] = (
    RequestSubmitted,
    RequestCheckedIn,
    FeedbackSubmitted,
    NotificationSent,
    NotificationFailed,
    NotificationReceipt,
    CounterOpened,
    CounterClosed,
    *TICKET_EVENTS,
)
# Reporting's readers (dashboards, exports) can wait this long; under load the consumer then
# fetches several lifecycles' events at once and folds them with one write per document
# (docs/decisions/0171-reporting-lingers-between-batches.md; a 1 s rest was taken back, 0223).
LINGER_SECONDS = 0.25
# 256 kept reporting current at 40/s but the citizens' path fell further behind (ADR 0232).
FETCH_BATCH = 64


def handlers_for(reporting: Reporting) -> dict[type[EventData], EventHandler]:
    """Each projected event on its own: a batch of one (the consumer's fallback when a batch
    fails, and what tests feed one event at a time)."""

    async def one(event: Event[EventData]) -> set[str]:
        return await reporting.fold([event])

    return dict.fromkeys(PROJECTED, one)


def register(runtime: ServiceRuntime, reporting: Reporting) -> None:
    runtime.consume(
        "projections",
        all_events(),
        handlers_for(reporting),
        batch_handler=reporting.fold,
        linger_seconds=LINGER_SECONDS,
        fetch_batch=FETCH_BATCH,
    )
