"""The requests of one fetched batch bring the same session facts at once: they are recorded by
one write, whose answer they all share — a session of another site refuses every one of them."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, cast

import pytest

from giliran.catalogue import load_catalogue
from giliran.contracts import Channel, CitizenRef, RequestSubmitted, new_id, utcnow
from giliran.errors import Unprocessable
from giliran.settings import Settings
from services.queue.handlers import Queue
from services.queue.store import TicketStore

SITE = "cikarang-utara"


class Sessions:
    """The store's session write, held open until released, each call counted."""

    def __init__(self, *, ours: bool) -> None:
        self.writes = 0
        self.ours = ours
        self.release = asyncio.Event()

    async def note_session(self, *args: Any, **kwargs: Any) -> bool:
        self.writes += 1
        await self.release.wait()
        return self.ours


OPENS = utcnow()


def submitted(session_id: str = f"{SITE}-20261206") -> RequestSubmitted:
    """A walk-in of one session: every request of it carries the same window."""
    opens = OPENS
    return RequestSubmitted(
        request_id=new_id(), session_id=session_id, services=["KIA"], channel=Channel.KIOSK,
        citizen=CitizenRef(), submitted_at=opens, session_opens_at=opens,
        session_closes_at=opens + timedelta(hours=2),
    )  # fmt: skip


def queue_over(sessions: Sessions) -> Queue:
    return Queue(
        store=cast(TicketStore, sessions), catalogue=load_catalogue(Settings().catalogue_dir)
    )


async def test_a_batchs_requests_record_their_session_once() -> None:
    sessions = Sessions(ours=True)
    queue = queue_over(sessions)
    noting = [
        asyncio.ensure_future(queue._note_session(SITE, submitted(), utcnow())) for _ in range(10)
    ]
    await asyncio.sleep(0.01)
    sessions.release.set()
    await asyncio.gather(*noting)
    assert sessions.writes == 1
    await queue._note_session(SITE, submitted(), utcnow())  # noted moments ago: no write
    assert sessions.writes == 1


async def test_a_session_of_another_site_refuses_every_request_that_waited_for_it() -> None:
    sessions = Sessions(ours=False)
    queue = queue_over(sessions)
    noting = [
        asyncio.ensure_future(queue._note_session(SITE, submitted(), utcnow())) for _ in range(5)
    ]
    await asyncio.sleep(0.01)
    sessions.release.set()
    for outcome in await asyncio.gather(*noting, return_exceptions=True):
        assert isinstance(outcome, Unprocessable)
    with pytest.raises(Unprocessable):  # and the next one asks the store again
        await queue._note_session(SITE, submitted(), utcnow())
    assert sessions.writes == 2
