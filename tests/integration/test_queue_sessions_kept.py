"""ADR 0216 over the real store and NATS: the running session is kept while no other writer is
seen at the site, and another instance's new session shows here within a second of its event
on the bus, as it did when the session was read every second."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from giliran.contracts import utcnow
from giliran.settings import Settings
from services.queue.handlers import QUIET_TTL, Queue
from tests.conftest import eventually, request_event, running
from tests.integration.test_queue_actions import SITE
from tests.integration.test_queue_numbering import second_instance

pytestmark = pytest.mark.integration


def windowed(session_id: str, opened_minutes_ago: int) -> Any:
    now = utcnow()
    return request_event(
        ["KTP-REKAM"],
        session_id=session_id,
        session_opens_at=now - timedelta(minutes=opened_minutes_ago),
        session_closes_at=now + timedelta(hours=2),
    )


async def test_another_instances_new_session_shows_within_a_second_of_its_event(
    settings: Settings,
) -> None:
    async with running("queue", settings) as svc:
        queue: Queue = svc.app.state.queue
        await queue.issue_tickets(windowed(f"{SITE}-morning", 20))
        assert await queue.current_session(SITE) == f"{SITE}-morning"
        reads = queue.store.sessions_of
        counted: list[str] = []

        async def counting(site: str) -> list[dict[str, object]]:
            counted.append(site)
            return await reads(site)

        queue.store.sessions_of = counting  # type: ignore[method-assign]
        # Alone at the site: kept, not read again every second.
        for _ in range(5):
            assert await queue.current_session(SITE) == f"{SITE}-morning"
        assert counted == []
        # Another instance records a later session (its ticket.issued comes over the bus).
        other = second_instance(svc)
        await other.issue_tickets(windowed(f"{SITE}-noon", 5))

        async def noon() -> bool:
            return await queue.current_session(SITE) == f"{SITE}-noon"

        await eventually(noon, within=min(5.0, QUIET_TTL / 2))
