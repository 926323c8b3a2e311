"""The board's lines come from a one-second cache (ADR 0082), against the embedded store: a
render given cached lines is followed by a refresh, so a board never stays behind."""

from __future__ import annotations

from datetime import timedelta

import pytest

from giliran.catalogue import load_catalogue
from giliran.contracts import utcnow
from giliran.push import Changes
from giliran.settings import REPO_ROOT, Settings
from giliran.store import connect, instant
from services.queue.board import LinesCache, LineShown
from services.queue.store import TicketStore

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"


def waiting_ticket(n: int, session: str) -> dict[str, object]:
    at = instant(utcnow() - timedelta(minutes=10) + timedelta(seconds=n))
    return {
        "_id": f"r{n}-KIA", "site": SITE, "session_id": session, "request_id": f"r{n}",
        "service": "KIA", "prefix": "K", "number": f"K-{n:03d}", "status": "waiting",
        "issued_at": at, "arrived": True, "queued_at": at, "held": False, "priority": None,
        "is_priority": False, "appointment_at": None, "recalls": 0,
    }  # fmt: skip


async def test_lines_served_from_the_cache_are_refreshed_once_due(settings: Settings) -> None:
    site = load_catalogue(REPO_ROOT / "deploy" / "sites").site(SITE)
    assert site is not None
    client = connect(settings.mongo_url)
    try:
        store = TicketStore(client[f"{settings.db_prefix}_queue"])
        await store.ensure_indexes()
        changes = Changes()
        cache = LinesCache(max_age=0.3, refresh=changes.bump)

        def kia(lines: list[LineShown]) -> int:
            return next(line.waiting for line in lines if line.service == "KIA")

        await store.tickets.insert_one(waiting_ticket(1, "s1"))
        assert kia(await cache.lines(store, site, "s1")) == 1
        seen = changes.version(SITE)
        await store.tickets.insert_one(waiting_ticket(2, "s1"))
        # Within the second: the cached lines (one waiting), and a refresh is now due.
        assert kia(await cache.lines(store, site, "s1")) == 1
        assert await changes.wait(SITE, seen, 5.0) != seen  # the board is told to render again
        assert kia(await cache.lines(store, site, "s1")) == 2
    finally:
        await client.close()
