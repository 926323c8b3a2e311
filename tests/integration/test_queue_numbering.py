"""ADR 0215 over the real store and NATS: ticket numbers decided in memory stay gap-free and are
never issued twice, whether a request is delivered twice at once, issued by two instances at
once, issued again for another service, or forged with another site's request; a line counted
before the upgrade goes on from its count."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from giliran.contracts import RequestSubmitted, TicketStatus, new_event
from giliran.settings import Settings
from services.queue import domain
from services.queue.handlers import Queue
from services.queue.store import FIRST_OF, FIRST_OF_BACKFILLED, TicketStore
from tests.conftest import RunningService, eventually, publish, request_event, running
from tests.integration.test_queue_actions import SITE, issued

pytestmark = pytest.mark.integration
SESSION = "test-session"


async def numbers(svc: RunningService, prefix: str = "A") -> list[str]:
    found = await svc.app.state.queue.store.tickets.find(
        {"session_id": SESSION, "prefix": prefix}, {"number": 1}
    ).to_list()
    return sorted(str(d["number"]) for d in found)


def expected(count: int, prefix: str = "A") -> list[str]:
    return [domain.format_number(prefix, n) for n in range(1, count + 1)]


def second_instance(svc: RunningService) -> Queue:
    """Another queue instance's use cases on the same store: its own memory and numbers."""
    queue: Queue = svc.app.state.queue
    other = Queue(store=TicketStore(queue.store.tickets.database), catalogue=queue.catalogue)
    other.store.hand_over = queue.store.hand_over
    return other


async def test_one_request_issued_twice_at_once_costs_no_number(settings: Settings) -> None:
    """Two deliveries of one request in flight at once (a redelivery meeting the first): one
    ticket, and the next request takes the next number. Before ADR 0215 both took a number
    from the line's counter and the loser's was left unused: a gap."""
    async with running("queue", settings) as svc:
        queue: Queue = svc.app.state.queue
        other = second_instance(svc)
        twice = request_event(["KTP-REKAM"])
        here, there = await asyncio.gather(queue.issue_tickets(twice), other.issue_tickets(twice))
        assert [t.number for t in here] == [t.number for t in there] == ["A-001"]
        # ...and the same again within one process (two copies in one fetched batch).
        again = request_event(["KTP-REKAM"])
        first, second = await asyncio.gather(queue.issue_tickets(again), queue.issue_tickets(again))
        assert [t.number for t in first] == [t.number for t in second] == ["A-002"]
        [after] = await issued(svc, request_event(["KTP-REKAM"]))
        assert after["number"] == "A-003"
        assert await numbers(svc) == expected(3)


async def test_two_instances_issuing_into_one_line_at_once_skip_and_repeat_no_number(
    settings: Settings,
) -> None:
    """Each instance numbers from its memory: the other's numbers are found only when the store
    refuses one (unique `line_number`), and the line is read again."""
    async with running("queue", settings) as svc:
        queue: Queue = svc.app.state.queue
        other = second_instance(svc)
        events = [request_event(["KTP-REKAM"]) for _ in range(24)]
        results = await asyncio.gather(
            *((queue if i % 2 else other).issue_tickets(event) for i, event in enumerate(events))
        )
        assert all(len(r) == 1 for r in results)
        assert await numbers(svc) == expected(24)
        # Both remember a highest number that is no higher than the line's.
        for instance in (queue, other):
            line = domain.line_key(SESSION, "A")
            assert instance.issuer.highest.get(line, 0) <= 24


async def test_a_line_counted_before_the_upgrade_goes_on_from_its_count(
    settings: Settings,
) -> None:
    """A running Sunday's line numbered by `line_sequences` (before ADR 0215) must not start
    at 1 again after the upgrade."""
    async with running("queue", settings) as svc:
        store: TicketStore = svc.app.state.queue.store
        await store.sequences.insert_one({"_id": domain.line_key(SESSION, "A"), "seq": 41})
        first, second = await issued(svc, request_event(["KTP-REKAM", "KTP-CETAK"]))
        assert (first["number"], second["number"]) == ("A-042", "B-001")


