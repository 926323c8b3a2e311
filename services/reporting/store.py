"""Reporting's own collections: facts per request and ticket, report cells built from them, and
counter states, all from events."""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from giliran.store import Collection, Database, Document, count
from services.reporting.cells import Contribution


class FactStore:
    """Facts are written with $set of values an event carries, so applying an event twice, or
    events out of order, gives the same documents. Cells are added to with $inc, each
    contribution exactly once (see `_contribute`)."""

    def __init__(self, database: Database) -> None:
        self.requests = database["request_facts"]
        self.tickets = database["ticket_facts"]
        self.feedback = database["feedback_facts"]
        self.notifications = database["notification_facts"]
        self.ticket_cells = database["ticket_cells"]
        self.request_cells = database["request_cells"]
        self.counters = database["counter_states"]
        self._known_cells: set[str] = set()  # cells this process knows exist

    def collections(self) -> list[Collection]:
        """Every projection (what a rebuild must reproduce)."""
        return [self.requests, self.tickets, self.feedback, self.notifications,
                self.ticket_cells, self.request_cells, self.counters]  # fmt: skip

    async def ensure_indexes(self) -> None:
        await self.requests.create_index([("site", 1), ("day", 1)])
        await self.tickets.create_index([("site", 1), ("day", 1), ("service", 1)])
        await self.tickets.create_index("request_id")
        await self.feedback.create_index([("site", 1), ("day", 1), ("service", 1)])
        await self.notifications.create_index([("site", 1), ("day", 1)])
        await self.ticket_cells.create_index([("site", 1), ("day", 1)])
        await self.ticket_cells.create_index([("day", 1)])
        await self.request_cells.create_index([("site", 1), ("day", 1)])
        await self.counters.create_index([("site", 1), ("day", 1)])

    async def upsert_request(self, request_id: str, fields: Document) -> None:
        await self.requests.update_one({"_id": request_id}, {"$set": fields}, upsert=True)

    async def upsert_ticket(self, ticket_id: str, fields: Document) -> Document:
        """Write a ticket's facts; returns its document with every fact known so far."""
        doc = await self.tickets.find_one_and_update(
            {"_id": ticket_id},
            {"$set": fields},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return doc or fields

    async def mark_checked_in(self, request_id: str, checked_in_at: str) -> None:
        """A booking's holder arrived: its tickets join the line (for the live view)."""
        await self.tickets.update_many(
            {"request_id": request_id}, {"$set": {"checked_in_at": checked_in_at}}
        )

    async def checked_in_at(self, request_id: str) -> str | None:
        doc = await self.requests.find_one({"_id": request_id}, {"checked_in_at": 1})
        return None if doc is None else doc.get("checked_in_at")

    async def contribute_ticket(self, ticket_id: str, c: Contribution) -> None:
        await _contribute(self.ticket_cells, c, ticket_id, self._known_cells)

    async def contribute_request(self, request_id: str, c: Contribution) -> None:
        await _contribute(self.request_cells, c, request_id, self._known_cells)

    async def ticket_cells_where(
        self, first: date, last: date, site: str | None = None, session_id: str | None = None
    ) -> list[Document]:
        return await _cells_where(self.ticket_cells, first, last, site, session_id)

    async def request_cells_where(
        self, first: date, last: date, site: str | None = None, session_id: str | None = None
    ) -> list[Document]:
        return await _cells_where(self.request_cells, first, last, site, session_id)

    async def tickets_on(self, site: str, day: date) -> list[Document]:
        return await self.tickets.find({"site": site, "day": day.isoformat()}).to_list()

    async def upsert_feedback(self, feedback_id: str, fields: Document) -> None:
        await self.feedback.update_one({"_id": feedback_id}, {"$set": fields}, upsert=True)

    async def feedback_between(self, site: str, first: date, last: date) -> list[Document]:
        return await self.feedback.find(
            {"site": site, "day": {"$gte": first.isoformat(), "$lte": last.isoformat()}}
        ).to_list()

    async def completed_between(self, site: str, first: date, last: date) -> int:
        return await count(
            self.tickets,
            {
                "site": site,
                "day": {"$gte": first.isoformat(), "$lte": last.isoformat()},
                "completed_at": {"$exists": True},
            },
        )

    async def upsert_notification(self, key: str, fields: Document) -> None:
        await self.notifications.update_one({"_id": key}, {"$set": fields}, upsert=True)

    async def notifications_on(self, site: str, day: date) -> list[Document]:
        return await self.notifications.find({"site": site, "day": day.isoformat()}).to_list()

    async def set_counter(self, key: str, fields: Document, order: int) -> None:
        """A counter's state after the latest of its open/close events: `order` (a number: the
        embedded server compares strings that begin like a date as dates) only moves forward,
        whatever order the events arrive in."""
        await self.counters.update_one({"_id": key}, {"$setOnInsert": {"order": -1}}, upsert=True)
        await self.counters.update_one(
            {"_id": key, "order": {"$lt": order}}, {"$set": {**fields, "order": order}}
        )

    async def counters_on(self, site: str, day: date) -> list[Document]:
        return await self.counters.find({"site": site, "day": day.isoformat()}).to_list()


KNOWN_CELLS = 10_000  # cells a process remembers creating (a busy day has a few thousand)


def mark(owner_id: str, name: str) -> str:
    """A cell's record that one owner's fact is in it: a 48-bit hash, not the id, to keep cells
    small (two of a cell's few hundred facts colliding: about 1 in 10^10)."""
    return "seen." + hashlib.blake2b(f"{owner_id}~{name}".encode(), digest_size=6).hexdigest()


async def _contribute(cells: Collection, c: Contribution, owner_id: str, known: set[str]) -> None:
    """Add a contribution to its cell exactly once: the increment and the record that this
    owner's fact is in the cell are one conditional single-document write, so a redelivered
    event, a crash at any point, another event of the same ticket or a second instance can never
    add it twice (docs/decisions/0031-report-cells-exactly-once.md)."""
    if c.cell.id not in known:
        # The embedded server's upsert would store "$inc" paths such as "n.issued" as literal
        # dotted keys in a new document: create the cell first, then update it.
        await _ensure(cells, c.cell.id, c.cell.fields())
        if len(known) >= KNOWN_CELLS:  # bounded: a year of cells would not fit in memory
            known.clear()
        known.add(c.cell.id)
    seen = mark(owner_id, c.name)
    update = c.update()
    update.setdefault("$set", {})[seen] = 1
    done = await cells.update_one({"_id": c.cell.id, seen: {"$exists": False}}, update)
    if done.matched_count == 0 and await cells.find_one({"_id": c.cell.id}, {"_id": 1}) is None:
        known.discard(c.cell.id)  # the cell went away under us (a dropped database): redo
        await _contribute(cells, c, owner_id, known)


async def _ensure(collection: Collection, key: str, fields: Document) -> None:
    try:
        await collection.update_one(
            {"_id": key}, {"$setOnInsert": {**fields, "seen": {}}}, upsert=True
        )
    except DuplicateKeyError:  # two writers created it at once: it exists, which is all we need
        pass


async def _cells_where(
    cells: Collection, first: date, last: date, site: str | None, session_id: str | None
) -> list[Document]:
    """Report cells of the days first..last, of one site and one session when given (without
    their per-fact marks)."""
    query: dict[str, Any] = {"day": {"$gte": first.isoformat(), "$lte": last.isoformat()}}
    if site is not None:
        query["site"] = site
    if session_id is not None:
        query["session_id"] = session_id
    found: list[Document] = await cells.find(query, {"seen": 0}).to_list()
    return found
