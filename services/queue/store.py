"""The queue's own collections: tickets (with their outbox) and per-line number sequences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from giliran.contracts import Event, TicketStatus, TicketView
from giliran.store import Database, Document, count, outbox_fields, with_outbox


def ticket_view(doc: Document) -> TicketView:
    return TicketView(
        ticket_id=doc["_id"],
        request_id=doc["request_id"],
        number=doc["number"],
        service=doc["service"],
        status=TicketStatus(doc["status"]),
        counter=doc.get("counter"),
        issued_at=doc.get("issued_at"),
        called_at=doc.get("called_at"),
        completed_at=doc.get("completed_at"),
    )


class TicketStore:
    def __init__(self, database: Database) -> None:
        self.tickets = database["tickets"]
        self.sequences = database["line_sequences"]

    async def ensure_indexes(self) -> None:
        # call-next reads the oldest waiting ticket of a site's lines: one index walk, no scan.
        await self.tickets.create_index([("site", 1), ("status", 1), ("queued_at", 1)])
        await self.tickets.create_index([("request_id", 1)])
        await self.tickets.create_index(
            [("site", 1), ("session_id", 1), ("service", 1), ("status", 1)]
        )

    async def next_sequence(self, key: str) -> int:
        doc = await self.sequences.find_one_and_update(
            {"_id": key}, {"$inc": {"seq": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        assert doc is not None
        return int(doc["seq"])

    async def get(self, ticket_id: str) -> Document | None:
        return await self.tickets.find_one({"_id": ticket_id}, {"outbox": 0})

    async def for_request(self, request_id: str) -> list[Document]:
        return await self.tickets.find({"request_id": request_id}, {"outbox": 0}).to_list()

    async def insert_with_events(self, doc: Document, events: Sequence[Event[Any]]) -> bool:
        """False when the ticket already exists (a redelivered or concurrent issue)."""
        try:
            await self.tickets.insert_one({**doc, **outbox_fields(events)})
        except DuplicateKeyError:
            return False
        return True

    async def waiting_in_line(self, site: str, session_id: str, service: str) -> int:
        return await count(
            self.tickets,
            {"site": site, "session_id": session_id, "service": service, "status": "waiting"},
        )

    async def oldest_waiting(self, site: str, services: list[str]) -> Document | None:
        cursor = (
            self.tickets.find(
                {"site": site, "status": TicketStatus.WAITING.value, "service": {"$in": services}},
                {"outbox": 0},
            )
            .sort([("queued_at", 1), ("_id", 1)])
            .limit(1)
        )
        found = await cursor.to_list()
        return found[0] if found else None

    async def transition(
        self,
        ticket_id: str,
        *,
        from_status: TicketStatus,
        set_fields: Document,
        events: Sequence[Event[Any]],
    ) -> Document | None:
        """Move a ticket from `from_status` with its events in one atomic write; None if it was
        no longer in that status (another counter got there first)."""
        return await self.tickets.find_one_and_update(
            {"_id": ticket_id, "status": from_status.value},
            with_outbox({"$set": set_fields}, events),
            projection={"outbox": 0},
            return_document=ReturnDocument.AFTER,
        )
