"""What the waiting-room board shows: the latest calls (each with an id the page announces once),
each counter's state and number, and the next numbers of every line."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from cachetools import LRUCache
from pydantic import BaseModel

from giliran.catalogue import SiteDef
from giliran.push import Changes
from giliran.store import Document, from_instant
from services.queue.announce import call_sentence
from services.queue.memory import QueueMemory

__all__ = ["BoardView", "Changes", "board_from_memory", "call_shown"]

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
    # What is said (a browser's own Indonesian voice says this text) and where the box's
    # spoken version of it is (chime + eSpeak NG), for browsers without one.
    spoken: str
    audio: str


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


# A call as a board shows it, keyed by everything it is made of: the same for every rendering
# until the ticket is called again (a recall counts up, a new call moves `last_call_at`). A
# board renders its 8 latest calls on every change; each is made once here instead (the spoken
# sentence's regular expressions, an instant parse and a model validation per call per
# rendering: 145 -> 80 µs of CPU per rendering). Nothing else writes it; a second instance keeps
# its own, made from the same documents.
_SHOWN: LRUCache[tuple[str, ...], CallShown] = LRUCache(maxsize=1024)


def call_shown(site: SiteDef, doc: Document) -> CallShown:
    counter = site.counter(doc["counter"])
    service = site.service(doc["service"])
    recalls = int(doc.get("recalls", 0))
    counter_name = counter.name.id if counter else doc["counter"]
    service_name = service.name.id if service else doc["service"]
    called_at = doc.get("last_call_at") or doc["called_at"]
    key = (site.site, doc["_id"], str(recalls), str(called_at), doc["counter"], counter_name,
           service_name, doc["number"])  # fmt: skip
    shown = _SHOWN.get(key)
    if shown is None:
        shown = _SHOWN[key] = CallShown(
            call_id=f"{doc['_id']}:{recalls}",
            number=doc["number"],
            counter=doc["counter"],
            counter_name=counter_name,
            service_name=service_name,
            called_at=from_instant(called_at),
            recall=recalls,
            spoken=call_sentence(doc["number"], counter_name),
            audio=announcement_path(site.site, doc["_id"]),
        )
    return shown


def announcement_path(site: str, ticket_id: str) -> str:
    return f"/api/v1/sites/{site}/calls/{quote(ticket_id, safe='')}/announcement.wav"


async def board_from_memory(
    memory: QueueMemory, site: SiteDef, session_id: str | None, now: datetime
) -> BoardView:
    """The board from the site's state in this process's memory (ADR 0160): no store read
    unless another instance wrote since the last render."""
    recent = await memory.recent_calls(site.site)
    states = await memory.counters(site.site)
    lines: list[LineShown] = []
    if session_id is not None:
        for service in site.services:
            waiting, first = await memory.waiting(site.site, session_id, service.code)
            lines.append(
                LineShown(
                    service=service.code,
                    name=service.name.id,
                    prefix=service.prefix,
                    waiting=waiting,
                    next=[d["number"] for d in first[:NEXT_PER_LINE]],
                )
            )
    return _board(site, session_id, now, recent, list(states.values()), lines)


def _board(
    site: SiteDef,
    session_id: str | None,
    now: datetime,
    recent: list[Document],
    counter_docs: list[Document],
    lines: list[LineShown],
) -> BoardView:
    calls = [
        call_shown(site, d) for d in recent if session_id is None or d["session_id"] == session_id
    ]
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
    return BoardView(
        site=site.site,
        name=site.name.id,
        session_id=session_id,
        at=now,
        calls=calls,
        counters=counters,
        lines=lines,
    )
