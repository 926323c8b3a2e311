"""Reporting's own collections: facts per request and ticket, report cells built from them, and
counter states, all from events."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Collection as Collection_
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any, Protocol

from pymongo import ReturnDocument, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from giliran.store import DUPLICATE_KEY, Collection, Database, Document, count
from services.reporting.cells import (
    CellUpdate,
    Contribution,
    StoredNotification,
    StoredTicket,
    combine,
    notification_contributions,
)
from services.reporting.fold import CounterChange, FactChange


class Facts(Protocol):
    """What the use cases (`handlers.Reporting`, `history.History`) need of reporting's store:
    `FactStore` over MongoDB, and an in-memory fake (tests/fakes/reporting_facts.py) for
    service-layer tests that run in milliseconds without a store or a bus."""

    async def checked_in(self, request_ids: Iterable[str]) -> dict[str, str]: ...
    async def mark_checked_in(self, check_ins: Mapping[str, str]) -> None: ...
    async def save_requests(self, changes: Mapping[str, FactChange]) -> dict[str, set[str]]: ...
    async def save_tickets(
        self, changes: Mapping[str, FactChange], eta_owners: Collection_[str]
    ) -> tuple[dict[str, set[str]], dict[str, StoredTicket]]: ...
    async def save_feedback(self, changes: Mapping[str, FactChange]) -> None: ...
    async def save_notifications(
        self, changes: Mapping[str, FactChange]
    ) -> dict[str, StoredNotification]: ...
    async def save_counters(self, changes: Iterable[CounterChange]) -> None: ...
    async def add_ticket_cells(self, contributions: Sequence[tuple[str, Contribution]]) -> None: ...
    async def add_request_cells(
        self, contributions: Sequence[tuple[str, Contribution]]
    ) -> None: ...
    async def add_notification_cells(
        self, contributions: Sequence[tuple[str, Contribution]]
    ) -> None: ...
    async def ticket_cells_where(
        self, first: date, last: date, site: str | None = None, session_id: str | None = None
    ) -> list[Document]: ...
    async def request_cells_where(
        self, first: date, last: date, site: str | None = None, session_id: str | None = None
    ) -> list[Document]: ...
    async def tickets_on(self, site: str, day: date) -> list[Document]: ...
    async def feedback_between(self, site: str, first: date, last: date) -> list[Document]: ...
    async def completed_between(self, site: str, first: date, last: date) -> int: ...
    async def notification_cells_where(
        self, first: date, last: date, site: str | None = None
    ) -> list[Document]: ...
    async def counters_on(self, site: str, day: date) -> list[Document]: ...


class FactStore:
    """The repository of reporting's documents (every field name lives here or in `fold`).
    Facts are written with $set of values an event carries, so applying an event twice, or
    events out of order, gives the same documents; request and ticket facts also keep the ids of
    the events folded into them (`folded`), which tells a redelivery apart without an inbox.
    Cells are added to with $inc, each contribution exactly once (see `_add_to_cells`)."""

    def __init__(self, database: Database) -> None:
        self.requests = database["request_facts"]
        self.tickets = database["ticket_facts"]
        self.feedback = database["feedback_facts"]
        self.notifications = database["notification_facts"]
        self.ticket_cells = database["ticket_cells"]
        self.request_cells = database["request_cells"]
        self.notification_cells = database["notification_cells"]
        self.counters = database["counter_states"]
        # Which one-off fills of new projections from older facts are done (`fill_cells`).
        self.fills = database["reporting_fills"]
        # Cells this process knows exist, to skip the create-first write (see _add_to_cells).
        # Safe when stale: nothing deletes a cell but a dropped database, and a cell write that
        # then matches nothing re-creates the cell and settles its facts one by one; another
        # instance's cells are unknown here and only cost one idempotent create.
        self._known_cells: set[str] = set()

    def collections(self) -> list[Collection]:
        """Every projection (what a rebuild must reproduce)."""
        return [self.requests, self.tickets, self.feedback, self.notifications,
                self.ticket_cells, self.request_cells, self.counters,
                self.notification_cells]  # fmt: skip

    async def ensure_indexes(self) -> None:
        await self.requests.create_index([("site", 1), ("day", 1)])
        await self.tickets.create_index([("site", 1), ("day", 1), ("service", 1)])
        await self.tickets.create_index("request_id")
        await self.feedback.create_index([("site", 1), ("day", 1), ("service", 1)])
        await self.notifications.create_index([("site", 1), ("day", 1)])
        await self.ticket_cells.create_index([("site", 1), ("day", 1)])
        await self.ticket_cells.create_index([("day", 1)])
        await self.request_cells.create_index([("site", 1), ("day", 1)])
        await self.notification_cells.create_index([("site", 1), ("day", 1)])
        await self.notification_cells.create_index([("day", 1)])
        await self.counters.create_index([("site", 1), ("day", 1)])

    async def checked_in(self, request_ids: Iterable[str]) -> dict[str, str]:
        """When each of these requests' holders checked in, for those who did (one read)."""
        query = {"_id": {"$in": list(request_ids)}, "checked_in_at": {"$exists": True}}
        found = self.requests.find(query, {"checked_in_at": 1})
        return {str(doc["_id"]): str(doc["checked_in_at"]) async for doc in found}

    async def mark_checked_in(self, check_ins: Mapping[str, str]) -> None:
        """Bookings' holders arrived: their tickets join the line (for the live view)."""
        writes = [
            UpdateMany({"request_id": request_id}, {"$set": {"checked_in_at": at}})
            for request_id, at in check_ins.items()
        ]
        if writes:
            await self.tickets.bulk_write(writes, ordered=False)

    async def save_requests(self, changes: Mapping[str, FactChange]) -> dict[str, set[str]]:
        """Each request's facts and the ids of the events folded in (see `_fold_facts`); returns
        the ids each had folded before (a redelivery finds its own there)."""
        before, _ = await _fold_facts(self.requests, changes, ())
        return before

    async def save_tickets(
        self, changes: Mapping[str, FactChange], eta_owners: Collection_[str]
    ) -> tuple[dict[str, set[str]], dict[str, StoredTicket]]:
        """Each ticket's facts (see `_fold_facts`): the ids each had folded before, and, for the
        tickets in `eta_owners`, what the cells need of the document once this batch's facts are
        in it — read after the write, so of two instances writing `issued` and `called` at once
        the second sees both (the others get an empty StoredTicket: they own no ETA)."""
        before, after = await _fold_facts(self.tickets, changes, eta_owners)
        stored = {key: StoredTicket.model_validate(after.get(key) or {}) for key in changes}
        return before, stored

    async def save_feedback(self, changes: Mapping[str, FactChange]) -> None:
        await _set_all(self.feedback, changes)

    async def save_notifications(
        self, changes: Mapping[str, FactChange]
    ) -> dict[str, StoredNotification]:
        """Each delivery's facts ($set, one write for all), one document per site and delivery
        (`fold.notification_key`): another site's event naming a delivery writes its own
        document, so it can neither move that delivery's figures nor keep its site's events
        out (ADR 0229). Returns the documents the batch wrote to, read after the write (one
        read): what the cells count is a delivery's current state, which may hold facts of
        earlier batches (a receipt before its sent); a document the write created holds only
        this batch's facts and is not read again (a delivery's `sent` usually creates its
        document: most batches read nothing)."""
        if not changes:
            return {}
        writes = [
            UpdateOne({"_id": k}, {"$set": c.fields}, upsert=True) for k, c in changes.items()
        ]
        upserted = (await self.notifications.bulk_write(writes, ordered=False)).upserted_ids
        # A document this write created holds this batch's facts and nothing else: no read.
        created = {str(key) for key in (upserted or {}).values()}
        stored = {k: StoredNotification.model_validate(changes[k].fields) for k in created}
        others = [k for k in changes if k not in created]
        if others:
            found = self.notifications.find({"_id": {"$in": others}})
            stored.update(
                {
                    str(doc["_id"]): StoredNotification.model_validate(doc)
                    async for doc in found
                    if doc.get("channel")
                }
            )
        return stored

    async def save_counters(self, changes: Iterable[CounterChange]) -> None:
        """A counter's state after the latest of its open/close events: `order` (a number: the
        embedded server compares strings that begin like a date as dates) only moves forward,
        whatever order the events arrive in. One write each: an upsert conditional on an older
        order; a duplicate key means the document exists (newer, or created meanwhile by another
        instance), and then the plain conditional update settles it."""
        for change in changes:
            query = {"_id": change.key, "order": {"$lt": change.order}}
            update = {"$set": {**change.fields, "order": change.order}}
            try:
                await self.counters.update_one(query, update, upsert=True)
            except DuplicateKeyError:
                await self.counters.update_one(query, update)

    async def add_ticket_cells(self, contributions: Sequence[tuple[str, Contribution]]) -> None:
        await _add_to_cells(self.ticket_cells, contributions, self._known_cells)

    async def add_request_cells(self, contributions: Sequence[tuple[str, Contribution]]) -> None:
        await _add_to_cells(self.request_cells, contributions, self._known_cells)

    async def add_notification_cells(
        self, contributions: Sequence[tuple[str, Contribution]]
    ) -> None:
        await _add_to_cells(self.notification_cells, contributions, self._known_cells)

    async def contribute_ticket(self, ticket_id: str, c: Contribution) -> None:
        await self.add_ticket_cells([(ticket_id, c)])

    async def contribute_request(self, request_id: str, c: Contribution) -> None:
        await self.add_request_cells([(request_id, c)])

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

    async def notification_cells_where(
        self, first: date, last: date, site: str | None = None
    ) -> list[Document]:
        return await _cells_where(self.notification_cells, first, last, site, None)

    async def fill_cells(self, timezone: str) -> int:
        """Notification cells for the facts folded before they existed (ADR 0224): once per
        database, every delivery's fact document counted into its cells the way the consumer
        counts it, a few hundred at a time. Safe beside a running consumer and a second
        instance doing the same (each fact is counted once by its mark), and after a crash
        half-way (the fill is marked done only at the end, so the next start runs it again).
        Returns the deliveries counted (0 when already done)."""
        if await self.fills.find_one({"_id": "notification_cells"}) is not None:
            return 0
        counted = 0
        page: list[tuple[str, Contribution]] = []
        async for doc in self.notifications.find({"channel": {"$exists": True}}):
            stored = StoredNotification.model_validate(doc)
            owner = stored.delivery_id or str(doc["_id"])
            page += [(owner, c) for c in notification_contributions(stored, timezone)]
            counted += 1
            if len(page) >= FILL_PAGE:
                await self.add_notification_cells(page)
                page = []
        await self.add_notification_cells(page)
        await self.fills.update_one(
            {"_id": "notification_cells"}, {"$set": {"deliveries": counted}}, upsert=True
        )
        return counted

    async def counters_on(self, site: str, day: date) -> list[Document]:
        return await self.counters.find({"site": site, "day": day.isoformat()}).to_list()


