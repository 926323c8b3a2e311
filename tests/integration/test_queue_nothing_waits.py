"""ADR 0217 over the real store and NATS: call-next says nothing waits only after reading the
counter's lines from the store, so a ticket another instance issued is called even when its
event never reached this one (the bus watch has no delivery guarantee) — and that check reads
those lines only, not the whole site again."""

from __future__ import annotations

import pytest

from giliran.settings import Settings
from services.queue.handlers import Queue
from tests.conftest import request_event, running
from tests.integration.test_queue_actions import SITE, Desk, issued
from tests.integration.test_queue_numbering import second_instance

pytestmark = pytest.mark.integration


async def test_a_ticket_whose_event_was_lost_is_still_called_and_the_site_kept(
    settings: Settings,
) -> None:
    async with running("queue", settings) as svc:
        queue: Queue = svc.app.state.queue
        desk = Desk(svc.http, "1")
        [first] = await issued(svc, request_event(["KTP-REKAM"]))
        assert (await desk.call_next() or {})["ticket_id"] == first["ticket_id"]
        await desk.ok(first["ticket_id"], "complete")
        assert await desk.call_next() is None  # memory knows the line, and it is empty
        # Another instance issues a ticket; this one never hears of it (a lost bus message).
        queue.memory.on_event = lambda subject, event_id: None  # type: ignore[method-assign]
        other = second_instance(svc)
        [unheard] = await other.issue_tickets(request_event(["KTP-REKAM"]))
        forgotten = queue.memory.forgotten
        known_calls = dict(queue.memory.site(SITE).last_calls)
        called = await desk.call_next()
        assert called is not None and called["ticket_id"] == unheard.ticket_id
        # Only the line was read again: the site's counters and latest calls were kept.
        assert queue.memory.forgotten == forgotten
        assert set(queue.memory.site(SITE).last_calls) >= set(known_calls)
        assert queue.memory.site(SITE).counters is not None
