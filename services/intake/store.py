"""Intake's own collections: citizens' requests (with their outbox) and ad-hoc sessions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument

from giliran.contracts import Event
from giliran.store import Database, Document, instant, outbox_fields

TicketsChange = Callable[[dict[str, Document]], dict[str, Document] | None]


class RequestStore:
    def __init__(self, database: Database) -> None:
        self.requests = database["requests"]
        self.sessions = database["adhoc_sessions"]

    async def ensure_indexes(self) -> None:
        await self.requests.create_index([("site", 1), ("session_id", 1)])
        await self.requests.create_index([("submitted_at", 1)])
        await self.sessions.create_index([("site", 1), ("closes_at", 1)])

    async def insert(self, doc: Document, events: Sequence[Event[Any]]) -> None:
        await self.requests.insert_one({**doc, "version": 0, **outbox_fields(events)})

    async def get(self, request_id: str) -> Document | None:
        return await self.requests.find_one({"_id": request_id}, {"outbox": 0})

    async def update_tickets(self, request_id: str, change: TicketsChange) -> bool:
        """Read-modify-write of a request's ticket map with optimistic concurrency (version),
        so two ticket events for one request handled at once never overwrite each other.
        Returns False when the request is unknown."""
        while True:
            doc = await self.requests.find_one({"_id": request_id}, {"tickets": 1, "version": 1})
            if doc is None:
                return False
            changed = change(dict(doc.get("tickets") or {}))
            if changed is None:
                return True
            result = await self.requests.update_one(
                {"_id": request_id, "version": doc["version"]},
                {"$set": {"tickets": changed}, "$inc": {"version": 1}},
            )
            if result.modified_count == 1:
                return True

    async def save_adhoc_session(self, doc: Document) -> None:
        await self.sessions.find_one_and_update(
            {"_id": doc["_id"]},
            {"$set": doc},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )

    async def open_adhoc_sessions(self, site: str, now: datetime) -> list[Document]:
        return await self.sessions.find(
            {"site": site, "closes_at": {"$gt": instant(now)}}
        ).to_list()
