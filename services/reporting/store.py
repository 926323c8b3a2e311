"""Reporting's own collections: one fact document per request and per ticket, built from events."""

from __future__ import annotations

from datetime import date

from giliran.store import Database, Document, count


class FactStore:
    """Facts are written with $set/$setOnInsert of values an event carries, so applying an event
    twice, or events out of order, gives the same documents: the projection is idempotent."""

    def __init__(self, database: Database) -> None:
        self.requests = database["request_facts"]
        self.tickets = database["ticket_facts"]
        self.feedback = database["feedback_facts"]
        self.notifications = database["notification_facts"]

    async def ensure_indexes(self) -> None:
        await self.requests.create_index([("site", 1), ("day", 1)])
        await self.tickets.create_index([("site", 1), ("day", 1), ("service", 1)])
        await self.feedback.create_index([("site", 1), ("day", 1), ("service", 1)])
        await self.notifications.create_index([("site", 1), ("day", 1)])

    async def upsert_request(self, request_id: str, fields: Document) -> None:
        await self.requests.update_one({"_id": request_id}, {"$set": fields}, upsert=True)

    async def upsert_ticket(self, ticket_id: str, fields: Document) -> None:
        await self.tickets.update_one({"_id": ticket_id}, {"$set": fields}, upsert=True)

    async def requests_on(self, site: str, day: date) -> list[Document]:
        return await self.requests.find({"site": site, "day": day.isoformat()}).to_list()

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

    async def sites_on(self, day: date) -> list[str]:
        """Sites with any ticket or request on a day (for the kabupaten roll-up)."""
        found: set[str] = set()
        for collection in (self.tickets, self.requests):
            async for doc in collection.find({"day": day.isoformat()}, {"site": 1}):
                found.add(doc["site"])
        return sorted(found)

    async def upsert_notification(self, key: str, fields: Document) -> None:
        await self.notifications.update_one({"_id": key}, {"$set": fields}, upsert=True)

    async def notifications_on(self, site: str, day: date) -> list[Document]:
        return await self.notifications.find({"site": site, "day": day.isoformat()}).to_list()
