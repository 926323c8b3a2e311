"""The issuer's memory of lines (ADR 0215) over the real store and NATS: a line that leaves
memory while a flush reads another one (the LRU evicts it, or another instance's ticket.issued
forgets its site) still numbers the flush's tickets, and a site's remembered lines stay bounded.
Review reproducers: the first two failed the whole flush with a KeyError before the fix."""

from __future__ import annotations

import asyncio

import pytest

from giliran.settings import Settings
from services.queue.handlers import Queue
from services.queue.issuing import LINES_KEPT
from services.queue.store import TicketStore
from tests.conftest import request_event, running

pytestmark = pytest.mark.integration


def second_instance(queue: Queue) -> Queue:
    """Another queue instance's use cases on the same store: its own memory and numbers."""
    other = Queue(store=TicketStore(queue.store.tickets.database), catalogue=queue.catalogue)
    other.store.hand_over = queue.store.hand_over
    return other


async def _issue_in_many_sessions(queue: Queue, sessions: int) -> None:
    for start in range(0, sessions, 50):  # other sessions' lines, e.g. other days of the site
        await asyncio.gather(
            *(
                queue.issue_tickets(request_event(["KTP-REKAM"], session_id=f"day-{n}"))
                for n in range(start, min(start + 50, sessions))
            )
        )


async def test_a_remembered_line_evicted_while_a_new_one_is_read(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        queue: Queue = svc.app.state.queue
        [first] = await queue.issue_tickets(request_event(["KTP-REKAM"], session_id="today"))
        assert first.number == "A-001"
        await _issue_in_many_sessions(queue, LINES_KEPT - 1)  # memory full, "today:A" oldest
        tickets = await queue.issue_tickets(
            request_event(["KTP-REKAM", "KTP-CETAK"], session_id="today")
        )
        assert sorted(t.number for t in tickets) == ["A-002", "B-001"]


async def test_another_instances_ticket_issued_during_a_line_read(settings: Settings) -> None:
    """This instance knows line A (it issued A-001), not line B. A request for A and B reads B;
    while that read is held, the other instance issues into A and its ticket.issued reaches this
    process over NATS, which forgets line A. The request still gets both tickets, and the
    numbers stay unique and gap-free (the unique index refuses the stale one)."""
    async with running("queue", settings) as svc:
        queue: Queue = svc.app.state.queue
        other = second_instance(queue)
        [first] = await queue.issue_tickets(request_event(["KTP-REKAM"]))
        assert first.number == "A-001"

        seen = asyncio.Event()
        real_on_event = queue.memory.on_event

        def watched(subject: str, event_id: str | None) -> None:
            real_on_event(subject, event_id)
            if subject.endswith(".ticket.issued") and not queue.store.own_event(event_id or ""):
                seen.set()

        queue.memory.on_event = watched  # type: ignore[method-assign]
        real_read = queue.store.highest_number
        gate = {"on": True}

        async def held_read(line: str) -> int:
            n: int = await real_read(line)
            if gate["on"] and line.endswith(":B"):
                gate["on"] = False
                await asyncio.wait_for(seen.wait(), timeout=10)
            return n

        queue.store.highest_number = held_read  # type: ignore[method-assign]
        both = asyncio.ensure_future(queue.issue_tickets(request_event(["KTP-REKAM", "KTP-CETAK"])))
        await asyncio.sleep(0.3)  # `both` is reading line B's highest
        [there] = await other.issue_tickets(request_event(["KTP-REKAM"]))
        tickets = await asyncio.wait_for(both, timeout=15)
        numbers = sorted([first.number, there.number, *(t.number for t in tickets)])
        assert numbers == ["A-001", "A-002", "A-003", "B-001"]


async def test_a_sites_remembered_lines_stay_bounded(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        queue: Queue = svc.app.state.queue
        await _issue_in_many_sessions(queue, LINES_KEPT + 80)  # years of opening days
        assert len(queue.issuer.lines_of_site["cikarang-utara"]) <= LINES_KEPT
