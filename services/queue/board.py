"""What the waiting-room board shows: the latest calls (each with an id the page announces once),
each counter's state and number, and the next numbers of every line."""

from __future__ import annotations

import asyncio
from datetime import datetime

from pydantic import BaseModel

from giliran.catalogue import SiteDef
from giliran.push import Changes
from giliran.store import Document, from_instant
from services.queue.store import TicketStore

__all__ = ["BoardView", "Changes", "board_view"]

RECENT_CALLS = 8
NEXT_PER_LINE = 3


class CallShown(BaseModel):
    # ticket id + recall count: a recall is a new announcement, a re-sent board is not.
    call_id: str
    number: str
    counter: str
    counter_name: str
    service_name: str
    called_at: datetime
    recall: int


class CounterShown(BaseModel):
    counter: str
    name: str
    status: str  # open / paused / closed
    number: str | None


class LineShown(BaseModel):
    service: str
    name: str
    prefix: str
    waiting: int
    next: list[str]


class BoardView(BaseModel):
    site: str
    name: str
    session_id: str | None
    at: datetime
    calls: list[CallShown]
    counters: list[CounterShown]
    lines: list[LineShown]


def _call(site: SiteDef, doc: Document) -> CallShown:
    counter = site.counter(doc["counter"])
    service = site.service(doc["service"])
    recalls = int(doc.get("recalls", 0))
    return CallShown(
        call_id=f"{doc['_id']}:{recalls}",
        number=doc["number"],
        counter=doc["counter"],
        counter_name=counter.name.id if counter else doc["counter"],
        service_name=service.name.id if service else doc["service"],
        called_at=from_instant(doc.get("last_call_at") or doc["called_at"]),
        recall=recalls,
    )


async def board_view(
    store: TicketStore, site: SiteDef, session_id: str | None, now: datetime
) -> BoardView:
    recent, counter_docs = await asyncio.gather(
        store.recent_calls(site.site, RECENT_CALLS), store.counters_of(site.site)
    )
    calls = [_call(site, d) for d in recent if session_id is None or d["session_id"] == session_id]
    states = {d["counter"]: d for d in counter_docs}
    serving = {
        d["counter"]: d["number"]
        for d in recent
        if d["status"] in ("called", "serving") and d.get("counter")
    }
    counters = [
        CounterShown(
            counter=c.id,
            name=c.name.id,
            status=states[c.id]["status"] if c.id in states else "closed",
            number=serving.get(c.id),
        )
        for c in site.counters
    ]
    lines: list[LineShown] = []
    if session_id is not None:
        nexts = await asyncio.gather(
            *(store.next_in_line(session_id, s.code, NEXT_PER_LINE) for s in site.services)
        )
        for service, (waiting, upcoming) in zip(site.services, nexts, strict=True):
            lines.append(
                LineShown(
                    service=service.code,
                    name=service.name.id,
                    prefix=service.prefix,
                    waiting=waiting,
                    next=[d["number"] for d in upcoming],
                )
            )
    return BoardView(
        site=site.site,
        name=site.name.id,
        session_id=session_id,
        at=now,
        calls=calls,
        counters=counters,
        lines=lines,
    )
