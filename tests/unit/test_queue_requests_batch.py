"""The queue's requests consumer without an inbox (ADR 0192): a fetched batch runs each
request's events in stream order, different requests at once, names the events handled before,
and lets every group finish before a failure is raised (the kernel then goes event by event)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from giliran.contracts import Event, EventData, RequestCancelled, RequestSubmitted, new_event
from services.queue.subscribers import EachRequestInOrder
from tests.conftest import request_event


def cancelled(submitted: Event[RequestSubmitted]) -> Event[RequestCancelled]:
    data = submitted.data
    return new_event(
        RequestCancelled(
            request_id=data.request_id,
            reason="dibatalkan",
            cancelled_at=data.submitted_at,
        ),
        site=submitted.site,
    )


async def test_each_request_in_order_and_the_ones_handled_before_named() -> None:
    first, second = request_event(["KIA"]), request_event(["KTP-REKAM"])
    first_cancel = cancelled(first)
    seen: list[str] = []

    async def handle(event: Event[Any]) -> bool:
        await asyncio.sleep(0.01 if event.id == first.id else 0)  # the first request is slow
        seen.append(event.id)
        return event.id == second.id  # "handled before"

    handlers: dict[type[EventData], Any] = dict.fromkeys(
        (RequestSubmitted, RequestCancelled), handle
    )
    before = await EachRequestInOrder(handlers)([first, second, first_cancel])
    assert before == {second.id}
    assert seen.index(first.id) < seen.index(first_cancel.id)  # one request in stream order
    assert seen[0] == second.id  # another request did not wait for it


async def test_a_failure_is_raised_once_every_request_is_done() -> None:
    failing, slow = request_event(["KIA"]), request_event(["KTP-REKAM"])
    done: list[str] = []

    async def handle(event: Event[Any]) -> bool:
        if event.id == failing.id:
            raise RuntimeError("store away")
        await asyncio.sleep(0.02)
        done.append(event.id)
        return False

    with pytest.raises(RuntimeError):
        await EachRequestInOrder({RequestSubmitted: handle})([failing, slow])
    assert done == [slow.id]  # finished before the kernel's event-by-event pass begins
