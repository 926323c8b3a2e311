"""The audit trail: one hash-chained log of counter and admin actions in the `<prefix>_auth` db."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from giliran.auth.accounts import Principal
from giliran.contracts import utcnow
from giliran.store import Document, instant

GENESIS = "0" * 64
HASHED = ("seq", "at", "service", "actor", "role", "site", "action", "target", "before", "after")
MAX_RACES = 50


def record_hash(record: Document, previous: str) -> str:
    """SHA-256 over the previous record's hash and this record's fields in a canonical form."""
    body = {key: record.get(key) for key in HASHED}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((previous + canonical).encode()).hexdigest()


@dataclass(frozen=True)
class Broken:
    """The first record whose stored hash or link does not match what its content gives."""

    seq: int
    reason: str


class AuditLog:
    """Append-only, one chain for all services: the record number is unique (and the `_id`), so
    two writers racing for the same number cannot both win (the loser re-reads the head and
    tries again)."""

    def __init__(self, database: AsyncDatabase[Document], service: str) -> None:
        self.records = database["audit"]
        self.service = service

    async def ensure_indexes(self) -> None:
        # Ordered by `seq`, never by `_id`: the embedded store orders `_id` as text (10 < 9).
        await self.records.create_index("seq", unique=True)

    async def record(
        self,
        who: Principal,
        action: str,
        site: str,
        target: str,
        before: Any = None,
        after: Any = None,
    ) -> Document:
        for _ in range(MAX_RACES):
            head = await self.records.find_one({}, sort=[("seq", DESCENDING)])
            seq = int(head["seq"]) + 1 if head else 1
            previous = str(head["hash"]) if head else GENESIS
            doc: Document = {
                "_id": seq,
                "seq": seq,
                "at": instant(utcnow()),
                "service": self.service,
                "actor": who.name,
                "role": who.role.value,
                "site": site,
                "action": action,
                "target": target,
                # Stored as JSON text: the same bytes come back from any store, so the hash holds.
                "before": _json(before),
                "after": _json(after),
                "prev": previous,
            }
            doc["hash"] = record_hash(doc, previous)
            try:
                await self.records.insert_one(doc)
                return doc
            except DuplicateKeyError:
                continue
        raise RuntimeError("audit: could not append after repeated races")

    async def read(
        self, *, site: str | None = None, after_seq: int = 0, limit: int = 200
    ) -> list[Document]:
        query: Document = {"seq": {"$gt": after_seq}}
        if site is not None:
            query["site"] = {"$eq": site}
        cursor = self.records.find(query).sort("seq", 1).limit(limit)
        return [doc async for doc in cursor]

    async def verify(self) -> tuple[int, str, Broken | None]:
        """Walk the chain from the start: (records checked, head hash, first broken record)."""
        previous = GENESIS
        expected = 1
        checked = 0
        async for doc in self.records.find({}).sort("seq", 1):
            seq = int(doc["seq"])
            if seq != expected:
                return checked, previous, Broken(expected, "record missing")
            if doc.get("prev") != previous:
                return checked, previous, Broken(seq, "link to the previous record broken")
            if record_hash(doc, previous) != doc.get("hash"):
                return checked, previous, Broken(seq, "content does not match its hash")
            previous = str(doc["hash"])
            expected += 1
            checked += 1
        return checked, previous, None


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