# Update paths one cell write names at most. The embedded server (nx-27017 0.8.1) stores "$inc"
# paths such as "n.called" as literal dotted keys, which no cell read sees, when ONE update names
# 64 paths or more across "$inc", "$set", "$min" and "$max" together (the filter's fields do not
# matter; "$set" alone is stored right): measured, tests/integration/test_reporting_cells.py. A
# ticket's call adds its mark and often a wait bucket: a busy counter's hour folded in one batch
# (a backlog) passed 64 paths. A larger cell update is written in parts, each conditional on its
# own marks, so a redelivery still counts each fact once (ADR 0224).
PATHS_PER_WRITE = 48
FILL_PAGE = 500  # contributions per cell write while filling cells from older facts
KNOWN_CELLS = 10_000  # cells a process remembers creating (a busy day has a few thousand)


def mark(owner_id: str, name: str) -> str:
    """A cell's record that one owner's fact is in it: a 48-bit hash, not the id, to keep cells
    small (two of a cell's few hundred facts colliding: about 1 in 10^10)."""
    return "seen." + hashlib.blake2b(f"{owner_id}~{name}".encode(), digest_size=6).hexdigest()


async def _add_to_cells(
    cells: Collection, contributions: Sequence[tuple[str, Contribution]], known: set[str]
) -> None:
    """Add contributions (owner id, contribution) to their cells, each exactly once, with one
    conditional write per cell: the cell's figures are increased and the marks of the facts
    counted are set only if none of those marks is there yet, so a redelivered event, a crash
    at any point, another event of the same ticket or a second instance can never add a fact
    twice (docs/decisions/0031-report-cells-exactly-once.md, 0170-reporting-folds-a-batch.md).
    A write that matched nothing (some of its facts were counted before, or its cell is gone)
    is settled fact by fact."""
    updates = [part for u in combine(contributions, mark) for part in u.split(PATHS_PER_WRITE)]
    if not updates:
        return
    new = [u for u in updates if u.cell.id not in known]
    if new:
        # The embedded server's upsert would store "$inc" paths such as "n.issued" as literal
        # dotted keys in a new document: create the cells first, then update them.
        await _ensure(cells, {u.cell.id: u.cell.fields() for u in new})
        if len(known) + len(new) > KNOWN_CELLS:  # bounded: a year of cells would not fit
            known.clear()
        known.update(u.cell.id for u in new)
    if len(updates) == 1:
        [only] = updates
        matched = (
            await cells.update_one(_unseen(only.cell.id, only.marks), only.update())
        ).matched_count
    else:
        writes = [UpdateOne(_unseen(u.cell.id, u.marks), u.update()) for u in updates]
        matched = (await cells.bulk_write(writes, ordered=False)).matched_count
    if matched < len(updates):
        await _settle_one_by_one(cells, updates, known)


