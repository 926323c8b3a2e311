"""ADR 0202 over the real store and NATS: a long line's head kept in memory is read again once
it is called down below what call-next needs, instead of call-next reading the line's oldest
tickets from the store on every call until the head drained; the line is still called in
order, each ticket once."""

from __future__ import annotations

from typing import Any

import pytest

from giliran.settings import Settings
from services.queue.memory import HEAD
from tests.conftest import eventually, publish, request_event, running
from tests.integration.test_queue_actions import SITE, Desk

pytestmark = pytest.mark.integration

WAITING = 2 * HEAD + 8  # longer than a head can hold: memory keeps only its first HEAD
CALLS = 2 * HEAD - 2


async def test_a_long_line_is_called_in_order_with_a_read_per_head_not_per_call(
    settings: Settings,
) -> None:
    async with running("queue", settings) as svc:
        store = svc.app.state.queue.store
        for _ in range(WAITING):
            await publish(settings, request_event(["KTP-REKAM"]))

        async def all_issued() -> bool:
            return await store.tickets.count_documents({"status": "waiting"}) == WAITING

        await eventually(all_issued, within=30)
        in_line = [
            d["_id"]
            async for d in store.tickets.find({"status": "waiting"}).sort(
                [("queued_at", 1), ("_id", 1)]
            )
        ]
        # Every read of the line from the store that call-next makes, whichever way it asks.
        reads: list[str] = []
        line_head, candidates = store.line_head, store.callable_candidates

        async def counted_head(*args: Any, **kwargs: Any) -> Any:
            reads.append("head")
            return await line_head(*args, **kwargs)

        async def counted_candidates(*args: Any, **kwargs: Any) -> Any:
            reads.append("candidates")
            return await candidates(*args, **kwargs)

        store.line_head, store.callable_candidates = counted_head, counted_candidates
        svc.app.state.queue.memory.forget(SITE)
        desk = Desk(svc.http, "1")
        await desk.counter_action("open", services=["KTP-REKAM"])  # the one line
        called: list[str] = []
        for _ in range(CALLS):
            ticket = await desk.call_next()
            assert ticket is not None
            called.append(ticket["ticket_id"])
            await desk.ok(ticket["ticket_id"], "complete")
        assert called == in_line[:CALLS]  # in order, each once
        # One read of HEAD + 1 per HEAD - 3 calls (the head is read again when fewer than the 4
        # callable tickets call-next weighs are left): 3 for 30 calls. Reading the line's oldest
        # on each call once the head was short made it 6 (3 of them `candidates`).
        assert reads == ["head"] * 3, reads