async def test_a_request_issued_again_for_another_service_shares_its_lone_ticket(
    settings: Settings,
) -> None:
    """The request's tickets are not read before the write: its first ticket's unique
    `first_of` refuses the new one, which is then issued the careful way (ADR 0190): the lone
    ticket is flagged shared before the new one is written."""
    async with running("queue", settings) as svc:
        first = request_event(["KTP-REKAM"])
        [alone] = await issued(svc, first)
        more = new_event(first.data.model_copy(update={"services": ["KIA"]}), site=SITE)
        await publish(settings, more)
        store: TicketStore = svc.app.state.queue.store

        async def both() -> list[dict[str, Any]] | None:
            found = await store.for_request(first.data.request_id)
            return found if len(found) == 2 else None

        tickets = {d["service"]: d for d in await eventually(both, within=15)}
        assert tickets["KTP-REKAM"]["multi"] and tickets["KIA"]["multi"]
        assert tickets["KTP-REKAM"]["number"] == alone["number"]


async def test_tickets_issued_before_the_upgrade_are_marked_first_of_their_request(
    settings: Settings,
) -> None:
    """A ticket from before ADR 0215 has no `first_of`: the start-up marks one open ticket per
    request, so that the request issued again still shares it."""
    async with running("queue", settings) as svc:
        first = request_event(["KTP-REKAM"])
        [alone] = await issued(svc, first)
        store: TicketStore = svc.app.state.queue.store
        # As the code before ADR 0215 left it.
        await store.tickets.update_one({"_id": alone["ticket_id"]}, {"$unset": {FIRST_OF: ""}})
        await store.sequences.delete_one({"_id": FIRST_OF_BACKFILLED})
        await store.ensure_indexes()
        marked = await store.get(alone["ticket_id"])
        assert marked is not None and marked[FIRST_OF] == first.data.request_id
        more = new_event(first.data.model_copy(update={"services": ["KIA"]}), site=SITE)
        [kia] = await svc.app.state.queue.issue_tickets(more)
        shared = await store.get(alone["ticket_id"])
        assert shared is not None and shared["multi"]
        assert kia.service == "KIA"
        assert (await store.get(kia.ticket_id) or {})["multi"]


async def test_a_forged_request_with_another_sites_id_touches_none_of_its_tickets(
    settings: Settings,
) -> None:
    """A request event at another site naming this site's request id: refused, and the
    citizen's ticket here is neither shared nor numbered again, nor answered to the other site.
    Before, the other site's event flagged this site's ticket shared and got a ticket of it."""
    async with running("queue", settings) as svc:
        mine = request_event(["KTP-REKAM"])
        [ticket] = await issued(svc, mine)
        queue: Queue = svc.app.state.queue
        forged_data = RequestSubmitted.model_validate(
            {
                **mine.data.model_dump(),
                "services": ["KTP-CETAK"],
                "session_id": "botram-session",
            }
        )
        forged = new_event(forged_data, site="botram-tarumajaya")
        with pytest.raises(Exception, match="another site"):
            await queue.issue_tickets(forged)
        found = await queue.store.for_request(mine.data.request_id)
        assert [d["_id"] for d in found] == [ticket["ticket_id"]]
        assert not found[0]["multi"] and found[0]["status"] == TicketStatus.WAITING
        # The line here goes on without a gap.
        [after] = await issued(svc, request_event(["KTP-REKAM"]))
        assert after["number"] == "A-002"


async def test_a_forged_request_in_another_sites_session_takes_no_number_of_its_line(
    settings: Settings,
) -> None:
    """A request at another site naming this site's running session is refused before any
    number is decided: this site's line goes on from where it was."""
    async with running("queue", settings) as svc:
        await issued(svc, request_event(["KTP-REKAM"]))
        queue: Queue = svc.app.state.queue
        # (The fair's KTP-CETAK numbers with prefix A too: the same line key as KTP-REKAM here.)
        forged = request_event(["KTP-CETAK"], site="botram-tarumajaya", session_id=SESSION)
        with pytest.raises(Exception, match="another site"):
            await queue.issue_tickets(forged)
        [after] = await issued(svc, request_event(["KTP-REKAM"]))
        assert after["number"] == "A-002"
        assert await numbers(svc) == expected(2)
