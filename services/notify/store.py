"""Notify's own collections: contacts learnt from requests, and the delivery log with outbox."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.errors import DuplicateKeyError

from giliran.contracts import Event
from giliran.store import Database, Document, with_outbox


class DeliveryStore:
    def __init__(self, database: Database) -> None:
        self.contacts = database["contacts"]
        self.deliveries = database["deliveries"]

    async def ensure_indexes(self) -> None:
        await self.deliveries.create_index([("ticket_id", 1), ("created_at", 1)])
        await self.deliveries.create_index([("request_id", 1)])

    async def save_contact(self, request_id: str, contact: Document) -> None:
        await self.contacts.update_one({"_id": request_id}, {"$set": contact}, upsert=True)

    async def contact(self, request_id: str) -> Document | None:
        return await self.contacts.find_one({"_id": request_id})

    async def begin(self, doc: Document) -> Document | None:
        """Record a delivery before sending. Returns None when this delivery was already begun
        (then the caller looks at how far it got)."""
        try:
            await self.deliveries.insert_one(doc)
        except DuplicateKeyError:
            return None
        return doc

    async def get(self, delivery_id: str) -> Document | None:
        return await self.deliveries.find_one({"_id": delivery_id}, {"outbox": 0})

    async def finish(
        self, delivery_id: str, fields: Document, events: Sequence[Event[Any]]
    ) -> None:
        await self.deliveries.update_one(
            {"_id": delivery_id, "status": "sending"}, with_outbox({"$set": fields}, events)
        )

    async def list_for_ticket(self, ticket_id: str) -> list[Document]:
        return (
            await self.deliveries.find({"ticket_id": ticket_id}, {"outbox": 0})
            .sort([("created_at", 1), ("_id", 1)])
            .to_list()
        )
