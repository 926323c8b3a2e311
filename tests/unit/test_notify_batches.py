"""Notify's batch handler (ADR 0185) without a bus: each event through its handler, one
request's events in order, repeats named, and a failing batch settled one by one by the kernel
without handling any event a second time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from giliran.contracts import (
    Channel,
    CitizenRef,
    Event,
    RequestSubmitted,
    TicketIssued,
    new_event,
    new_id,
    utcnow,
)
from giliran.errors import RetryLater
from services.notify.subscribers import BatchIncomplete, EachOnce

SITE = "cikarang-utara"


def submitted() -> Event[RequestSubmitted]:
    return new_event(
        RequestSubmitted(
            request_id=new_id(),
            session_id="cikarang-utara-20261207",
            services=["KIA"],
            channel=Channel.ONLINE,
            citizen=CitizenRef(consent=False),
            submitted_at=utcnow(),
        ),
        site=SITE,
    )


def issued(request: Event[RequestSubmitted], n: int) -> Event[TicketIssued]:
    return new_event(
        TicketIssued(
            ticket_id=f"{request.data.request_id}-KIA-{n}",
            request_id=request.data.request_id,
            session_id=request.data.session_id,
            service="KIA",
            number=f"K-{n:03d}",
            issued_at=utcnow(),
            waiting_ahead=0,
        ),
        site=SITE,
    )


class Handlers:
    """Records what ran, in order; a repeat or a failure by event id."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.repeats: set[str] = set()
        self.failures: dict[str, Exception] = {}

    async def __call__(self, event: Event[Any]) -> bool:
        self.ran.append(event.id)
        await asyncio.sleep(0.001 if isinstance(event.data, RequestSubmitted) else 0)
        if event.id in self.failures:
            raise self.failures[event.id]
        return event.id in self.repeats

    def fold(self) -> EachOnce:
        return EachOnce({RequestSubmitted: self, TicketIssued: self})


async def test_one_requests_events_run_in_stream_order_and_repeats_are_named() -> None:
    handlers = Handlers()
    first, second = submitted(), submitted()
    batch = [first, issued(first, 1), second, issued(first, 2), issued(second, 1)]
    handlers.repeats = {batch[3].id}
    assert await handlers.fold()(batch) == {batch[3].id}
    mine = [e.id for e in batch if e.data.request_id == first.data.request_id]
    assert [i for i in handlers.ran if i in mine] == mine
    assert sorted(handlers.ran) == sorted(e.id for e in batch)


async def test_a_failing_batch_is_settled_one_by_one_without_running_anything_twice() -> None:
    """The kernel, when the batch handler raises, calls it with each event alone and settles
    each (retry with its delay, dead letter). The outcomes are given back: an event that
    succeeded is not handled again (its message would be attempted again), the failure comes
    back as it was, with its delay."""
    handlers = Handlers()
    request = submitted()
    batch = [request, issued(request, 1), issued(request, 2)]
    handlers.failures = {batch[1].id: RetryLater("gateway busy", 7.0)}
    handlers.repeats = {batch[2].id}
    fold = handlers.fold()
    with pytest.raises(BatchIncomplete):
        await fold(batch)
    ran = list(handlers.ran)
    assert ran == [e.id for e in batch]  # the later event still ran after the failure
    assert await fold([batch[0]]) == set()
    with pytest.raises(RetryLater) as failed:
        await fold([batch[1]])
    assert failed.value.delay_seconds == 7.0
    assert await fold([batch[2]]) == {batch[2].id}
    assert handlers.ran == ran  # nothing handled a second time
    # The next delivery of the failed event is handled again, for real.
    handlers.failures.clear()
    assert await fold([batch[1]]) == set()
    assert handlers.ran == [*ran, batch[1].id]
