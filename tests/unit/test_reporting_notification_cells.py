"""Notification cells (ADR 0224) on the in-memory fact store, property-based: whatever the order
of a day's notification events, however often each is delivered and however they are cut into
batches, the cells are the same and the figures are those of each delivery's final state."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from giliran.contracts import (
    DeliveryOutcome,
    NotificationFailed,
    NotificationReceipt,
    NotificationSent,
    new_event,
)
from services.reporting.cells import StoredNotification, notification_contributions
from services.reporting.figures import ChannelFigures
from services.reporting.handlers import Reporting
from tests.fakes.reporting_facts import InMemoryFacts

SITE = "cikarang-utara"
DAY = date(2026, 11, 29)
START = datetime(2026, 11, 29, 1, 0, tzinfo=UTC)  # 08:00 WIB


class Ending(Enum):
    """How a delivery ends: its events, and what it adds to its channel's figures."""

    SENT = ("sent",)
    DELIVERED = ("sent", "delivered")
    UNDELIVERED = ("sent", "undelivered")
    FAILED = ("failed",)
    REFUSED = ("refused",)
    SENT_AFTER_FAILING = ("failed", "sent")


def _events(n: int, ending: Ending, channel: str, minutes: int) -> list[Any]:
    at = START + timedelta(minutes=minutes)
    facts = {"delivery_id": f"d{n}", "cause_event_id": "e", "channel": channel,
             "cause_type": "giliran.ticket.called.v1", "template": "ticket_called"}  # fmt: skip
    made: list[Any] = []
    for step in ending.value:
        if step == "sent":
            made.append(NotificationSent(**facts, cost_units=n % 3, sent_at=at))
        elif step in ("delivered", "undelivered"):
            outcome = DeliveryOutcome(step)
            made.append(NotificationReceipt(**facts, outcome=outcome, reported_at=at))
        else:
            refused = step == "refused"
            made.append(NotificationFailed(**facts, reason="x", failed_at=at, refused=refused))
    return [new_event(e, site=SITE, at=at) for e in made]


def _expected(deliveries: list[tuple[Ending, str, int]]) -> dict[str, ChannelFigures]:
    found: dict[str, ChannelFigures] = {}
    for n, (ending, channel, _) in enumerate(deliveries):
        f = found.setdefault(channel, ChannelFigures())
        if "sent" in ending.value:
            f.sent += 1
            f.cost_units += n % 3
            f.delivered += ending is Ending.DELIVERED
            f.undelivered += ending is Ending.UNDELIVERED
        else:
            f.failed += 1
            f.refused += ending is Ending.REFUSED
    return dict(sorted(found.items()))


async def _project(batches: list[list[Any]]) -> tuple[InMemoryFacts, dict[str, ChannelFigures]]:
    store = InMemoryFacts()
    reporting = Reporting(store=store)
    for batch in batches:
        await reporting.fold(batch)
    return store, (await reporting.day_summary(SITE, DAY)).notifications


deliveries = st.lists(
    st.tuples(st.sampled_from(Ending), st.sampled_from(["sms", "whatsapp"]), st.integers(0, 600)),
    min_size=1,
    max_size=10,
)


@settings(max_examples=80, deadline=None)
@given(deliveries, st.randoms(use_true_random=False), st.data())
def test_order_repetition_and_batches_do_not_change_the_notification_cells(
    day: list[tuple[Ending, str, int]], rng: Any, data: st.DataObject
) -> None:
    events = [e for n, d in enumerate(day) for e in _events(n, *d)]
    reference, figures = asyncio.run(_project([[e] for e in events]))
    assert figures == _expected(day)

    delivered = events + data.draw(st.lists(st.sampled_from(events), max_size=len(events)))
    rng.shuffle(delivered)
    batches: list[list[Any]] = []
    while delivered:
        size = rng.randint(1, 6)
        batches.append(delivered[:size])
        delivered = delivered[size:]
    store, shuffled = asyncio.run(_project(batches))
    assert store.notification_cells == reference.notification_cells
    assert shuffled == figures


def test_a_failure_then_a_sent_counts_as_sent_wherever_the_failure_was_counted() -> None:
    """The failure's cell takes it back (`failed_undone`), also when it failed the day before."""
    failed = StoredNotification(site=SITE, channel="sms", failed_at=START - timedelta(days=1),
                                refused=True)  # fmt: skip
    both = failed.model_copy(update={"sent_at": START, "cost_units": 2})
    [counted] = notification_contributions(failed, "Asia/Jakarta")
    made = notification_contributions(both, "Asia/Jakarta")
    assert {c.name for c in made} == {"sent", "failed", "failed_undone"}
    undone = next(c for c in made if c.name == "failed_undone")
    assert undone.cell == counted.cell and counted.cell.day == "2026-11-28"
    assert dict(undone.counts) == {"failed": -1, "refused": -1}
    assert next(c for c in made if c.name == "sent").cell.day == "2026-11-29"
