"""The audit trail: one HMAC-chained log of counter and admin actions in the `<prefix>_auth` db."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from giliran.auth.accounts import Principal
from giliran.contracts import utcnow
from giliran.store import AUDIT_NOTE, DUPLICATE_KEY, Document, acting, from_instant, instant

GENESIS = "0" * 64
HASHED = (
    "seq", "at", "service", "actor", "role", "site", "action", "target", "before", "after",
    "event", "key",
)  # fmt: skip
MAX_RACES = 50
# Recent event ids a process remembers having recorded: far more than are ever published and
# not yet taken out of their outboxes (a relay removes within a fraction of a second).
RECORDED_REMEMBERED = 4096
# The field that makes an event's record unique (not hashed: `event` is; this only lets the store
# refuse a second record of the same event).
RECORDED_EVENT = "recorded_event"
# Without GILIRAN_AUDIT_KEY (demo and tests only; start-up refuses it otherwise): a key anyone
# can read here, so such a chain shows accidents, not tampering. Its records say so (key "demo").
DEMO_KEY = b"giliran-demo-audit-key-not-secret"
DEMO_KEY_ID = "demo"
# What the trail keeps of an event a counter action caused (no personal data, no priority).
EVENT_FACTS = (
    "ticket_id", "number", "service", "counter", "session_id", "services", "recalls",
    "outcome", "to_service", "new_ticket_id", "paused", "reason",
)  # fmt: skip


def key_id(key: bytes) -> str:
    """A short public name of a key, stored with each record so verify knows which key to use
    (a digest of a long random key says nothing useful about it)."""
    return hashlib.sha256(b"giliran-audit-key-id:" + key).hexdigest()[:12]


@dataclass(frozen=True)
class AuditKeys:
    """The keys of the chain, newest first: new records are keyed with the first, verify
    accepts any (rotation: put a new key in front, keep the old ones for verify)."""

    keys: tuple[bytes, ...]
    demo: bool = False

    @classmethod
    def parse(cls, configured: str | None) -> AuditKeys:
        """GILIRAN_AUDIT_KEY: comma-separated, newest first; unset: the demo key."""
        keys = tuple(k.strip().encode() for k in (configured or "").split(",") if k.strip())
        return cls(keys) if keys else cls((DEMO_KEY,), demo=True)

    @property
    def signing_id(self) -> str:
        return DEMO_KEY_ID if self.demo else key_id(self.keys[0])

    def by_id(self, wanted: str) -> bytes | None:
        """The key named `wanted`; the public demo key only when no key is configured, so a
        chain rebuilt with it does not pass where a real key is set."""
        if wanted == DEMO_KEY_ID:
            return DEMO_KEY if self.demo else None
        return next((k for k in self.keys if hmac.compare_digest(key_id(k), wanted)), None)


def record_hash(record: Document, previous: str, key: bytes) -> str:
    """HMAC-SHA256 with the chain's key over the previous record's hash and this record's
    fields in a canonical form: without the key, nobody can write a record, or rebuild the
    chain from a point on, that verify accepts (ADR 0107)."""
    body = {name: record.get(name) for name in HASHED}
    canonical = previous + json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Broken:
    """The first record whose stored hash or link does not match what its content gives."""

    seq: int
    reason: str


@dataclass(frozen=True)
class Verdict:
    """What `verify` found: records checked, the head hash, the first broken record, and how
    many records each key (by id) signed."""

    checked: int
    head: str
    broken: Broken | None
    by_key: dict[str, int] = field(default_factory=dict)


class AuditLog:
    """Append-only, one chain for all services: the record number is unique (and the `_id`), so
    two writers racing for the same number cannot both win (the loser re-reads the head and
    tries again)."""

    def __init__(
        self, database: AsyncDatabase[Document], service: str, keys: AuditKeys | None = None
    ) -> None:
        self.records = database["audit"]
        self.service = service
        self.keys = keys or AuditKeys.parse(None)
        # The outbox relay appends many events' records at once: one at a time within a
        # process, so only other processes can race for the chain's head (ten counters calling
        # at once exhausted MAX_RACES and held every event back behind the relay's backoff).
        self._appending = asyncio.Lock()
        # The chain's head as this process last wrote or read it: the next record is tried on
        # it without reading the head again (one store command per record instead of two). Safe
        # without more: if another process appended meanwhile, our number is taken, the insert
        # fails on the unique `seq`, and we re-read the head as before.
        self._head: tuple[int, str] | None = None
        # Events this process recorded lately, newest last: a drain that meets an event
        # relay_now already published (its removal is a moment behind) need not even try.
        self._recorded: OrderedDict[str, None] = OrderedDict()

    async def ensure_indexes(self) -> None:
        # Ordered by `seq`, never by `_id`: the embedded store orders `_id` as text (10 < 9).
        await self.records.create_index("seq", unique=True)
        # One record per event, enforced by the store (ADR 0182). Sparse: records of actions
        # without events, and those written before the field existed, do not carry it.
        await self.records.create_index(RECORDED_EVENT, unique=True, sparse=True)
        await self.records.create_index("event")

    async def record(
        self,
        who: Principal,
        action: str,
        site: str,
        target: str,
        before: Any = None,
        after: Any = None,
    ) -> Document:
        """Append a record now (an action that writes no event of its own)."""
        return await self._append(
            {**_note(who, action, site, target, before), "after": _json(after)}, utcnow()
        )

    @contextmanager
    def acting(
        self, who: Principal, action: str, site: str, target: str, before: Any = None
    ) -> Iterator[None]:
        """Run an action whose record travels with its events (ADR 0106): every event written
        inside the block carries this note in its outbox entry, in the same write as the change,
        and the outbox relay appends the record (`append_noted`) before it takes the event out
        of the outbox (ADR 0210). A crash cannot leave the change without its record; a command
        that changed nothing leaves none."""
        with acting({**_note(who, action, site, target, before), "service": self.service}):
            yield

    async def append_noted(self, events: Sequence[Document]) -> None:
        """The records of outbox entries' audit notes, in their order, in one insert (ADR 0210:
        the relay records what it takes out together); none for an event recorded already (by
        a relay that crashed before removing the entry, by another instance's drain, or by this
        process a moment before).

        No read first (ADR 0182): a record carries its event id under a unique index, so the
        store itself refuses a second record of one event, whoever races whom; the ids this
        process recorded lately spare even that refused write."""
        async with self._appending:
            due: dict[str, tuple[Document, Any]] = {}
            for event in events:
                event_id = str(event["id"])
                if event_id in self._recorded or event_id in due:
                    continue
                data = event.get("data") or {}
                facts = {k: data[k] for k in EVENT_FACTS if k in data}
                after = {"event": event.get("type"), **facts}
                fields = {
                    **dict(event[AUDIT_NOTE]),
                    "after": _json(after),
                    "event": event_id,
                    RECORDED_EVENT: event_id,
                }
                due[event_id] = (fields, from_instant(str(event["time"])))
            if due:
                await self._append_many(list(due.values()))

    def _remember(self, event_id: str) -> None:
        self._recorded[event_id] = None
        while len(self._recorded) > RECORDED_REMEMBERED:
            self._recorded.popitem(last=False)

    async def _append(self, fields: Document, at: Any) -> Document:
        async with self._appending:
            [doc] = await self._append_many([(fields, at)])
        assert doc is not None  # only an event's record can be refused as a repeat
        return doc

    async def _append_many(self, items: list[tuple[Document, Any]]) -> list[Document | None]:
        """Append each `(fields, at)` as the chain's next records, in order, in one insert when
        nobody races us; per item the record written, or None if its event is recorded already.

        The insert is ordered: the store writes up to the first refused record and stops, so
        what went in is a prefix, and the chain goes on from its last record."""
        written: list[Document | None] = []
        remaining = items
        races = 0
        while remaining:
            if self._head is None:
                head = await self.records.find_one({}, sort=[("seq", DESCENDING)])
                self._head = (int(head["seq"]), str(head["hash"])) if head else (0, GENESIS)
            docs = self._chained(remaining, *self._head)
            try:
                await self.records.insert_many(docs, ordered=True)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors") or []
                refused = errors[0] if errors else {}
                index = int(refused.get("index", -1))
                if refused.get("code") != DUPLICATE_KEY or not 0 <= index < len(docs):
                    self._head = None  # what went in is unknown: read the head again
                    raise
                self._kept(docs[:index], written)
                remaining = remaining[index:]
                if RECORDED_EVENT in str(refused.get("errmsg", "")):
                    # This event's record exists: nothing written for it, the head unchanged.
                    self._remember(str(docs[index][RECORDED_EVENT]))
                    written.append(None)
                    remaining = remaining[1:]
                    continue
                races += 1  # another process took the number: read the head again
                if races >= MAX_RACES:
                    raise RuntimeError("audit: could not append after repeated races") from exc
                self._head = None
                continue
            except BaseException:
                self._head = None  # written or not, we cannot tell: read the head again
                raise
            self._kept(docs, written)
            remaining = []
        return written

    def _chained(
        self, items: list[tuple[Document, Any]], seq: int, previous: str
    ) -> list[Document]:
        docs: list[Document] = []
        for fields, at in items:
            seq += 1
            doc: Document = {
                "service": self.service,
                **fields,
                "_id": seq,
                "seq": seq,
                "at": instant(at),
                "key": self.keys.signing_id,
                "prev": previous,
            }
            doc.setdefault("event", None)
            doc["hash"] = previous = record_hash(doc, previous, self.keys.keys[0])
            docs.append(doc)
        return docs

    def _kept(self, docs: list[Document], written: list[Document | None]) -> None:
        """`docs` are in the chain: the head moves to the last, their events are remembered."""
        for doc in docs:
            written.append(doc)
            if doc.get(RECORDED_EVENT) is not None:
                self._remember(str(doc[RECORDED_EVENT]))
        if docs:
            self._head = (int(docs[-1]["seq"]), str(docs[-1]["hash"]))

    async def read(
        self, *, site: str | None = None, after_seq: int = 0, limit: int = 200
    ) -> list[Document]:
        query: Document = {"seq": {"$gt": after_seq}}
        if site is not None:
            query["site"] = {"$eq": site}
        cursor = self.records.find(query).sort("seq", 1).limit(limit)
        return [doc async for doc in cursor]

    async def verify(self) -> Verdict:
        """Walk the chain from the start: the first record missing, relinked, edited, or not
        signed with a configured key breaks it."""
        previous = GENESIS
        expected = 1
        checked = 0
        by_key: dict[str, int] = {}

        def broken(seq: int, reason: str) -> Verdict:
            return Verdict(checked, previous, Broken(seq, reason), by_key)

        async for doc in self.records.find({}).sort("seq", 1):
            seq = int(doc["seq"])
            if seq != expected:
                return broken(expected, "record missing")
            if doc.get("prev") != previous:
                return broken(seq, "link to the previous record broken")
            signed_by = str(doc.get("key"))
            key = self.keys.by_id(signed_by)
            if key is None:
                return broken(seq, "not signed with a key GILIRAN_AUDIT_KEY holds")
            if not hmac.compare_digest(record_hash(doc, previous, key), str(doc.get("hash"))):
                return broken(seq, "content does not match its hash")
            by_key[signed_by] = by_key.get(signed_by, 0) + 1
            previous = str(doc["hash"])
            expected += 1
            checked += 1
        return Verdict(checked, previous, None, by_key)


def _note(who: Principal, action: str, site: str, target: str, before: Any) -> Document:
    return {
        "actor": who.name,
        "role": who.role.value,
        "site": site,
        "action": action,
        "target": target,
        # Stored as JSON text: the same bytes come back from any store, so the hash holds.
        "before": _json(before),
    }


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