def _unseen(cell_id: str, marks: Sequence[str]) -> Document:
    return {"_id": cell_id, **{m: {"$exists": False} for m in marks}}


async def _settle_one_by_one(
    cells: Collection, updates: Sequence[CellUpdate], known: set[str]
) -> None:
    """After a cell write matched less than it should: a cell that has every mark of its update
    is done (by this write or an earlier one: the marks are set together with the figures); one
    that lacks some gets each missing fact on its own, conditionally; a missing cell (a dropped
    database) is created again first."""
    ids = [u.cell.id for u in updates]
    found = {str(doc["_id"]): doc.get("seen") or {} async for doc in cells.find(
        {"_id": {"$in": ids}}, {"seen": 1})}  # fmt: skip
    for u in updates:
        seen = found.get(u.cell.id)
        if seen is None:
            known.discard(u.cell.id)
            await _ensure(cells, {u.cell.id: u.cell.fields()})
            known.add(u.cell.id)
            seen = {}
        for name, c in zip(u.marks, u.contributions, strict=True):
            if name.removeprefix("seen.") not in seen:
                one = CellUpdate(u.cell, [name], [c])
                await cells.update_one(_unseen(u.cell.id, [name]), one.update())


async def _ensure(collection: Collection, cells: Mapping[str, Document]) -> None:
    """Create these cells if they do not exist (one write); two writers creating one at once
    is fine: it exists, which is all we need."""
    writes = [
        UpdateOne({"_id": key}, {"$setOnInsert": {**fields, "seen": {}}}, upsert=True)
        for key, fields in cells.items()
    ]
    try:
        await collection.bulk_write(writes, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise


# Up to this many documents a batch writes each with its own findAndModify (the document as it
# was comes back with the write); above it, one read before, one bulk write and one read after
# cost fewer commands (the later batches of a busy minute touch dozens of tickets).
ONE_BY_ONE = 3


async def _fold_facts(
    collection: Collection, changes: Mapping[str, FactChange], read_after: Collection_[str]
) -> tuple[dict[str, set[str]], dict[str, Document]]:
    """Write each document's facts and the ids of the events folded into it (`folded.<id>`):
    returns the ids each had folded before, and the documents of `read_after` as they are once
    this batch's facts are in (at least: another instance may have added more)."""
    keys = list(changes)
    if len(keys) <= ONE_BY_ONE:

        async def one(key: str) -> Document | None:
            before: Document | None = await collection.find_one_and_update(
                {"_id": key},
                {"$set": _set(changes[key])},
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
            return before

        found = dict(zip(keys, await asyncio.gather(*(one(k) for k in keys)), strict=True))
        merged = {k: {**(found[k] or {}), **changes[k].fields} for k in keys if k in read_after}
        return {k: _folded(doc, changes[k]) for k, doc in found.items()}, merged
    # A redelivery racing another instance between this read and the write is counted
    # "handled" rather than "duplicate"; the write itself stays idempotent.
    before = {
        str(doc["_id"]): _folded(doc, changes[str(doc["_id"])])
        async for doc in collection.find({"_id": {"$in": keys}}, {"folded": 1})
    }
    writes = [UpdateOne({"_id": k}, {"$set": _set(changes[k])}, upsert=True) for k in keys]
    await collection.bulk_write(writes, ordered=False)
    wanted = [k for k in keys if k in read_after]
    after: dict[str, Document] = {}
    if wanted:
        after = {str(d["_id"]): d async for d in collection.find({"_id": {"$in": wanted}})}
    return {k: before.get(k, set()) for k in keys}, after


def _set(change: FactChange) -> Document:
    return {**change.fields, **{f"folded.{_folded_key(e)}": 1 for e in change.events}}


def _folded_key(event_id: str) -> str:
    """An event id as a field name: hashed, because an id comes from a message body and may hold
    `.` or `$` (an invalid update path that would fail the whole batch) or be long."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


def _folded(doc: Document | None, change: FactChange) -> set[str]:
    """The events of `change` that `doc` had folded already."""
    keys = (doc or {}).get("folded") or {}
    return {e for e in change.events if _folded_key(e) in keys}


async def _set_all(collection: Collection, changes: Mapping[str, FactChange]) -> None:
    """Facts that only ever $set (a redelivery writes the same values): one write for all."""
    if len(changes) == 1:
        [(key, change)] = changes.items()
        await collection.update_one({"_id": key}, {"$set": change.fields}, upsert=True)
    elif changes:
        writes = [
            UpdateOne({"_id": k}, {"$set": c.fields}, upsert=True) for k, c in changes.items()
        ]
        await collection.bulk_write(writes, ordered=False)


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
